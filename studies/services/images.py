"""Validation of uploaded image bytes: size, format, pixel cap, integrity.

The rule (after Wagtail's image field and Django's security notes): an upload is accepted only
when its byte size is under ``XAISTUDY_MAX_IMAGE_BYTES``, Pillow recognises it as one of the
allowed formats, that format matches the file name's extension, its pixel count (read from the
header, before decoding) is under ``XAISTUDY_MAX_IMAGE_PIXELS``, and it decodes completely
(a truncated file fails here, not later in a GPU worker).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.conf import settings
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

ALLOWED_FORMATS: dict[str, tuple[str, ...]] = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "WEBP": (".webp",),
}


class ImageRejected(ValueError):
    """An image that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    """What validation learned about an accepted image."""

    width: int
    height: int
    format: str
    sha256: str

    @property
    def extension(self) -> str:
        return ALLOWED_FORMATS[self.format][0]


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def image_validate(*, data: bytes, name: str) -> ImageInfo:
    """Check ``data`` (the content of file ``name``) and describe it, or raise ``ImageRejected``."""
    max_bytes = settings.XAISTUDY_MAX_IMAGE_BYTES
    if len(data) > max_bytes:
        raise ImageRejected(f"file is {len(data):,} bytes, over the limit of {max_bytes:,} bytes")
    if not data:
        raise ImageRejected("file is empty")
    extension = PurePosixPath(name).suffix.lower()
    allowed_extensions = {ext for exts in ALLOWED_FORMATS.values() for ext in exts}
    if extension not in allowed_extensions:
        raise ImageRejected(f"extension {extension or '(none)'!r} is not one of {sorted(allowed_extensions)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as probe:
                image_format = probe.format or ""
                width, height = probe.size
    except UnidentifiedImageError as exc:
        raise ImageRejected(f"content is not a PNG, JPEG or WebP image (name says {extension})") from exc
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise ImageRejected(f"image is a decompression bomb: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"image is truncated or corrupt: {exc}") from exc
    if extension not in ALLOWED_FORMATS.get(image_format, ()):
        raise ImageRejected(f"content is {image_format} but the name says {extension}")
    max_pixels = settings.XAISTUDY_MAX_IMAGE_PIXELS
    if width * height > max_pixels:
        raise ImageRejected(
            f"image is {width}x{height} = {width * height:,} pixels, over the cap of {max_pixels:,}"
            " (a possible decompression bomb)"
        )
    try:
        with PILImage.open(io.BytesIO(data), formats=[image_format]) as full:
            full.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"image is truncated or corrupt: {exc}") from exc
    return ImageInfo(width=width, height=height, format=image_format, sha256=sha256_bytes(data))
