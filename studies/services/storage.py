"""Content-addressed files in Django's storage, and their verification."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.core.files.storage import default_storage

from studies.models import Image


def storage_sha256(name: str) -> str:
    """Hex SHA-256 of a stored file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with default_storage.open(name, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    missing: list[str]
    mismatched: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched


def image_set_verify(*, image_set_id: int) -> VerifyReport:
    """Check that every image file of a set exists and still has its recorded SHA-256."""
    missing: list[str] = []
    mismatched: list[str] = []
    images = Image.objects.filter(image_set_id=image_set_id).only("file", "sha256", "original_name")
    checked = 0
    for image in images.iterator():
        checked += 1
        if not default_storage.exists(image.file.name):
            missing.append(image.original_name)
        elif storage_sha256(image.file.name) != image.sha256:
            mismatched.append(image.original_name)
    return VerifyReport(checked=checked, missing=missing, mismatched=mismatched)
