"""The only module of ``studies`` that touches torch and ``explainers``.

It is imported lazily by the preparation stages (inside Celery tasks and management commands),
never by views, admin or URLs, so the web process stays free of torch. Everything here takes
database rows and returns plain Python values (top-k lists, PNG bytes); bad input raises
:class:`~studies.lib.scenes.PrepareInputError` with a message that names the model, the
layer, the method or the image.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from django.conf import settings
from django.core.files.storage import default_storage
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from explainers import METHODS, explain, resolve_layer
from explainers.engine import method_function
from explainers.methods.examples import penultimate_features, penultimate_layer
from explainers.render import compose_side_by_side, png_bytes, render_cam_overlay, render_gradient
from explainers.zoo import LoadedModel, ModelLoadError, load_model
from studies.designs.options import DEFAULT_OVERLAY_BASE
from studies.lib.rendering import base_method, is_map, rendering_of
from studies.lib.scenes import GATED_BACKGROUND_PREFIX, GATED_PREFIX, PrepareInputError, box_for, class_index
from studies.models import ClassifierModel, Image
from studies.pipeline.stimuli import example_gap

_MODEL_CACHE: OrderedDict[tuple[Any, ...], tuple[LoadedModel, str]] = OrderedDict()
_MODEL_CACHE_SIZE = 3


def methods_check(methods: Sequence[str]) -> None:
    """Raise :class:`PrepareInputError` naming any method that the engine does not know."""
    if not methods:
        raise PrepareInputError("the study has no methods; pick some of: " + ", ".join(METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise PrepareInputError(f"unknown explainer method(s) {unknown}; known: {', '.join(METHODS)}")


def _weights_file(model: ClassifierModel) -> tuple[Path | None, Path | None]:
    """The weights as a local path (downloaded to a temp file for non-local storage)."""
    if not model.weights:
        return None, None
    name = model.weights.name
    try:
        return Path(default_storage.path(name)), None
    except NotImplementedError:
        handle, temp = tempfile.mkstemp(suffix=".pt")
        with os.fdopen(handle, "wb") as sink, default_storage.open(name, "rb") as source:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
        return Path(temp), Path(temp)


def model_load(model: ClassifierModel) -> tuple[LoadedModel, str]:
    """Load (cached per process) a model row and check its CAM layer; ``(loaded, layer_name)``."""
    key = (model.pk, model.arch, model.weights.name if model.weights else "", model.weights_sha256,
           model.target_layer, len(model.class_names or []))
    if key in _MODEL_CACHE:
        _MODEL_CACHE.move_to_end(key)
        return _MODEL_CACHE[key]
    path, temp = _weights_file(model)
    try:
        loaded = load_model(model.arch, path, sha256=model.weights_sha256 or None,
                            class_names=model.class_names or None)
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        raise PrepareInputError(f"model {model.name!r} ({model.arch}): {exc}") from exc
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    layer = model.target_layer or loaded.default_layer
    try:
        layer_name, _module = resolve_layer(loaded.model, layer)
    except ValueError as exc:
        raise PrepareInputError(f"model {model.name!r}: target layer {layer!r} not usable: {exc}") from exc
    _MODEL_CACHE[key] = (loaded, layer_name)
    while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
        _MODEL_CACHE.popitem(last=False)
    return loaded, layer_name


def images_load(images: Sequence[Image], *, size: int) -> torch.Tensor:
    """Decode stored images, RGB, resized (bilinear, no crop) to ``size``; ``[B, 3, size, size]`` in [0, 1]."""
    arrays = []
    for image in images:
        try:
            with default_storage.open(image.file.name, "rb") as handle:
                picture = PILImage.open(io.BytesIO(handle.read()))
                picture.load()
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise PrepareInputError(
                f"image {image.original_name!r} (id {image.pk}, file {image.file.name}) cannot be read: {exc}"
            ) from exc
        picture = picture.convert("RGB").resize((size, size), PILImage.Resampling.BILINEAR)
        arrays.append(np.asarray(picture, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _normalize(model: ClassifierModel, images01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(model.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(model.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images01 - mean) / std


def predict_topk(model: ClassifierModel, images: Sequence[Image], *, k: int, batch_size: int = 16) -> list[tuple[list[int], list[float]]]:
    """Top-``k`` classes and softmax probabilities of ``model`` for each image."""
    loaded, _layer = model_load(model)
    results: list[tuple[list[int], list[float]]] = []
    for start in range(0, len(images), batch_size):
        batch = images_load(images[start:start + batch_size], size=model.input_size)
        with torch.inference_mode():
            logits = loaded.model(_normalize(model, batch))
        if logits.shape[1] != len(model.class_names or []) and model.class_names:
            raise PrepareInputError(
                f"model {model.name!r} returns {logits.shape[1]} logits but has {len(model.class_names)} class names"
            )
        probs = logits.float().softmax(dim=1)
        top = probs.topk(min(k, probs.shape[1]), dim=1)
        results.extend(zip(top.indices.tolist(), [[round(s, 6) for s in row] for row in top.values.tolist()], strict=True))
    return results


def explain_chunk(
    model: ClassifierModel,
    images: Sequence[Image],
    targets: Sequence[Sequence[int]],
    methods: Sequence[str],
    *,
    options: Mapping[str, Mapping[str, Any]],
    display_size: int,
    exact: bool = False,
    overlay_base: str = DEFAULT_OVERLAY_BASE,
    class_map: Mapping[str, int] | None = None,
    wanted: Collection[tuple[int, str, int]] | None = None,
) -> dict[tuple[int, str, int], bytes]:
    """Explain a chunk in one ``explain`` call and render every map to PNG.

    Args:
        model: the model row.
        images: the chunk's images.
        targets: per image, the classes to explain (padded to a ``[B, K]`` tensor by repeating).
        methods: stimulus methods: engine methods, or ``gated:<method>`` / ``gated_bg:<method>``
            (catch and practice maps: the engine method's map kept inside the box of the target's
            category, or inside the background corner; see :func:`gate_map`). Every engine
            method named is computed once, in the same call.
        options: per-engine-method options for ``explain``.
        display_size: side of the rendered PNGs.
        exact: run the model as given (``explain(..., fast=False)``), not the engine's fast copy.
        overlay_base: what colour overlays are blended with: ``"gray"`` (the picture's luminance) or ``"color"``.
        class_map: category -> class id overrides (to find the box of a gated target).
        wanted: the ``(image_id, method, target_class)`` to render; default every combination.

    Returns:
        ``{(image_id, method, target_class): png_bytes}``.
    """
    engine_methods = list(dict.fromkeys(base_method(m) for m in methods))
    methods_check(engine_methods)
    gated = [m for m in methods if m != base_method(m) and not is_map(m)]
    if gated:
        raise PrepareInputError(f"{gated}: catch and practice maps need an attribution map method; "
                                f"{sorted({base_method(m) for m in gated})} show no map")
    map_methods = [m for m in engine_methods if is_map(m)]
    loaded, layer = model_load(model)
    x01 = images_load(images, size=model.input_size)
    shown = x01 if display_size == model.input_size else images_load(images, size=display_size)
    k = max(len(t) for t in targets)
    padded = torch.tensor([list(t) + [t[-1]] * (k - len(t)) for t in targets], dtype=torch.long)
    used = {m: dict(options.get(m, {})) for m in map_methods if options.get(m)}
    maps: dict[str, torch.Tensor] = {}
    if map_methods:
        try:
            maps = explain(loaded.model, _normalize(model, x01), padded, map_methods, layer, options=used or None,
                           fast=not exact)
        except ValueError as exc:
            raise PrepareInputError(f"model {model.name!r}, methods {list(methods)}: {exc}") from exc
    out: dict[tuple[int, str, int], bytes] = {}
    for method in methods:
        engine = base_method(method)
        if not is_map(engine):
            drawn = example_stimuli(engine, model=model, loaded=loaded, images=images, x01=x01, shown=shown,
                                    classes=padded, options=options.get(engine) or {}, display_size=display_size,
                                    class_map=class_map)
            for b, image in enumerate(images):
                for j, target in enumerate(targets[b]):
                    if wanted is None or (image.pk, method, int(target)) in wanted:
                        out[(image.pk, method, int(target))] = drawn[(b, j)]
            continue
        value = maps[engine]
        channels = METHODS[engine].output == "channels"
        for b, image in enumerate(images):
            for j, target in enumerate(targets[b]):
                if wanted is not None and (image.pk, method, int(target)) not in wanted:
                    continue
                heat = value[b, j]
                heat = _resize(heat.unsqueeze(0), display_size)[0] if channels else _resize(heat[None, None], display_size)[0, 0]
                if method != engine:
                    heat = gate_map(heat, image=image, shown=shown[b], gate=method[: -len(engine)],
                                    target=int(target), model=model, class_map=class_map)
                if channels:
                    out[(image.pk, method, int(target))] = _render_gradient(heat)
                else:
                    out[(image.pk, method, int(target))] = _render_overlay(shown[b], heat, base=overlay_base)
    return out


EXAMPLE_OPTIONS = {"reference_image_set", "k"}
"""The options of ``nearest_examples`` (``explainer_options["nearest_examples"]``)."""
DEFAULT_EXAMPLES_K = 3


def example_stimuli(method: str, *, model: ClassifierModel, loaded: LoadedModel, images: Sequence[Image],
                    x01: torch.Tensor, shown: torch.Tensor, classes: torch.Tensor, options: Mapping[str, Any],
                    display_size: int, class_map: Mapping[str, int] | None = None) -> dict[tuple[int, int], bytes]:
    """PNGs of a method that shows no map (``studies.lib.rendering.NON_MAP_METHODS``), by ``(b, j)``
    (image index in the chunk, target column of ``classes`` ``[B, K]``).

    ``image_only`` (output ``picture``): the registry's function gives the display-size picture
    (``shown``, the very pixels the maps are drawn on, bilinear-resized, RGB), drawn as it is by
    ``png_bytes``. ``nearest_examples`` (output ``examples``): the registry's function gives the
    indices of the ``k`` nearest reference images (:mod:`explainers.methods.examples`: cosine on
    the penultimate features, the query itself excluded, reference images labelled with the target
    class first); the reference set is ``options["reference_image_set"]`` (an image set id) or, by
    default, the query image's own image set (the study's); its features come from
    :func:`reference_features_load` (cached). The tiles are those images at the display size, left
    to right, nearest first, ``example_gap(display_size)`` apart on white
    (``explainers.render.compose_side_by_side``). Deterministic: the same inputs give the same bytes.
    """
    rendering = rendering_of(method)
    batch, columns = classes.shape
    if rendering == "picture":
        if options:
            raise PrepareInputError(f"method {method!r} takes no options, got {sorted(options)}")
        pictures = method_function(method)(loaded.model, shown, classes)
        return {(b, j): png_bytes(pictures[b, j].permute(1, 2, 0).numpy())
                for b in range(batch) for j in range(columns)}
    unknown = sorted(set(options) - EXAMPLE_OPTIONS)
    if unknown:
        raise PrepareInputError(f"unknown options {unknown} for method {method!r}; allowed: {sorted(EXAMPLE_OPTIONS)}")
    k = options.get("k", DEFAULT_EXAMPLES_K)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 16:
        raise PrepareInputError(f"explainer_options[{method!r}]['k'] must be a whole number from 1 to 16, got {k!r}")
    out: dict[tuple[int, int], bytes] = {}
    groups: dict[int, list[int]] = {}
    for b, image in enumerate(images):
        groups.setdefault(int(options.get("reference_image_set") or image.image_set_id), []).append(b)
    for set_id, rows in groups.items():
        reference, features = reference_features_load(model, set_id=set_id)
        labels = [_labels_of(model, image, class_map) for image in reference]
        exclude = torch.tensor([[ref.pk == images[b].pk or (bool(ref.sha256) and ref.sha256 == images[b].sha256)
                                 for ref in reference] for b in rows], dtype=torch.bool)
        try:
            chosen = method_function(method)(loaded.model, _normalize(model, x01[rows]), classes[rows],
                                             reference_features=features, reference_labels=labels, exclude=exclude, k=k)
        except ValueError as exc:
            raise PrepareInputError(f"model {model.name!r}, method {method!r}, reference image set {set_id}: {exc}") from exc
        needed = sorted({int(i) for i in chosen.flatten().tolist()})
        tiles = dict(zip(needed, images_load([reference[i] for i in needed], size=display_size), strict=True))
        for row, b in enumerate(rows):
            for j in range(columns):
                out[(b, j)] = compose_side_by_side(
                    [tiles[int(i)].permute(1, 2, 0).numpy() for i in chosen[row, j]],
                    gap=example_gap(display_size), background=1.0)
    return out


def _labels_of(model: ClassifierModel, image: Image, class_map: Mapping[str, int] | None) -> frozenset[int]:
    """The model's class ids of an image's categories (categories that are no class of the model are left out)."""
    labels = set()
    for category in image.categories or []:
        try:
            labels.add(class_index(model, str(category), class_map=dict(class_map or {}), image=image))
        except PrepareInputError:
            continue
    return frozenset(labels)


FEATURE_CACHE_VERSION = 1


def feature_cache_dir() -> Path:
    """Where reference features are cached: ``settings.XAISTUDY_FEATURE_CACHE_DIR`` if set, else
    ``<VAR_DIR>/cache/features``."""
    configured = getattr(settings, "XAISTUDY_FEATURE_CACHE_DIR", None)
    return Path(configured) if configured else Path(settings.VAR_DIR) / "cache" / "features"


def feature_cache_path(model: ClassifierModel, *, set_id: int) -> Path:
    """The cache file of a (model weights, reference image set, input size): ``<sha256>.npz`` of the
    canonical JSON of the architecture, weights sha256, input size, normalisation, layer and set."""
    loaded, _layer = model_load(model)
    name, _head = penultimate_layer(loaded.model)
    key = {"version": FEATURE_CACHE_VERSION, "arch": model.arch, "weights_sha256": model.weights_sha256 or "shipped",
           "input_size": model.input_size, "mean": list(model.mean), "std": list(model.std),
           "features": f"input of {name}", "image_set": set_id}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return feature_cache_dir() / f"{digest}.npz"


def reference_features_compute(model: ClassifierModel, images: Sequence[Image], *, batch_size: int = 32) -> torch.Tensor:
    """Penultimate features ``[N, D]`` of ``images`` (``explainers.methods.examples.penultimate_features``
    of the preprocessed pictures at the model's input size), ``batch_size`` images at a time."""
    loaded, _layer = model_load(model)
    parts = [penultimate_features(loaded.model, _normalize(model, images_load(images[i:i + batch_size], size=model.input_size)))
             for i in range(0, len(images), batch_size)]
    return torch.cat(parts)


def reference_features_load(model: ClassifierModel, *, set_id: int) -> tuple[list[Image], torch.Tensor]:
    """The reference set's images (by id) and their penultimate features, embedded once per (model
    weights, set, input size): read from :func:`feature_cache_path` when it holds exactly the set's
    images (ids and file sha256), else computed (:func:`reference_features_compute`) and written
    atomically (a temporary file, then ``os.replace``)."""
    reference = list(Image.objects.filter(image_set_id=set_id).order_by("pk"))
    if not reference:
        raise PrepareInputError(f"reference image set {set_id} has no images (explainer_options['nearest_examples'])")
    try:
        path = feature_cache_path(model, set_id=set_id)
    except ValueError as exc:
        raise PrepareInputError(f"model {model.name!r}: {exc}") from exc
    ids = np.array([image.pk for image in reference], dtype=np.int64)
    shas = np.array([image.sha256 or "" for image in reference], dtype="<U64")
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                if np.array_equal(cached["ids"], ids) and np.array_equal(cached["sha256"], shas):
                    return reference, torch.from_numpy(np.array(cached["features"], dtype=np.float32))
        except (OSError, KeyError, ValueError):
            pass  # unreadable or stale: computed again below
    try:
        features = reference_features_compute(model, reference)
    except ValueError as exc:
        raise PrepareInputError(f"model {model.name!r}: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as sink:
            np.savez(sink, ids=ids, sha256=shas, features=features.numpy())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return reference, features


#: A gated map keeps at least this share of the map's mass inside the window; with less, the
#: window holds too little to read and a smooth blob (spatial) or the picture's own detail
#: (gradient images) on the object is drawn instead.
GATE_MIN_SHARE = 0.02


def gate_map(heat: torch.Tensor, *, image: Image, shown: torch.Tensor, gate: str, target: int, model: ClassifierModel,
             class_map: Mapping[str, int] | None = None) -> torch.Tensor:
    """A real map kept only inside one window, for catch and practice stimuli (same renderer after).

    ``gate`` ``"gated:"``: the window is the box of the image's category whose class is ``target``;
    ``"gated_bg:"``: the background corner, of that box's size, that overlaps every box least.
    The window fades out towards its edges (the box blurred by a Gaussian of 3% of the side, and
    zero outside the box), so the map has no hard cut and nothing of it shows outside the box. If less than :data:`GATE_MIN_SHARE` of the map's mass falls inside, the window shows a
    smooth blob (``[H, W]`` maps) or the picture's fine detail (``[3, H, W]`` gradient maps)
    instead, so the right answer always reads from the map.

    Args:
        heat: ``[H, W]`` (spatial) or ``[3, H, W]`` (gradient) map at display size.
        image: the image row (boxes, size).
        shown: ``[3, H, W]`` picture at display size.
        gate: ``"gated:"`` or ``"gated_bg:"``.
        target: the explained class.
        model: the model (class names, to find the target's category).
        class_map: category -> class id overrides.
    """
    size = heat.shape[-1]
    category = next((c for c in dict.fromkeys(image.categories or [])
                     if class_index(model, c, class_map=dict(class_map or {}), image=image) == target), None)
    box = box_for(image, category) if category is not None else None
    if box is None:
        raise PrepareInputError(f"image {image.original_name!r} has no box for class {target} of model {model.name!r}")
    sx, sy = size / image.width, size / image.height
    x0, y0, x1, y1 = (int(round(box["x0"] * sx)), int(round(box["y0"] * sy)),
                      int(round(box["x1"] * sx)), int(round(box["y1"] * sy)))
    if gate == GATED_BACKGROUND_PREFIX:
        x0, y0, x1, y1 = _background_square(image, x1 - x0, y1 - y0, size, sx, sy)
    elif gate != GATED_PREFIX:
        raise PrepareInputError(f"unknown gated rendering {gate!r}")
    hard = torch.zeros(size, size)
    hard[y0:y1, x0:x1] = 1.0
    window = _gaussian_blur(hard[None], sigma=max(1.0, 0.03 * size))[0] * hard  # fades out inside the box, 0 outside
    if heat.dim() == 2:
        positive = heat.float().clamp(min=0)
        gated = positive * window
        if float(gated.sum()) <= GATE_MIN_SHARE * float(positive.sum()) or float(gated.max()) <= 0:
            gated = _blob(size, (x0, y0, x1, y1)) * window
        return gated
    gated = heat.float() * window
    if float(gated.abs().sum()) <= GATE_MIN_SHARE * float(heat.abs().sum()) or float(gated.abs().max()) <= 0:
        picture = shown.float()
        detail = picture - _gaussian_blur(picture, sigma=max(1.0, 0.02 * size))
        gated = detail * (_blob(size, (x0, y0, x1, y1)) * window)[None]
    return gated


def _blob(size: int, rect: tuple[int, int, int, int]) -> torch.Tensor:
    """A Gaussian bump centred on ``rect`` (sd a quarter of its width and height), peak 1."""
    x0, y0, x1, y1 = rect
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    cx, cy = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
    sx, sy = max(1.0, (x1 - x0) / 4), max(1.0, (y1 - y0) / 4)
    return torch.exp(-0.5 * (((xs - cx) / sx) ** 2 + ((ys - cy) / sy) ** 2))


def _gaussian_blur(x: torch.Tensor, *, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[C, H, W]`` (reflect padding), radius 3 sd."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[0]
    y = x.float()[None]
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1),
                 groups=channels)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1),
                 groups=channels)
    return y[0]


