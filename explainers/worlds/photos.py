"""The photo world: two-category composites of photos shipped inside scikit-image.

Five photos are files inside the installed ``skimage/data`` folder (no ``pooch`` download):
``chelsea`` (a cat), ``coffee`` (an espresso), ``rocket`` (a launch), ``camera`` (the cameraman
with his tripod, grayscale) and ``motorcycle`` (``stereo_motorcycle``'s left view). Each maps to
one ImageNet-1k class (the label the study asks about) and a set of accepted classes (near
synonyms in ImageNet's hierarchy, used to judge "the model saw it").

A composite puts two photos side by side on a ``size x size`` canvas: each photo is
centre-cropped to a 1:2 (portrait) strip and resized (bicubic) to fill its half, so the halves
are exactly the ground-truth boxes ``(x0, y0, x1, y1)`` (ends exclusive). Square composites
keep the aspect ratio when a model resizes them to its input.

The default pairs (:func:`balanced_pairs`) hold every unordered pair once, oriented so that each
photo is on the left in half of its composites (2 of 4 with five photos): a map that shows
nothing cannot be answered by "the cat is always on the left".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from explainers.zoo import imagenet_class_names

__all__ = ["PHOTOS", "Composite", "PhotoSpec", "balanced_pairs", "load_photo", "photo_composites"]


@dataclass(frozen=True)
class PhotoSpec:
    """A shipped photo and its ImageNet label.

    Attributes:
        name: Key of the photo.
        loader: Function name in ``skimage.data``.
        label: ImageNet class name the study asks about.
        accepted: ImageNet class names that count as recognizing the photo.
    """

    name: str
    loader: str
    label: str
    accepted: tuple[str, ...]

    @property
    def imagenet_id(self) -> int:
        """Logit index of ``label``."""
        return _imagenet_index(self.label)

    @property
    def accepted_ids(self) -> tuple[int, ...]:
        """Logit indices of ``accepted``."""
        return tuple(_imagenet_index(name) for name in self.accepted)


PHOTOS: tuple[PhotoSpec, ...] = (
    PhotoSpec("chelsea", "chelsea", "Egyptian cat", ("Egyptian cat", "tabby", "tiger cat")),
    PhotoSpec("coffee", "coffee", "espresso", ("espresso", "cup", "coffee mug")),
    PhotoSpec("rocket", "rocket", "missile", ("missile", "projectile", "space shuttle")),
    PhotoSpec("camera", "camera", "tripod", ("tripod",)),
    PhotoSpec("motorcycle", "stereo_motorcycle", "moped", ("moped", "motor scooter")),
)


@dataclass(frozen=True)
class Composite:
    """Two photos side by side.

    Attributes:
        name: ``"<left>+<right>"``.
        image: ``size x size x 3`` uint8 array.
        photos: The two photo names, left then right.
        labels: Their ImageNet class names.
        imagenet_ids: Their ImageNet logit indices.
        accepted_ids: Accepted logit indices per half.
        boxes: ``(x0, y0, x1, y1)`` per half, ends exclusive.
    """

    name: str
    image: np.ndarray
    photos: tuple[str, str]
    labels: tuple[str, str]
    imagenet_ids: tuple[int, int]
    accepted_ids: tuple[tuple[int, ...], tuple[int, ...]]
    boxes: tuple[tuple[int, int, int, int], tuple[int, int, int, int]]

    def tensor(self) -> torch.Tensor:
        """``[3, size, size]`` float32 in [0, 1]."""
        return torch.from_numpy(self.image).permute(2, 0, 1).float() / 255.0


@lru_cache(maxsize=1)
def _imagenet_lookup() -> dict[str, int]:
    return {name: index for index, name in enumerate(imagenet_class_names())}


def _imagenet_index(name: str) -> int:
    try:
        return _imagenet_lookup()[name]
    except KeyError:
        raise ValueError(f"{name!r} is not an ImageNet-1k class name") from None


def _spec(name: str) -> PhotoSpec:
    for spec in PHOTOS:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown photo {name!r}; shipped: {', '.join(s.name for s in PHOTOS)}")


def load_photo(name: str) -> np.ndarray:
    """The photo as ``H x W x 3`` uint8 (grayscale photos are replicated to three channels)."""
    import skimage.data

    image = getattr(skimage.data, _spec(name).loader)()
    if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def _portrait_strip(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre crop to the ``width:height`` aspect, then bicubic resize to ``width x height``."""
    h, w = image.shape[:2]
    crop_w = min(w, int(h * width / height))
    crop_h = min(h, int(round(crop_w * height / width)))
    x0, y0 = (w - crop_w) // 2, (h - crop_h) // 2
    crop = Image.fromarray(image[y0:y0 + crop_h, x0:x0 + crop_w])
    return np.asarray(crop.resize((width, height), Image.Resampling.BICUBIC))


def balanced_pairs(names: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """Every unordered pair of ``names`` once, as ``(left, right)``, each name left in half of its pairs.

    Round-robin orientation: name ``i`` is left of names ``i+1 .. i+n//2`` (mod ``n``). With an
    odd ``n`` every name is left in exactly ``(n-1)/2`` of its ``n-1`` pairs; with an even ``n``
    in ``n/2`` or ``n/2 - 1``. Deterministic, ordered by the left name's index.
    """
    n = len(names)
    if len(set(names)) != n:
        raise ValueError(f"balanced_pairs needs distinct names, got {list(names)}")
    pairs: list[tuple[str, str]] = []
    seen: set[frozenset[str]] = set()
    for i in range(n):
        for step in range(1, n // 2 + 1):
            pair = (names[i], names[(i + step) % n])
            if frozenset(pair) not in seen:
                seen.add(frozenset(pair))
                pairs.append(pair)
    return pairs


def photo_composites(
    *, size: int = 448, pairs: list[tuple[str, str]] | None = None, both_orders: bool = False
) -> list[Composite]:
    """Build side-by-side composites deterministically.

    Args:
        size: Canvas side (even); each half is ``size/2 x size``.
        pairs: (left, right) photo names; default :func:`balanced_pairs` of ``PHOTOS`` (every
            unordered pair once, each photo on the left in half of its composites).
        both_orders: Also add each pair mirrored (right, left), to balance sides.
    """
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number >= 32, got {size}")
    if pairs is None:
        pairs = balanced_pairs([spec.name for spec in PHOTOS])
    if both_orders:
        pairs = pairs + [(b, a) for a, b in pairs]
    half = size // 2
    composites = []
    for left, right in pairs:
        if left == right:
            raise ValueError(f"a composite needs two different photos, got {left!r} twice")
        specs = (_spec(left), _spec(right))
        image = np.concatenate([_portrait_strip(load_photo(s.name), half, size) for s in specs], axis=1)
        composites.append(
            Composite(
                name=f"{left}+{right}",
                image=image,
                photos=(left, right),
                labels=(specs[0].label, specs[1].label),
                imagenet_ids=(specs[0].imagenet_id, specs[1].imagenet_id),
                accepted_ids=(specs[0].accepted_ids, specs[1].accepted_ids),
                boxes=((0, 0, half, size), (half, 0, size, size)),
            )
        )
    return composites
