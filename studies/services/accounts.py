"""Accounts for the researcher side (the demo's admin login)."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model


def demo_admin_ensure(*, username: str, password_file: Path) -> tuple[str, str]:
    """Create the demo superuser once and keep its password in ``password_file``.

    A second call reuses both, so the printed login stays valid across demo runs.
    Returns ``(username, password)``.
    """
    user_model = get_user_model()
    if password_file.is_file():
        password = password_file.read_text().strip()
    else:
        password = secrets.token_urlsafe(12)
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
    user, _ = user_model.objects.get_or_create(username=username, defaults={"email": f"{username}@localhost"})
    if not user.check_password(password) or not user.is_superuser:
        user.is_staff = True
        user.is_superuser = True
        user.set_password(password)
        user.save()
    return username, password
