"""Study designs as plug-ins (one module per design; :mod:`studies.designs.registry`)."""

from studies.designs.registry import UnknownDesign, design_for, designs, kind_choices, register, unregister

__all__ = ["UnknownDesign", "design_for", "designs", "kind_choices", "register", "unregister"]