def _background_square(image: Image, w: int, h: int, size: int, sx: float, sy: float) -> tuple[int, int, int, int]:
    """The corner rectangle of size ``w x h`` that overlaps the image's boxes least."""
    boxes = [(b["x0"] * sx, b["y0"] * sy, b["x1"] * sx, b["y1"] * sy) for b in image.boxes or []]
    w, h = max(4, min(w, size // 3)), max(4, min(h, size // 3))
    corners = [(0, 0), (size - w, 0), (0, size - h), (size - w, size - h)]

    def overlap(corner: tuple[int, int]) -> float:
        cx, cy = corner
        return sum(max(0.0, min(cx + w, bx1) - max(cx, bx0)) * max(0.0, min(cy + h, by1) - max(cy, by0))
                   for bx0, by0, bx1, by1 in boxes)

    cx, cy = min(corners, key=overlap)
    return cx, cy, cx + w, cy + h


def _resize(tensor: torch.Tensor, size: int) -> torch.Tensor:
    if tensor.shape[-1] == size and tensor.shape[-2] == size:
        return tensor
    return F.interpolate(tensor.float(), size=(size, size), mode="bilinear", align_corners=False)


def _render_overlay(image: torch.Tensor, heat: torch.Tensor, *, base: str = DEFAULT_OVERLAY_BASE) -> bytes:
    return render_cam_overlay(image, heat, base=base)


def _render_gradient(attr: torch.Tensor) -> bytes:
    return render_gradient(attr, style="color")
