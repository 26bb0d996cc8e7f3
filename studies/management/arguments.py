"""Argument helpers shared by the management commands."""

from __future__ import annotations

from django.core.management.base import CommandError

from studies.models import Study
from studies.selectors.studies import study_lookup


def study_argument(text: str) -> Study:
    """The study named by a command-line argument (id, slug or exact name), or a ``CommandError``."""
    try:
        return study_lookup(key=text)
    except Study.DoesNotExist as exc:
        raise CommandError(f"no study matches {text!r} (give its id, slug or exact name)") from exc
    except Study.MultipleObjectsReturned as exc:
        raise CommandError(f"more than one study is named {text!r}: give its id or slug") from exc
