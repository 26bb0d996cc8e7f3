"""Render explanation maps to PNG bytes, deterministically (numpy + Pillow, no GUI backend).

The same input always gives byte-identical PNGs: Pillow writes no timestamp or text chunk
unless asked, and every step here is plain arithmetic on fixed tables.

Conventions (Selvaraju et al. 2017, Fig. 1):

* **CAM overlay**: the map ``m >= 0`` is divided by ``vmax`` (default its maximum, or a shared
  :func:`joint_scale`), clipped to [0, 1], coloured with a jet colormap and blended with the
  image: ``out = (1 - alpha) * base + alpha * jet(m / vmax)``. ``base`` is the image itself
  (``base="color"``, the paper's look) or its luminance (``base="gray"``): under a grey picture
  the map is the only colour on screen, so a red object cannot be read as heat.
* **Gradient, colour** (the paper's Guided Backprop / Guided Grad-CAM look): each signed
  attribution ``g`` is shown as ``0.5 + 0.5 * g / s`` clipped to [0, 1], so zero is mid-gray,
  where ``s`` is the ``percentile``-th percentile of ``|g|`` over the map (default 99.5: the few
  extreme values saturate instead of darkening everything), or a shared scale.
* **Gradient, gray**: ``max_c |g_c|`` per pixel (Simonyan 2013's saliency map), divided by the
  percentile of that magnitude, clipped to [0, 1].
* **Top-k% mask** (Robot A/B studies): the ``percent`` % pixels with the highest saliency keep
  their colour, the rest become gray.

**Colour keys** (:func:`colour_key`, :func:`colour_key_png`): each rendering has a legend drawn
by the same code on a ramp from "nothing" to "most", so the key a worker sees is exactly the
encoding of the stimuli.

Images are ``[3, H, W]`` tensors (or ``H x W x 3`` arrays) with values in [0, 1]; uint8 arrays are
accepted and divided by 255.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

__all__ = [
    "DEFAULT_PERCENTILE",
    "KEY_KINDS",
    "ColourKey",
    "colour_key",
    "colour_key_pixels",
    "colour_key_png",
    "grayscale",
    "compose_side_by_side",
    "gradient_magnitude",
    "jet_colormap",
    "joint_scale",
    "png_bytes",
    "render_cam_overlay",
    "render_gradient",
    "render_topk_mask",
]

DEFAULT_PERCENTILE = 99.5
GRAY = 0.5

# matplotlib's "jet" segment data: (position, value) breakpoints per channel, interpolated linearly.
_JET_SEGMENTS = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


def _jet_table(entries: int = 256) -> np.ndarray:
    positions = np.linspace(0.0, 1.0, entries)
    channels = []
    for name in ("red", "green", "blue"):
        xs, ys = zip(*_JET_SEGMENTS[name])
        channels.append(np.interp(positions, xs, ys))
    return np.stack(channels, axis=1)  # [entries, 3]


_JET = _jet_table()


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB in [0, 1] with a 256-entry jet table (dark blue -> red).

    Values are clipped to [0, 1] and quantized to the nearest table entry; NaN is an error.
    """
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("jet_colormap got NaN values")
    index = np.rint(np.clip(values, 0.0, 1.0) * (len(_JET) - 1)).astype(np.intp)
    return _JET[index]


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode ``H x W x 3`` / ``H x W`` floats in [0, 1] or uint8 as PNG bytes (no metadata)."""
    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        array = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"png_bytes expects H x W or H x W x 3 pixels; got shape {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def grayscale(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Luminance (ITU-R BT.601: ``0.299 R + 0.587 G + 0.114 B``) of an image, as ``H x W x 3`` in [0, 1]."""
    rgb = _image_hwc(image, "image")
    luminance = rgb @ np.array([0.299, 0.587, 0.114])
    return np.repeat(luminance[..., None], 3, axis=2)


