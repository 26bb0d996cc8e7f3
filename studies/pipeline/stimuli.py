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

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import IntegrityError, transaction

from studies.designs.options import DEFAULT_OVERLAY_BASE, OVERLAY_BASES
from studies.lib.rendering import COLOUR_KEYS as COLOUR_KEYS
from studies.lib.rendering import GRADIENT_METHODS as GRADIENT_METHODS
from studies.lib.rendering import base_method as base_method
from studies.lib.rendering import colour_key_rows as colour_key_rows
from studies.lib.rendering import rendering_of
from studies.lib.scenes import GATED_BACKGROUND_PREFIX as GATED_BACKGROUND_PREFIX
from studies.lib.scenes import GATED_PREFIX as GATED_PREFIX
from studies.lib.scenes import box_for
from studies.models import ClassifierModel, Stimulus

# Bump when the renderer or the stimulus layout changes: old stimuli are then not reused.
# 2: CAM overlays on the picture's luminance (grey) by default; catch/practice maps are real maps
#    kept inside one object's box (``gated:``) instead of plain boxes.
RENDER_VERSION = 2

#: Gap between the tiles of an ``examples`` stimulus: ``max(2, display_size // 32)`` pixels (a rule, recorded
#: in its render settings as this text).
EXAMPLE_GAP = "max(2, display_size // 32)"


