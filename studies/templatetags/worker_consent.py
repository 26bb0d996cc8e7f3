"""``{{ study.consent_text|consent_effective }}``: the study's consent text, or the default template."""

from __future__ import annotations

from django import template

from studies.lib.consent import consent_text_effective

register = template.Library()


@register.filter
def consent_effective(consent_text: str) -> str:
    return consent_text_effective(consent_text)
