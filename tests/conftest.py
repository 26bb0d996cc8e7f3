"""Shared fixtures: isolated media storage, small generated images, a staff user."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image as PILImage


@pytest.fixture(autouse=True)
def _isolated_media(settings: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Every test writes its files under its own temporary MEDIA_ROOT."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def make_image_bytes() -> Callable[..., bytes]:
    """Encode a solid-colour RGB image; ``fmt`` is a Pillow format name."""

    def make(width: int = 32, height: int = 24, color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG") -> bytes:
        buffer = io.BytesIO()
        PILImage.new("RGB", (width, height), color).save(buffer, format=fmt)
        return buffer.getvalue()

    return make


@pytest.fixture
def staff_client(client, django_user_model):  # type: ignore[no-untyped-def]
    """A Django test client logged in as a superuser."""
    user = django_user_model.objects.create_superuser("admin", "admin@example.org", "pw-for-tests-only")
    client.force_login(user)
    return client