def example_gap(display_size: int) -> int:
    """Pixels between the tiles of an ``examples`` stimulus (:data:`EXAMPLE_GAP`)."""
    return max(2, display_size // 32)
TEMP_PREFIX = ".tmp-"

# The stimulus-method prefixes of the obvious (catch, practice) renderings, ``GATED_PREFIX`` and
# ``GATED_BACKGROUND_PREFIX``, are defined in :mod:`studies.lib.scenes` (the designs name them);
# ``OVERLAY_BASES`` / ``DEFAULT_OVERLAY_BASE`` in :mod:`studies.designs.options` (a study option).

# ``GRADIENT_METHODS``, ``COLOUR_KEYS``, ``base_method``, ``rendering_of`` and ``colour_key_rows`` are
# defined in :mod:`studies.lib.rendering` (the worker's reads use them too) and read from here as well.


def render_settings(method: str, *, overlay_base: str = DEFAULT_OVERLAY_BASE) -> dict[str, Any]:
    """How a method's map is drawn (part of the stimulus key): colour map, blend and base, or gradient style.

    Stimuli that are no map (``studies.lib.rendering.NON_MAP_METHODS``): ``picture`` is the picture
    itself, RGB, resized (bilinear, no crop) to the display size exactly as the maps' pictures are,
    encoded by the same PNG writer (``explainers.render.png_bytes``); ``examples`` is ``k`` such
    tiles left to right, :data:`EXAMPLE_GAP` apart on white. Both are always in **colour**:
    ``overlay_base`` only says what a colour map is blended with, and there is none here (so it is
    not part of their key).
    """
    if overlay_base not in OVERLAY_BASES:
        raise ValueError(f"overlay_base must be one of {OVERLAY_BASES}, got {overlay_base!r}")
    rendering = rendering_of(method)
    if rendering == "picture":
        return {"kind": "picture", "resize": "bilinear", "colour": "rgb"}
    if rendering == "examples":
        return {"kind": "examples", "resize": "bilinear", "colour": "rgb", "layout": "row", "gap": EXAMPLE_GAP,
                "background": "white"}
    if rendering == "gradient":
        return {"kind": "gradient", "style": "color", "percentile": 99.5}
    return {"kind": "overlay", "colormap": "jet", "alpha": 0.5, "base": overlay_base}


# jet (matplotlib's segment data, as ``explainers.render`` draws it), for reading overlays back
_JET_SEGMENTS = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


@functools.cache
def _jet_inverse() -> Any:
    """``lut[R - G + 128, G - B + 128]`` -> the jet value in [0, 1] whose half-weight overlay has
    those channel differences (a grey base adds the same to every channel, so they are the map's)."""
    import numpy as np

    positions = np.linspace(0.0, 1.0, 256)
    jet = np.stack([np.interp(positions, *zip(*_JET_SEGMENTS[c], strict=True)) for c in ("red", "green", "blue")], axis=1)
    half = 0.5 * 255.0 * jet
    d1, d2 = half[:, 0] - half[:, 1], half[:, 1] - half[:, 2]
    grid = np.arange(-128, 129, dtype=np.float64)
    lut = np.empty((257, 257), dtype=np.float64)
    for row, value in enumerate(grid):
        distance = np.abs(value - d1)[None, :] + np.abs(grid[:, None] - d2[None, :])
        lut[row] = positions[distance.argmin(axis=1)]
    return lut


def stimulus_salience(data: bytes, rendering: str) -> Any:
    """What a stimulus shows as evidence per pixel, read back from its PNG (``H x W`` in [0, 1]).

    ``overlay``: the colour map's value, from the jet entry whose channel differences the pixel
    has (exact on a grey base, approximate on a colour one). ``gradient``: the mean absolute
    deviation of the channels from mid-grey, ``|v - 128| / 128``.
    """
    import io

    import numpy as np
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as picture:
        rgb = np.asarray(picture.convert("RGB")).astype(np.int64)
    if rendering == "gradient":
        return np.abs(rgb - 128).mean(axis=2) / 128.0
    rg = np.clip(rgb[..., 0] - rgb[..., 1], -128, 128) + 128
    gb = np.clip(rgb[..., 1] - rgb[..., 2], -128, 128) + 128
    return _jet_inverse()[rg, gb]


def box_mask(image: Any, category: str, size: int) -> Any:
    """``size x size`` bool mask of a category's box on the square stimulus (the image is resized, not cropped)."""
    import numpy as np

    mask = np.zeros((size, size), dtype=bool)
    box = box_for(image, category)
    if box is None or not image.width or not image.height:
        return mask
    sx, sy = size / image.width, size / image.height
    x0, y0 = int(np.floor(box["x0"] * sx)), int(np.floor(box["y0"] * sy))
    x1, y1 = int(np.ceil(box["x1"] * sx)), int(np.ceil(box["y1"] * sy))
    mask[max(0, y0):min(size, y1), max(0, x0):min(size, x1)] = True
    return mask


def settings_hash(settings: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of ``settings``."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def stimulus_settings(*, model: ClassifierModel, method: str, options: Mapping[str, Any] | None = None,
                      display_size: int, exact: bool = False,
                      overlay_base: str = DEFAULT_OVERLAY_BASE) -> dict[str, Any]:
    """Everything that shapes a model's stimulus for ``method`` (hashed into the key).

    ``method`` is a stimulus method: an engine method, or one with a :data:`GATED_PREFIX` /
    :data:`GATED_BACKGROUND_PREFIX` (catch and practice maps, computed and drawn like the others).
    ``render`` records how the map is drawn (:func:`render_settings`). ``exact`` (maps from the
    model as given, not the fast copy) is recorded only when set.
    """
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
        "render": render_settings(method, overlay_base=overlay_base),
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


def stimuli_find(keys: Iterable[StimulusKey]) -> dict[StimulusKey, Stimulus]:
    """The stored stimuli of ``keys``, by key (keys without a row are absent), in one query.

    The query asks for every combination of the keys' images, models, methods and settings (a
    chunk's keys share their model and mostly their settings, so little more than the keys
    themselves), and the rows are matched to the keys exactly.
    """
    wanted = set(keys)
    if not wanted:
        return {}
    rows = Stimulus.objects.filter(
        image_id__in={k.image_id for k in wanted}, model_id__in={k.model_id for k in wanted},
        method__in={k.method for k in wanted}, target_class__in={k.target_class for k in wanted},
        settings_hash__in={k.settings_hash for k in wanted},
    )
    found: dict[StimulusKey, Stimulus] = {}
    for row in rows:
        key = StimulusKey(row.image_id, row.model_id, row.method, row.target_class, row.settings_hash)
        if key in wanted:
            found[key] = row
    return found


def _key_filter(key: StimulusKey) -> dict[str, Any]:
    return {
        "image_id": key.image_id,
        "model_id": key.model_id,
        "method": key.method,
        "target_class": key.target_class,
        "settings_hash": key.settings_hash,
    }
