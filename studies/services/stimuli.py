"""Stimulus files and rows: content-addressed, written atomically, created idempotently.

A stimulus is identified twice:

* by its **key** ``(image, model, method, target_class, settings_hash)`` — the unique
  constraint on :class:`~studies.models.Stimulus`; ``settings_hash`` is the SHA-256 of the
  canonical JSON of everything that shapes the picture (method options, CAM layer, weights,
  preprocessing, renderer version), so changing any of them makes a new stimulus instead of
  silently reusing an old one;
* by its **content**: the file is stored as ``stimuli/<ab>/<sha256>.png`` where ``sha256`` is
  the digest of the PNG bytes.

Writes follow one order, which makes them crash-safe: the bytes go to a temporary name, are
moved into place atomically (``os.replace`` on a file system; on other storage backends the
object is only saved under its final name once the bytes are complete in memory), and only
then is the row created with ``get_or_create`` on the key. A worker killed at any point leaves
either nothing, or a complete file without a row (which the rerun writes again, byte-identical,
under the same name), never a row without its file or a truncated file under a final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import IntegrityError, transaction

from studies.models import ClassifierModel, Stimulus

# Bump when the renderer or the stimulus layout changes: old stimuli are then not reused.
RENDER_VERSION = 1
TEMP_PREFIX = ".tmp-"


def settings_hash(settings: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of ``settings``."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def stimulus_settings(*, model: ClassifierModel, method: str, options: Mapping[str, Any] | None = None,
                      display_size: int, exact: bool = False) -> dict[str, Any]:
    """Everything that shapes a model's stimulus for ``method`` (hashed into the key).

    Catch/practice renderings (methods ``catch_*``) do not depend on the network, only on the
    image, the box and the display size. ``exact`` (maps from the model as given, not the fast
    copy) is recorded only when set, so the keys of existing stimuli stay as they were.
    """
    if method.startswith("catch_"):
        return {"method": method, "display_size": display_size, "render_version": RENDER_VERSION}
    return {
        "method": method,
        "options": dict(options or {}),
        "arch": model.arch,
        "weights_sha256": model.weights_sha256 or "shipped",
        "target_layer": model.target_layer or "default",
        "input_size": model.input_size,
        "mean": list(model.mean),
        "std": list(model.std),
        "display_size": display_size,
        "render_version": RENDER_VERSION,
    } | ({"exact": True} if exact else {})


@dataclass(frozen=True)
class StimulusKey:
    """The unique key of a stimulus row."""

    image_id: int
    model_id: int
    method: str
    target_class: int
    settings_hash: str


def stimulus_file_name(sha256: str) -> str:
    """The content-addressed storage name of a PNG with this digest."""
    return f"stimuli/{sha256[:2]}/{sha256}.png"


def stimulus_file_write(*, data: bytes) -> tuple[str, str]:
    """Store PNG bytes under their content address, atomically; return ``(name, sha256)``.

    FileSystemStorage: write ``.tmp-*`` in the destination folder, fsync, ``os.replace``.
    Other backends: ``save`` under the final name (only after the bytes are complete), unless
    an object of that name exists already (same name = same bytes).
    """
    sha256 = hashlib.sha256(data).hexdigest()
    name = stimulus_file_name(sha256)
    storage = default_storage
    if isinstance(storage, FileSystemStorage):
        final = Path(storage.path(name))
        if final.is_file() and final.stat().st_size == len(data):
            return name, sha256
        final.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=final.parent, prefix=TEMP_PREFIX, suffix=".png")
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            os.chmod(temp_name, 0o644)
            os.replace(temp_name, final)
        finally:
            if os.path.exists(temp_name):
                os.unlink(temp_name)
        return name, sha256
    if not storage.exists(name):
        saved = storage.save(name, ContentFile(data))
        if saved != name:  # a concurrent writer won the race; keep one object
            storage.delete(saved)
    return name, sha256


def stimulus_store(*, key: StimulusKey, settings: Mapping[str, Any], data: bytes) -> tuple[Stimulus, bool]:
    """Write the file, then get-or-create the row on its unique key; ``(row, created)``.

    An existing row wins (its file stays as it is): preparing twice adds nothing.
    """
    existing = Stimulus.objects.filter(**_key_filter(key)).first()
    if existing is not None:
        return existing, False
    name, sha256 = stimulus_file_write(data=data)
    try:
        with transaction.atomic():
            return Stimulus.objects.get_or_create(
                **_key_filter(key), defaults={"settings": dict(settings), "file": name, "sha256": sha256}
            )
    except IntegrityError:  # a concurrent chunk created it between our check and insert
        return Stimulus.objects.get(**_key_filter(key)), False


def stimulus_find(key: StimulusKey) -> Stimulus | None:
    """The stored stimulus for ``key``, or None."""
    return Stimulus.objects.filter(**_key_filter(key)).first()


def _key_filter(key: StimulusKey) -> dict[str, Any]:
    return {
        "image_id": key.image_id,
        "model_id": key.model_id,
        "method": key.method,
        "target_class": key.target_class,
        "settings_hash": key.settings_hash,
    }
