"""The consent text: a default template with fields the researcher must fill (issue #13).

A study whose ``consent_text`` is empty shows :data:`DEFAULT_CONSENT_TEMPLATE`. Its fields are
placeholders in square brackets, upper case: ``[DURATION]``, ``[PAY]``, ``[CONTACT]``,
``[DATA USE]``. The researcher copies the template into the study's consent text and replaces
every placeholder; publishing is refused while :func:`consent_placeholders` finds one in the text
workers would read (:func:`consent_text_effective`).

Pure functions, no database: the admin, ``study_publish`` and the worker pages share them.
"""

from __future__ import annotations

import re

#: A placeholder: ``[`` + upper-case words (letters, digits, spaces, ``_``, ``-``) + ``]``,
#: at least two characters, starting with a letter. ``[DATA USE]`` is one; ``[1]``, ``[sic]`` and
#: ``[A]`` are not (an upper-case acronym alone in brackets, such as ``[IRB]``, would count).
PLACEHOLDER_RE = re.compile(r"\[([A-Z][A-Z0-9_\- ]*[A-Z0-9])\]")

#: The fields of the default template, in the order they appear.
DEFAULT_FIELDS = ("DURATION", "PAY", "CONTACT", "DATA USE")

DEFAULT_CONSENT_TEMPLATE = """\
This is a research study about how people understand explanations of image-recognition software. \
You will look at pictures and answer short questions.

Duration: about [DURATION].
Payment: [PAY].

Your answers are stored with an anonymous code, never with your name. [DATA USE]

Taking part is voluntary; you may stop at any time by closing this page.

Questions about this study: [CONTACT]."""


def consent_placeholders(text: str) -> list[str]:
    """The unfilled placeholders in ``text``, each once, in order of first appearance.

    >>> consent_placeholders("About [DURATION], paid [PAY]; [DURATION] again, [1] is a citation")
    ['DURATION', 'PAY']
    """
    found: list[str] = []
    for match in PLACEHOLDER_RE.finditer(text or ""):
        name = match.group(1)
        if name not in found:
            found.append(name)
    return found


def consent_fill(text: str, values: dict[str, str]) -> str:
    """``text`` with each ``[NAME]`` whose NAME is a key of ``values`` replaced; others are left.

    For seeding a study (demo, tests); the researcher normally edits the text in the admin.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return values.get(name, match.group(0))

    return PLACEHOLDER_RE.sub(replace, text)


def consent_text_effective(consent_text: str) -> str:
    """The consent text workers read: the study's own, or the default template when it is empty."""
    return consent_text if (consent_text or "").strip() else DEFAULT_CONSENT_TEMPLATE


def consent_errors(consent_text: str) -> list[str]:
    """Publish-time messages (empty when the text is ready): one naming the unfilled placeholders."""
    missing = consent_placeholders(consent_text_effective(consent_text))
    if not missing:
        return []
    names = ", ".join(f"[{name}]" for name in missing)
    where = "the default consent template" if not (consent_text or "").strip() else "the consent text"
    return [
        f"fill in {names} in {where} (copy the template into the study's consent text and replace each "
        f"bracketed field) before publishing"
    ]
