"""Signed, single-use invitations: a per-entry proof for link studies (issue #11).

A link study is anonymous, so a script can enter it as often as it likes. With
``study.require_invitation`` an entry must carry ``?inv=<invitation>``, which only the server can
make: ``invitation = "<nonce>:" + HMAC(SECRET_KEY, salt "xaistudy.invitation:<slug>", nonce)``
(``django.core.signing.Signer``). The researcher hands out one link per person
(``manage.py invitations <study> --count N``); each nonce makes at most one participant
(``UniqueConstraint(study, invitation)``), and the browser that used it resumes with its cookie.
"""

from __future__ import annotations

import secrets

from django.core import signing

from studies.models import Study

SALT = "xaistudy.invitation"


def _signer(study: Study) -> signing.Signer:
    return signing.Signer(salt=f"{SALT}:{study.slug}")


def invitation_make(*, study: Study) -> str:
    """A new invitation for ``study`` (a random 96-bit nonce and its signature)."""
    return _signer(study).sign(secrets.token_hex(12))


def invitations_make(*, study: Study, count: int) -> list[str]:
    """``count`` new invitations (nothing is stored: a signature is its own proof)."""
    if not 1 <= count <= 100_000:
        raise ValueError("count must be 1..100000")
    return [invitation_make(study=study) for _ in range(count)]


def invitation_check(*, study: Study, invitation: str) -> str | None:
    """The nonce of a valid invitation for this study, or ``None`` (forged, another study's, malformed)."""
    if not invitation or len(invitation) > 200:
        return None
    try:
        nonce = _signer(study).unsign(invitation.strip())
    except signing.BadSignature:
        return None
    return nonce if nonce.isalnum() and len(nonce) <= 64 else None
