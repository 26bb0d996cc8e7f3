"""Finding a study from what a person typed (command-line arguments)."""

from __future__ import annotations

from studies.models import Study


def study_lookup(*, key: str) -> Study:
    """Find a study by primary key, slug or exact name, in that order.

    Raises:
        Study.DoesNotExist: nothing matches; ``Study.MultipleObjectsReturned`` if a name is ambiguous.
    """
    if key.isdigit():
        found = Study.objects.filter(pk=int(key)).first()
        if found:
            return found
    found = Study.objects.filter(slug=key).first()
    if found:
        return found
    return Study.objects.get(name=key)