def render_cam_overlay(
    image: torch.Tensor | np.ndarray,
    cam: torch.Tensor | np.ndarray,
    *,
    alpha: float = 0.5,
    vmax: float | None = None,
    base: Literal["color", "gray"] = "color",
) -> bytes:
    """Jet-coloured CAM blended over the image (in colour or in grey), as a PNG.

    ``out = (1 - alpha) * base_image + alpha * jet(clip(cam / vmax, 0, 1))``. A CAM at another
    resolution than the image is resized bilinearly to it. ``vmax`` defaults to the map's
    maximum (the paper's per-map normalization); pass :func:`joint_scale` of several maps to
    compare them on one scale. An all-zero map (or ``vmax <= 0``) shows as the colormap's zero.

    Args:
        image: ``[3, H, W]`` in [0, 1].
        cam: ``[H', W']`` non-negative map (negative values are clipped to 0).
        alpha: Weight of the heatmap, in [0, 1].
        vmax: Value shown as the top colour.
        base: ``"color"`` blends with the image as it is (the paper's look); ``"gray"`` with its
            luminance (:func:`grayscale`), so the heatmap is the only colour in the picture.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if base not in ("color", "gray"):
        raise ValueError(f"base must be 'color' or 'gray', got {base!r}")
    rgb = _image_hwc(image, "image") if base == "color" else grayscale(image)
    heat = _map_2d(cam, "cam")
    if heat.shape != rgb.shape[:2]:
        heat = _resize_map(heat, rgb.shape[:2])
    scale = float(heat.max()) if vmax is None else float(vmax)
    normalized = np.clip(heat / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(heat)
    return png_bytes((1.0 - alpha) * rgb + alpha * jet_colormap(normalized))


def gradient_magnitude(attr: torch.Tensor | np.ndarray) -> np.ndarray:
    """``max_c |attr_c|`` per pixel of a ``[C, H, W]`` attribution (Simonyan et al. 2013)."""
    array = _attr_chw(attr, "attr")
    return np.abs(array).max(axis=0)


def render_gradient(
    attr: torch.Tensor | np.ndarray,
    *,
    style: Literal["color", "gray"] = "color",
    scale: float | None = None,
    percentile: float = DEFAULT_PERCENTILE,
) -> bytes:
    """A gradient-space attribution as the paper shows it, as a PNG.

    ``style="color"``: ``0.5 + 0.5 * attr / s`` per channel, clipped to [0, 1] (zero is gray).
    ``style="gray"``: ``max_c |attr_c| / s`` clipped to [0, 1] (black is zero).
    ``s`` is ``scale`` when given (e.g. a :func:`joint_scale`), else the ``percentile`` of
    ``|attr|`` (colour) or of the magnitude map (gray) of this map alone. A zero map renders
    gray (colour) or black (gray).

    Args:
        attr: ``[3, H, W]`` signed attribution (``[1, H, W]`` is allowed for gray).
        style: ``"color"`` or ``"gray"``.
        scale: Shared scale; must be positive.
        percentile: Percentile in (0, 100] used when ``scale`` is None.
    """
    array = _attr_chw(attr, "attr")
    if style == "color":
        if array.shape[0] != 3:
            raise ValueError(f"style='color' needs a [3, H, W] attribution; got {array.shape[0]} channels")
        s = _scale(np.abs(array), scale, percentile)
        pixels = 0.5 + 0.5 * array / s if s > 0 else np.full_like(array, 0.5)
        return png_bytes(np.clip(pixels, 0.0, 1.0).transpose(1, 2, 0))
    if style == "gray":
        magnitude = np.abs(array).max(axis=0)
        s = _scale(magnitude, scale, percentile)
        pixels = magnitude / s if s > 0 else np.zeros_like(magnitude)
        return png_bytes(np.clip(pixels, 0.0, 1.0))
    raise ValueError(f"style must be 'color' or 'gray', got {style!r}")


def joint_scale(
    maps: Sequence[torch.Tensor | np.ndarray], *, percentile: float = DEFAULT_PERCENTILE
) -> float:
    """One scale for several maps shown together: the percentile of ``|values|`` pooled over all.

    Use ``percentile=100`` for CAMs (the shared maximum, passed as ``vmax``), the default for
    gradient maps (passed as ``scale``; for ``style="gray"`` pool :func:`gradient_magnitude`
    maps). Returns 0.0 when every map is zero.
    """
    if not maps:
        raise ValueError("joint_scale needs at least one map")
    pooled = np.concatenate([np.abs(_as_numpy(m, f"maps[{i}]")).ravel() for i, m in enumerate(maps)])
    return _scale(pooled, None, percentile)


def render_topk_mask(
    image: torch.Tensor | np.ndarray,
    saliency: torch.Tensor | np.ndarray,
    *,
    percent: float = 20.0,
    fill: float = GRAY,
) -> bytes:
    """Keep the image's ``percent`` % most salient pixels, gray out the rest, as a PNG.

    ``round(percent / 100 * H * W)`` pixels are kept; ties are broken by pixel order (row-major),
    so the result is deterministic. A saliency map at another resolution is resized bilinearly.

    Args:
        image: ``[3, H, W]`` in [0, 1].
        saliency: ``[H', W']`` map, higher = more important (pass a CAM or a
            :func:`gradient_magnitude`).
        percent: Share of pixels kept, in [0, 100].
        fill: Gray level of the hidden pixels, in [0, 1].
    """
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percent must be in [0, 100], got {percent}")
    rgb = _image_hwc(image, "image")
    values = _map_2d(saliency, "saliency")
    if values.shape != rgb.shape[:2]:
        values = _resize_map(values, rgb.shape[:2])
    keep_count = int(round(percent / 100.0 * values.size))
    order = np.argsort(-values.ravel(), kind="stable")
    keep = np.zeros(values.size, dtype=bool)
    keep[order[:keep_count]] = True
    keep = keep.reshape(values.shape)
    return png_bytes(np.where(keep[..., None], rgb, float(fill)))


KEY_KINDS: tuple[str, ...] = ("overlay", "gradient")
KEY_WIDTH, KEY_HEIGHT = 240, 18


@dataclass(frozen=True)
class ColourKey:
    """What a rendering's colours mean, for the legend shown beside every stimulus.

    Attributes:
        kind: ``"overlay"`` (:func:`render_cam_overlay`) or ``"gradient"``
            (:func:`render_gradient` with ``style="color"``).
        low: What the left end of the key (no evidence) looks like.
        high: What the right end (the strongest evidence) looks like.
        description: One sentence a worker can read.
    """

    kind: str
    low: str
    high: str
    description: str


_KEYS = {
    "overlay": ColourKey(
        "overlay", "blue: not used", "red: used most",
        "Colours over the picture: blue where the computer did not look, through green and yellow, "
        "to red where it looked most.",
    ),
    "gradient": ColourKey(
        "gradient", "grey: not used", "vivid: used most",
        "A picture of the evidence itself: plain grey where a pixel did not matter; the more a pixel "
        "mattered, the more it stands out from the grey, in colour, light or dark.",
    ),
}


def colour_key(kind: str) -> ColourKey:
    """The legend of a rendering (``"overlay"`` or ``"gradient"``; see :data:`KEY_KINDS`)."""
    try:
        return _KEYS[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {KEY_KINDS}, got {kind!r}") from None


def colour_key_pixels(kind: str, *, width: int = KEY_WIDTH, height: int = KEY_HEIGHT) -> np.ndarray:
    """The key as ``height x width x 3`` uint8: the rendering itself applied to a left-to-right ramp.

    ``overlay``: :func:`render_cam_overlay` with ``base="gray"`` of a mid-grey picture under the
    map ``x / (width - 1)``. ``gradient``: :func:`render_gradient` (``style="color"``, scale 1) of
    a fixed signed pattern (seeded, 3 x 3 px cells) times the ramp: grey on the left, vivid on the
    right. Deterministic.
    """
    colour_key(kind)
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, width), (height, width))
    if kind == "overlay":
        png = render_cam_overlay(np.full((height, width, 3), 0.5), ramp, vmax=1.0, base="gray")
    else:
        cells = np.random.default_rng(20170101).uniform(-1.0, 1.0, size=(3, -(-height // 3), -(-width // 3)))
        pattern = np.repeat(np.repeat(cells, 3, axis=1), 3, axis=2)[:, :height, :width]
        png = render_gradient(pattern * ramp[None], style="color", scale=1.0)
    with Image.open(io.BytesIO(png)) as decoded:
        return np.asarray(decoded.convert("RGB"))


def colour_key_png(kind: str, *, width: int = KEY_WIDTH, height: int = KEY_HEIGHT) -> bytes:
    """:func:`colour_key_pixels` as PNG bytes (no metadata)."""
    return png_bytes(colour_key_pixels(kind, width=width, height=height))


def compose_side_by_side(
    panels: Sequence[bytes | np.ndarray | torch.Tensor], *, gap: int = 4, background: float = 1.0
) -> bytes:
    """Place PNGs (or images) left to right, top-aligned, ``gap`` px apart, into one PNG."""
    if not panels:
        raise ValueError("compose_side_by_side needs at least one panel")
    arrays = [_panel_rgb(panel, f"panels[{i}]") for i, panel in enumerate(panels)]
    height = max(a.shape[0] for a in arrays)
    width = sum(a.shape[1] for a in arrays) + gap * (len(arrays) - 1)
    canvas = np.full((height, width, 3), np.uint8(round(float(background) * 255)), dtype=np.uint8)
    x = 0
    for array in arrays:
        canvas[: array.shape[0], x:x + array.shape[1]] = array
        x += array.shape[1] + gap
    return png_bytes(canvas)


def _as_numpy(value: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(value)
    if array.dtype == np.uint8:
        array = array.astype(np.float64) / 255.0
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has non-finite values")
    return array


def _image_hwc(image: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    array = _as_numpy(image, name)
    if array.ndim == 3 and array.shape[0] == 3 and isinstance(image, torch.Tensor) or array.ndim == 3 and array.shape[0] == 3 and array.shape[2] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name} must be [3, H, W] (tensor) or H x W x 3; got shape {tuple(np.shape(image))}")
    if array.min() < -1e-6 or array.max() > 1 + 1e-6:
        raise ValueError(f"{name} values must be in [0, 1]; got [{array.min():.4g}, {array.max():.4g}]")
    return np.clip(array, 0.0, 1.0)


def _map_2d(value: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    array = _as_numpy(value, name)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{name} must be [H, W]; got shape {array.shape}")
    return array


def _attr_chw(value: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    array = _as_numpy(value, name)
    if array.ndim != 3:
        raise ValueError(f"{name} must be [C, H, W]; got shape {array.shape}")
    return array


def _scale(values: np.ndarray, scale: float | None, percentile: float) -> float:
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        return float(scale)
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    s = float(np.percentile(values, percentile))
    if s <= 0.0:  # a sparse map: fall back to its maximum so the few non-zero values show
        s = float(values.max())
    return s


def _resize_map(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (half-pixel centres, as ``F.interpolate(align_corners=False)``)."""
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))[None, None]
    resized = torch.nn.functional.interpolate(tensor, size=shape, mode="bilinear", align_corners=False)
    return resized[0, 0].numpy()


def _panel_rgb(panel: bytes | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(panel, bytes | bytearray):
        with Image.open(io.BytesIO(panel)) as decoded:
            return np.asarray(decoded.convert("RGB"))
    array = _as_numpy(panel, name)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    rgb = _image_hwc(array, name)
    return np.rint(rgb * 255.0).astype(np.uint8)
