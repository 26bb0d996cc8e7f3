"""A tiny hand-made discrimination study for tests and pilots of the platform itself.

It needs no model and no torch: every image is a two-object scene (category ``left`` object in
the left half, ``right`` in the right half, boxes and a pixel mask recorded), and every
stimulus is a heat map drawn by rule and rendered with the ``jet`` colour map, as the
platform's renderer shows heat. Three made-up "methods" with known behaviour let tests check
the crowd machinery end to end:

- ``focused``: a Gaussian blob on the explained object (a perfectly discriminative map);
- ``diffuse``: the same blob spread over the whole image plus noise (no information);
- ``misleading``: the blob on the *other* object (systematically wrong).

This is a fixture for the machinery, not science: the worlds in ``explainers.worlds`` (prepared by
``studies.services.prepare``) are what studies of real explanation methods use.
"""

from __future__ import annotations

import io
import secrets

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from matplotlib import colormaps
from PIL import Image as PILImage

from studies.models import ClassifierModel, Image, ImageSet, Item, Stimulus, Study
from studies.services.images import sha256_bytes

TOY_CATEGORIES = ("circle", "square", "triangle")
TOY_METHODS = ("focused", "diffuse", "misleading")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def heat_render_png(heat: np.ndarray, scene: np.ndarray | None = None, colormap: str = "jet") -> bytes:
    """Render a 2-D heat array (any range) through ``colormap`` (0 = min, 1 = max) as an RGB PNG.

    With ``scene`` (``H x W x 3`` uint8) the colours are blended half and half with it, as the
    platform's CAM overlays are.
    """
    low, high = float(heat.min()), float(heat.max())
    scaled = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
    rgb = colormaps[colormap](scaled)[..., :3]
    if scene is not None:
        rgb = 0.5 * rgb + 0.5 * (scene.astype(np.float64) / 255.0)
    return _png((rgb * 255).round().astype(np.uint8))


def _save(prefix: str, data: bytes, extension: str = ".png") -> tuple[str, str]:
    digest = sha256_bytes(data)
    name = f"{prefix}/{digest[:2]}/{digest}{extension}"
    if not default_storage.exists(name):
        default_storage.save(name, ContentFile(data))
    return name, digest


def _blob(size: int, cx: float, cy: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))


def _scene(size: int, rng: np.random.Generator, left: int, right: int) -> tuple[np.ndarray, bytes]:
    half = size // 2
    rgb = np.full((size, size, 3), 235, np.uint8)
    mask = np.zeros((size, size), np.uint8)
    for index, (category, x0) in enumerate(((left, 0), (right, half))):
        colour = rng.integers(20, 200, size=3, dtype=np.uint8)
        region = np.zeros((size, half), bool)
        yy, xx = np.mgrid[0:size, 0:half]
        cx, cy, r = half / 2, size / 2, half * 0.35
        if TOY_CATEGORIES[category] == "circle":
            region = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        elif TOY_CATEGORIES[category] == "square":
            region = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
        else:
            region = (yy >= cy - r) & (yy <= cy + r) & (abs(xx - cx) <= (yy - (cy - r)) / 2)
        rgb[:, x0 : x0 + half][region] = colour
        mask[:, x0 : x0 + half][region] = index + 1  # 1 + index into the image's categories
    return rgb, _png(mask)


def toy_study_create(
    *,
    name: str = "toy discrimination study",
    n_images: int = 6,
    size: int = 64,
    methods: tuple[str, ...] = TOY_METHODS,
    judgments_per_item: int = 3,
    trials_per_participant: int = 6,
    lease_seconds: int = 600,
    seed: int = 0,
    status: str = Study.Status.LIVE,
) -> Study:
    """Create the toy world, its stimuli and one main item per (method, image, object).

    Returns:
        A ``class_discrimination`` study with ``len(methods) * n_images * 2`` main items, no
        practice or catch items, ready to be served (``status`` live by default).
    """
    rng = np.random.default_rng(seed)
    half = size // 2
    with transaction.atomic():
        image_set = ImageSet.objects.create(
            name=f"toy-{secrets.token_hex(6)}", source=ImageSet.Source.SYNTHETIC, categories=list(TOY_CATEGORIES)
        )
        model, _ = ClassifierModel.objects.get_or_create(
            name="toy-oracle", defaults={"arch": "toy", "class_names": list(TOY_CATEGORIES)}
        )
        study = Study.objects.create(
            name=name, kind=Study.Kind.CLASS_DISCRIMINATION, methods=list(methods), model=model,
            image_set=image_set, judgments_per_item=judgments_per_item,
            trials_per_participant=trials_per_participant, catch_trials=0, practice_trials=0,
            lease_seconds=lease_seconds, seed=seed, status=status,
        )  # fmt: skip
        tie = 0
        for index in range(n_images):
            left, right = rng.choice(len(TOY_CATEGORIES), size=2, replace=False).tolist()
            scene, mask = _scene(size, rng, left, right)
            scene_name, scene_sha = _save("images", _png(scene))
            mask_name, _ = _save("masks", mask)
            image = Image.objects.create(
                image_set=image_set, file=scene_name, original_name=f"toy-{index:03d}.png", sha256=scene_sha,
                width=size, height=size, categories=[TOY_CATEGORIES[left], TOY_CATEGORIES[right]],
                boxes=[
                    {"category": TOY_CATEGORIES[left], "x0": 0, "y0": 0, "x1": half, "y1": size},
                    {"category": TOY_CATEGORIES[right], "x0": half, "y0": 0, "x1": size, "y1": size},
                ],
                mask=mask_name,
            )  # fmt: skip
            for target, other, cx in ((left, right, half / 2), (right, left, half * 1.5)):
                other_cx = half * 1.5 if cx < half else half / 2
                for method in methods:
                    if method == "focused":
                        heat = _blob(size, cx, size / 2, size / 8)
                    elif method == "misleading":
                        heat = _blob(size, other_cx, size / 2, size / 8)
                    else:
                        heat = _blob(size, size / 2, size / 2, size) + rng.uniform(0, 0.3, (size, size))
                    data = heat_render_png(heat, scene)
                    stimulus_name, stimulus_sha = _save("stimuli", data)
                    stimulus = Stimulus.objects.create(
                        image=image, model=model, method=method, target_class=target, settings={"toy": True},
                        settings_hash="toy", file=stimulus_name, sha256=stimulus_sha,
                    )  # fmt: skip
                    options = [TOY_CATEGORIES[target], TOY_CATEGORIES[other]]
                    order = rng.permutation(2).tolist()
                    Item.objects.create(
                        study=study, role=Item.Role.MAIN, method=method, image=image, target_class=target,
                        target_label=TOY_CATEGORIES[target], options=[options[i] for i in order],
                        correct_option=order.index(0), stimulus_a=stimulus, tie_rank=tie,
                    )  # fmt: skip
                    tie += 1
    return study
