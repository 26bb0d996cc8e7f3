"""How a stimulus method's map is drawn, and the colour key the worker reads (pure, no torch).

Shared by the pipeline (``studies.pipeline.stimuli`` draws and keys the stimuli with these) and the
worker reads (``studies.selectors.participation``: the colour key under every trial, the worked
example's words), so neither imports the other for them. The gated prefixes come from
:mod:`studies.lib.scenes`, the methods' outputs from the engine's registry (torch-free).
"""

from __future__ import annotations

from typing import Any

from explainers.registry import METHODS
from studies.lib.scenes import GATED_BACKGROUND_PREFIX, GATED_PREFIX

__all__ = ["COLOUR_KEYS", "GRADIENT_METHODS", "NON_MAP_METHODS", "base_method", "colour_key_rows", "is_map",
           "rendering_of"]

#: Methods whose output is a signed ``[C, H, W]`` input-space attribution, rendered as a gradient
#: image (grey = 0); every other method gives a spatial map, rendered as a colour overlay. Read
#: from the engine's registry (``output == "channels"``), which imports without torch.
GRADIENT_METHODS = frozenset(name for name, spec in METHODS.items() if spec.output == "channels")

#: Methods whose stimulus is no attribution map (registry family ``example``, issue #16): the picture
#: alone (output ``picture``) or example images side by side (output ``examples``). They are drawn
#: as what they are, have no colour key, and give no catch or practice (gated) maps.
NON_MAP_METHODS = frozenset(name for name, spec in METHODS.items() if spec.output in ("picture", "examples"))

#: The colour key of each rendering: what the worker is told, and the legend image (a static
#: file drawn by ``explainers.render.colour_key_png``; the texts mirror
#: ``explainers.render.colour_key``; both kept equal by ``tests/studies/pipeline/test_stimulus_look.py``).
COLOUR_KEYS: dict[str, dict[str, str]] = {
    "overlay": {
        "kind": "overlay",
        "low": "blue: not used",
        "high": "red: used most",
        "description": "Colours over the picture: blue where the computer did not look, through green and yellow, "
        "to red where it looked most.",
        "image": "studies/keys/overlay.png",
    },
    "gradient": {
        "kind": "gradient",
        "low": "grey: not used",
        "high": "vivid: used most",
        "description": "A picture of the evidence itself: plain grey where a pixel did not matter; the more a pixel "
        "mattered, the more it stands out from the grey, in colour, light or dark.",
        "image": "studies/keys/gradient.png",
    },
}


def base_method(method: str) -> str:
    """The engine method of a stimulus method (``gated:gradcam`` -> ``gradcam``)."""
    for prefix in (GATED_PREFIX, GATED_BACKGROUND_PREFIX):
        if method.startswith(prefix):
            return method[len(prefix):]
    return method


def is_map(method: str) -> bool:
    """Whether a (stimulus) method's stimulus is an attribution map (not :data:`NON_MAP_METHODS`)."""
    return base_method(method) not in NON_MAP_METHODS


def rendering_of(method: str) -> str:
    """How a (stimulus) method's stimulus is drawn: ``"gradient"`` or ``"overlay"`` for maps;
    ``"picture"`` or ``"examples"`` (the registry's ``output``) for :data:`NON_MAP_METHODS`."""
    name = base_method(method)
    if name in NON_MAP_METHODS:
        return METHODS[name].output
    return "gradient" if name in GRADIENT_METHODS else "overlay"


def colour_key_rows(methods: Any) -> list[dict[str, str]]:
    """The colour-key rows for a study's methods: one per rendering they use, in a fixed order.

    The same rows go with every trial of the study (whatever the trial's own method), so the key
    itself says nothing about the trial. Stimuli that are no map (``picture``, ``examples``) have no
    colour key: a study of those alone gets no rows.
    """
    used = {rendering_of(str(m)) for m in methods or []}
    return [dict(COLOUR_KEYS[kind]) for kind in ("overlay", "gradient") if kind in used]
