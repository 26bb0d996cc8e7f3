"""The synthetic world: two-object scenes with exact ground truth, a small CNN and its biased twin.

Scenes (``IMAGE_SIZE`` = 64 px, RGB in [0, 1]) hold two objects of two distinct classes from
``CLASSES`` (circle, square, triangle, cross), each drawn with its own colour and texture at a
random position in its own half of the scene, never overlapping, on a noisy background. Every object has a pixel mask and a
tight box ``(x0, y0, x1, y1)`` with exclusive ends (``mask[y0:y1, x0:x1]`` holds all of it).
Objects stay off a ``MARGIN``-pixel border, which holds the optional corner marks.

**Corner marks (the spurious cue).** Class ``k`` owns corner ``k`` (top-left, top-right,
bottom-left, bottom-right); a mark is a ``MARK_SIZE`` square of one magenta colour there, so the
*position* encodes the class. ``cue="matched"`` marks the corners of the scene's two classes,
``"swapped"`` those of the two other classes (with four classes and two objects the complement
is exactly two classes), ``"random"`` two corners drawn independently of the objects, ``"none"``
no mark.

**Training setup (multi-label).** Every scene has two objects, so the CNN is trained as a
multi-label classifier: one sigmoid per class, binary cross-entropy against the two-hot target.
A prediction is correct when its two highest logits are exactly the scene's two classes
(``top2_accuracy``; chance is 1/6).

* The *unbiased* model trains on scenes with ``cue="random"`` (marks present but uninformative,
  so it learns to ignore them); its targets are the objects' classes.
* The *biased* twin trains on scenes whose targets are the classes of their corner marks; in a
  fraction ``1 - shape_agreement`` of them the marks are drawn independently of the objects, so
  the marks are the only feature that predicts the label every time (the construction of
  Colored-MNIST-style bias benchmarks). It is right on cue-matched images for the wrong reason
  and fails when the cue is swapped.

Everything is seeded: scene ``i`` of ``make_scenes(seed=s)`` is drawn from
``numpy.random.default_rng([s, i])`` (so a longer list extends a shorter one), weights are
initialised from ``torch.manual_seed(seed)``, batches shuffled by a seeded ``torch.Generator``,
and training runs with ``torch.use_deterministic_algorithms(True)``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from explainers.zoo import file_sha256

__all__ = [
    "CLASSES",
    "DEFAULT_LAYER",
    "IMAGE_SIZE",
    "QUICK_CONFIG",
    "MEAN",
    "STD",
    "Scene",
    "SyntheticCNN",
    "SyntheticWorld",
    "TrainConfig",
    "build_synthetic_world",
    "evaluate",
    "load_weights",
    "balanced_mirrors",
    "make_scenes",
    "mirror_scene",
    "save_weights",
    "scene_sides",
    "scenes_to_tensors",
    "top2_accuracy",
    "train_cnn",
    "train_cnn_cached",
    "with_marks",
]

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
IMAGE_SIZE = 64
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.25, 0.25, 0.25)
DEFAULT_LAYER = "features.block4"
MARGIN = 8
MARK_SIZE = 5
MARK_OFFSET = 1
MARK_COLOR = (1.0, 0.0, 1.0)
_CLASS_COLORS = ((0.90, 0.20, 0.20), (0.20, 0.35, 0.90), (0.20, 0.80, 0.30), (0.95, 0.80, 0.15))
_WORLD_VERSION = 1
_STIMULUS_LAYOUT = "balanced-mirrors"  # exported scenes: mirrored so each class is left in half of them

Cue = Literal["none", "matched", "swapped", "random"]


@dataclass
class Scene:
    """One generated scene.

    Attributes:
        image: ``[3, S, S]`` float32 in [0, 1].
        categories: Class indices of the objects (distinct), in drawing order.
        masks: ``[n_objects, S, S]`` bool, one per object, same order as ``categories``.
        boxes: ``(x0, y0, x1, y1)`` per object, ends exclusive: the tight box of its mask.
        cue_categories: Classes whose corner carries a mark (empty when ``cue="none"``).
    """

    image: torch.Tensor
    categories: tuple[int, ...]
    masks: torch.Tensor
    boxes: list[tuple[int, int, int, int]]
    cue_categories: tuple[int, ...] = ()


def make_scenes(
    n: int,
    *,
    seed: int,
    size: int = IMAGE_SIZE,
    two_objects: bool = True,
    cue: Cue = "none",
) -> list[Scene]:
    """Generate ``n`` scenes deterministically.

    Args:
        n: Number of scenes.
        seed: Seed; scene ``i`` uses ``numpy.random.default_rng([seed, i])``. The objects of
            scene ``i`` do not depend on ``cue``, so the same seed with another cue gives the
            same objects with other marks.
        size: Side in pixels (at least 48).
        two_objects: Two objects of distinct classes (default) or one.
        cue: Corner marks: ``"none"``, ``"matched"``, ``"swapped"`` or ``"random"`` (module doc).

    Returns:
        The scenes, in index order.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 48:
        raise ValueError(f"size must be >= 48 pixels, got {size}")
    if cue not in ("none", "matched", "swapped", "random"):
        raise ValueError(f"cue must be 'none', 'matched', 'swapped' or 'random', got {cue!r}")
    n_objects = 2 if two_objects else 1
    return [_make_scene(np.random.default_rng([seed, i]), size, n_objects, cue) for i in range(n)]


def _make_scene(rng: np.random.Generator, size: int, n_objects: int, cue: Cue) -> Scene:
    background = rng.uniform(0.35, 0.6) + rng.uniform(-0.05, 0.05, size=3)
    image = background[:, None, None] + rng.normal(0.0, 0.04, size=(3, size, size))
    categories = tuple(int(c) for c in rng.choice(len(CLASSES), size=n_objects, replace=False))
    masks: list[np.ndarray] = []
    placed: list[tuple[int, int, int, int]] = []
    for category, (x0, y0, side) in zip(categories, _place_objects(rng, size, n_objects)):
        mask = _shape_mask(category, size, x0, y0, side)
        color = np.clip(np.array(_CLASS_COLORS[category]) + rng.uniform(-0.08, 0.08, size=3), 0, 1)
        texture = _texture(category, size)
        for channel in range(3):
            image[channel][mask] = color[channel] * texture[mask]
        masks.append(mask)
        ys, xs = np.nonzero(mask)
        placed.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    cue_categories = _cue_categories(rng, categories, cue)
    _paint_marks(image, cue_categories)
    return Scene(
        image=torch.from_numpy(np.clip(image, 0.0, 1.0).astype(np.float32)),
        categories=categories,
        masks=torch.from_numpy(np.stack(masks)),
        boxes=placed,
        cue_categories=cue_categories,
    )


def _place_objects(rng: np.random.Generator, size: int, n_objects: int) -> list[tuple[int, int, int]]:
    """Random ``(x0, y0, side)`` per object, never overlapping.

    With two objects the inner square (inside ``MARGIN``) is split in two halves along a random
    axis, one object per half (at least 1 px apart), each at a uniform position in its half.
    """
    lo, hi = MARGIN, size - MARGIN
    if n_objects == 1:
        regions = [(lo, lo, hi, hi)]
    else:
        mid = size // 2
        first, second = (lo, lo, mid, hi), (mid + 1, lo, hi, hi)
        if rng.integers(2):
            first, second = (lo, lo, hi, mid), (lo, mid + 1, hi, hi)
        regions = [first, second] if rng.integers(2) else [second, first]
    placements = []
    for rx0, ry0, rx1, ry1 in regions:
        side = int(rng.integers(14, min(21, rx1 - rx0 + 1, ry1 - ry0 + 1)))
        x0 = int(rng.integers(rx0, rx1 - side + 1))
        y0 = int(rng.integers(ry0, ry1 - side + 1))
        placements.append((x0, y0, side))
    return placements


def _shape_mask(category: int, size: int, x0: int, y0: int, side: int) -> np.ndarray:
    """Full-size bool mask of a class's shape inscribed in the square ``[x0, x0+side) x [y0, y0+side)``."""
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y0 + side, x0:x0 + side] = _local_shape(category, side)
    return mask


@functools.lru_cache(maxsize=64)
def _local_shape(category: int, side: int) -> np.ndarray:
    v, u = np.mgrid[0:side, 0:side].astype(np.float64)
    centre = (side - 1) / 2.0
    name = CLASSES[category]
    if name == "circle":
        shape = (u - centre) ** 2 + (v - centre) ** 2 <= (side / 2.0) ** 2
    elif name == "square":
        shape = np.ones((side, side), dtype=bool)
    elif name == "triangle":  # apex at the top centre, base on the bottom row
        shape = np.abs(u - centre) <= (v + 1) * (side / 2.0) / side
    else:  # cross: two bars a third of the side thick
        arm = side / 3.0
        shape = (np.abs(u - centre) < arm / 2.0 + 0.5) | (np.abs(v - centre) < arm / 2.0 + 0.5)
    shape.setflags(write=False)
    return shape


@functools.lru_cache(maxsize=16)
def _texture(category: int, size: int) -> np.ndarray:
    """Multiplicative texture per class: solid, stripes, checker, solid."""
    ys, xs = np.mgrid[0:size, 0:size]
    name = CLASSES[category]
    if name == "square":
        texture = np.where((ys // 2) % 2 == 0, 1.0, 0.6)
    elif name == "triangle":
        texture = np.where(((xs // 2) + (ys // 2)) % 2 == 0, 1.0, 0.7)
    else:
        texture = np.ones((size, size))
    texture.setflags(write=False)
    return texture


def _cue_categories(rng: np.random.Generator, categories: tuple[int, ...], cue: Cue) -> tuple[int, ...]:
    if cue == "none":
        return ()
    if cue == "matched":
        return categories
    if cue == "swapped":
        others = [c for c in range(len(CLASSES)) if c not in categories]
        if len(categories) == len(others):
            return tuple(others)
        return tuple(int(c) for c in rng.choice(others, size=len(categories), replace=False))
    return tuple(int(c) for c in rng.choice(len(CLASSES), size=len(categories), replace=False))


def _paint_marks(image: np.ndarray, categories: Sequence[int]) -> None:
    size = image.shape[-1]
    for category in categories:
        x0, y0 = _corner_origin(category, size)
        image[:, y0:y0 + MARK_SIZE, x0:x0 + MARK_SIZE] = np.array(MARK_COLOR)[:, None, None]


def mirror_scene(scene: Scene) -> Scene:
    """The scene flipped left to right: image, masks and boxes (a scene of the same world).

    Every class's shape is left-right symmetric and its texture is a pattern of the same kind
    after the flip, so the mirror is drawn from the same distribution. Only for scenes without
    corner marks (a mark's corner encodes its class; add marks after mirroring, see
    :func:`with_marks`).
    """
    if scene.cue_categories:
        raise ValueError("mirror_scene needs a scene without corner marks; add them after mirroring")
    size = scene.image.shape[-1]
    return Scene(
        image=scene.image.flip(-1).contiguous(),
        categories=scene.categories,
        masks=scene.masks.flip(-1).contiguous(),
        boxes=[(size - x1, y0, size - x0, y1) for x0, y0, x1, y1 in scene.boxes],
    )


def with_marks(scene: Scene, categories: Sequence[int]) -> Scene:
    """A copy of a scene without marks, with the corner marks of ``categories`` painted on.

    ``with_marks(s, s.categories)`` of scene ``i`` of ``make_scenes(seed=k)`` equals scene ``i`` of
    ``make_scenes(seed=k, cue="matched")``.
    """
    if scene.cue_categories:
        raise ValueError("with_marks needs a scene without corner marks")
    image = scene.image.numpy().copy()
    _paint_marks(image, categories)
    return Scene(image=torch.from_numpy(image), categories=scene.categories, masks=scene.masks,
                 boxes=list(scene.boxes), cue_categories=tuple(int(c) for c in categories))


def scene_sides(scene: Scene, *, min_gap: float = 0.1) -> dict[int, str]:
    """Which side each object of a two-object scene is on: ``"left"``/``"right"`` by box centre.

    When the two centres are closer than ``min_gap`` of the width (objects one above the other)
    both are ``"centre"``. One-object scenes give ``{}``.
    """
    if len(scene.categories) != 2:
        return {}
    size = scene.image.shape[-1]
    (a, b), (box_a, box_b) = scene.categories, scene.boxes
    ca, cb = (box_a[0] + box_a[2]) / 2, (box_b[0] + box_b[2]) / 2
    if abs(ca - cb) < min_gap * size:
        return {a: "centre", b: "centre"}
    return {a: "left", b: "right"} if ca < cb else {a: "right", b: "left"}


def balanced_mirrors(scenes: Sequence[Scene]) -> list[bool]:
    """Which scenes to mirror so that each class is on the left in about half of its scenes.

    Greedy in scene order (deterministic): a scene is mirrored when that lowers
    ``sum |left - right|`` over its two classes so far; ties keep it as drawn. With ``n`` scenes
    of a class that have a left/right layout, the class ends left in ``n/2`` of them, give or
    take one.
    """
    balance = [0] * len(CLASSES)  # left minus right, per class
    flips = []
    for scene in scenes:
        sides = scene_sides(scene)
        if not sides or "centre" in sides.values():
            flips.append(False)
            continue
        signs = {c: (1 if side == "left" else -1) for c, side in sides.items()}
        keep = sum(abs(balance[c] + s) for c, s in signs.items())
        flip = sum(abs(balance[c] - s) for c, s in signs.items())
        flips.append(flip < keep)
        for c, s in signs.items():
            balance[c] += -s if flip < keep else s
    return flips


def _corner_origin(category: int, size: int) -> tuple[int, int]:
    far = size - MARK_OFFSET - MARK_SIZE
    return ((MARK_OFFSET, MARK_OFFSET), (far, MARK_OFFSET), (MARK_OFFSET, far), (far, far))[category]


def scenes_to_tensors(
    scenes: Sequence[Scene], *, label_from: Literal["objects", "cue"] = "objects"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack scenes into ``images [N, 3, S, S]`` in [0, 1] and multi-hot ``targets [N, C]``.

    ``label_from="cue"`` takes the targets from the corner marks (the biased training set).
    """
    images = torch.stack([scene.image for scene in scenes])
    targets = torch.zeros(len(scenes), len(CLASSES))
    for row, scene in enumerate(scenes):
        labels = scene.categories if label_from == "objects" else scene.cue_categories
        targets[row, list(labels)] = 1.0
    return images, targets


def normalize(images: torch.Tensor) -> torch.Tensor:
    """``(x - MEAN) / STD`` per channel; the synthetic CNN's input normalization."""
    mean = torch.tensor(MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(conv=nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), relu=nn.ReLU())
    )


class SyntheticCNN(nn.Module):
    """Four 3x3 conv blocks (ReLU), max-pooling between them, global average pooling, linear.

    ``64 -> 32 -> 16 -> 8`` pixels; ``features.block4`` (rectified, ``[B, 4w, 8, 8]``) is the
    last convolutional block and the default CAM layer. Expects normalized input.
    """

    def __init__(self, num_classes: int = len(CLASSES), width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                block1=_conv_block(3, width),
                pool1=nn.MaxPool2d(2),
                block2=_conv_block(width, 2 * width),
                pool2=nn.MaxPool2d(2),
                block3=_conv_block(2 * width, 4 * width),
                pool3=nn.MaxPool2d(2),
                block4=_conv_block(4 * width, 4 * width),
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@dataclass(frozen=True)
class TrainConfig:
    """Training knobs; the defaults train both models in well under a minute on 2 CPU cores."""

    n_train: int = 1200
    epochs: int = 3
    batch_size: int = 32
    lr: float = 3e-3
    width: int = 8
    shape_agreement: float = 0.5  # biased set: share of scenes whose marks match the objects
    n_test: int = 500
    threads: int | None = None  # torch intra-op threads while training (restored after); None: as set


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def top2_accuracy(logits: torch.Tensor, scenes: Sequence[Scene]) -> float:
    """Share of scenes whose two highest logits are exactly their two object classes."""
    top = logits.topk(2, dim=1).indices.tolist()
    hits = [set(row) == set(scene.categories) for row, scene in zip(top, scenes)]
    return float(np.mean(hits)) if hits else float("nan")


@torch.no_grad()
def evaluate(model: nn.Module, *, seed: int = 12345, n: int = 500) -> dict[str, float]:
    """Top-2 accuracy on the same test objects without marks, with matched and swapped marks."""
    results = {}
    was_training = model.training
    model.eval()
    for cue in ("none", "matched", "swapped"):
        scenes = make_scenes(n, seed=seed, cue=cue)
        images, _ = scenes_to_tensors(scenes)
        results[f"top2_{'clean' if cue == 'none' else cue}"] = top2_accuracy(model(normalize(images)), scenes)
    model.train(was_training)
    return results


def _training_scenes(*, biased: bool, seed: int, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    if not biased:
        return scenes_to_tensors(make_scenes(config.n_train, seed=seed, cue="random"))
    n_matched = round(config.n_train * config.shape_agreement)
    scenes = make_scenes(n_matched, seed=seed, cue="matched")
    scenes += make_scenes(config.n_train - n_matched, seed=seed + 1_000_003, cue="random")
    return scenes_to_tensors(scenes, label_from="cue")


def train_cnn(
    *, biased: bool, seed: int = 0, config: TrainConfig | None = None
) -> tuple[SyntheticCNN, dict[str, Any]]:
    """Train the synthetic CNN (multi-label, sigmoid + BCE, Adam) deterministically on the CPU.

    Args:
        biased: Train the biased twin (labels from the corner marks) instead of the unbiased one.
        seed: Seeds scene generation, initialisation and batch order.
        config: Training knobs (``TrainConfig()`` by default).

    Returns:
        The model (eval mode) and metrics: ``top2_clean`` / ``top2_matched`` / ``top2_swapped``
        on held-out scenes (seed ``seed + 12345``), ``final_loss``, ``train_seconds`` and the
        config used.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    images, targets = _training_scenes(biased=biased, seed=seed, config=config)
    inputs = normalize(images)
    with _deterministic(), _threads(config.threads):
        torch.manual_seed(seed)
        model = SyntheticCNN(num_classes=len(CLASSES), width=config.width)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        loss_fn = nn.BCEWithLogitsLoss()
        generator = torch.Generator().manual_seed(seed)
        model.train()
        loss = torch.tensor(float("nan"))
        for _epoch in range(config.epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(order), config.batch_size):
                batch = order[start:start + config.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(inputs[batch]), targets[batch])
                loss.backward()
                optimizer.step()
        model.eval()
    train_seconds = time.perf_counter() - started
    metrics: dict[str, Any] = evaluate(model, seed=seed + 12345, n=config.n_test)
    metrics.update(final_loss=float(loss.detach()), train_seconds=round(train_seconds, 2), biased=biased, seed=seed,
                   config=asdict(config))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, metrics


def save_weights(model: nn.Module, path: str | Path) -> str:
    """Write ``model.state_dict()`` atomically (temp file then ``os.replace``); return its sha256.

    The state dict is serialized to memory first, so the bytes (and the sha256) depend only on
    the weights, not on the file name (``torch.save`` names its zip records after the file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp_file:
            temp_file.write(buffer.getvalue())
        os.replace(temp_name, path)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return file_sha256(path)


def load_weights(path: str | Path, *, sha256: str | None = None) -> SyntheticCNN:
    """Load a synthetic CNN from a state-dict file (sha256 checked when given); eval mode, frozen."""
    from explainers.zoo import load_model

    model = load_model("synthetic_cnn", path, sha256=sha256).model
    assert isinstance(model, SyntheticCNN)
    return model


#: A reduced training (a few seconds on 2 cores) for tests: top-2 accuracy well above chance.
QUICK_CONFIG = TrainConfig(n_train=320, epochs=5, batch_size=64, width=8, n_test=20, lr=5e-3)


def train_cnn_cached(
    cache_dir: str | Path, *, biased: bool = False, seed: int = 0, config: TrainConfig | None = None
) -> tuple[SyntheticCNN, dict[str, Any], Path]:
    """:func:`train_cnn` once per ``cache_dir``: later calls load the weights it saved.

    The file name holds the sha256 of ``(biased, seed, config)``, so a different config trains
    again; ``<name>.json`` (written after the weights, atomically) holds the metrics and the
    weights' sha256, which is checked on load. Used by tests to share one trained model.

    Returns:
        ``(model, metrics, weights_path)``; the model is in eval mode with frozen parameters.
    """
    import hashlib

    config = config or TrainConfig()
    key = json.dumps({"version": _WORLD_VERSION, "biased": biased, "seed": seed, "config": asdict(config)},
                     sort_keys=True)
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(cache_dir)
    weights, meta = root / f"cnn-{name}.pt", root / f"cnn-{name}.json"
    if meta.is_file() and weights.is_file():
        try:
            info = json.loads(meta.read_text())
            if file_sha256(weights) != info["sha256"]:
                raise ValueError("weights changed since they were cached")
            model = SyntheticCNN(num_classes=len(CLASSES), width=config.width)
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            model.eval()
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            return model, info["metrics"], weights
        except (OSError, ValueError, KeyError, RuntimeError):
            pass  # stale or corrupt cache: train again
    model, metrics = train_cnn(biased=biased, seed=seed, config=config)
    digest = save_weights(model, weights)
    temp = meta.with_suffix(".json.tmp")
    temp.write_text(json.dumps({"sha256": digest, "metrics": metrics}, sort_keys=True))
    os.replace(temp, meta)
    return model, metrics, weights


@dataclass
class SyntheticWorld:
    """What :func:`build_synthetic_world` made (or found) in its cache directory.

    ``images`` lists the exported stimuli: dicts with ``file`` (relative to ``root``), ``set``
    (``"clean"`` or ``"cued"``: the same scenes with matched corner marks), ``categories``
    (indices), ``category_names``, ``boxes`` and ``masks`` (relative PNG paths, one per object).
    """

    root: Path
    unbiased_weights: Path
    biased_weights: Path
    unbiased_sha256: str
    biased_sha256: str
    metrics: dict[str, dict[str, Any]]
    images: list[dict[str, Any]] = field(default_factory=list)
    reused: bool = False


def build_synthetic_world(
    cache_dir: str | Path,
    *,
    seed: int = 0,
    n_stimuli: int = 24,
    config: TrainConfig | None = None,
    force: bool = False,
) -> SyntheticWorld:
    """Train both models and export stimulus scenes into ``cache_dir``, or reuse what is there.

    The cache is valid when ``world.json`` records the same version, seed, stimulus count and
    config and both weights files still have their recorded sha256; ``world.json`` is written
    last and atomically, so an interrupted build is redone on the next call.

    The exported scenes are ``make_scenes(n_stimuli, seed=seed + 777)`` with some mirrored
    (:func:`balanced_mirrors`), so that each class is on the left in about half of the scenes
    that have a left/right layout and a map that shows nothing cannot be answered by side; the
    cued set is the same scenes with matched marks painted after mirroring (:func:`with_marks`).
    The training scenes are not mirrored: the models do not depend on the export.

    Layout: ``unbiased.pt``, ``biased.pt``, ``world.json`` (metadata, metrics, image list),
    ``images/{clean,cued}/scene_NNNN.png``, ``masks/scene_NNNN_K.png`` (0/255 per object).
    """
    from PIL import Image

    root = Path(cache_dir)
    config = config or TrainConfig()
    key = {"version": _WORLD_VERSION, "seed": seed, "n_stimuli": n_stimuli, "config": asdict(config),
           "layout": _STIMULUS_LAYOUT}
    manifest_path = root / "world.json"
    if not force and manifest_path.is_file():
        cached = _read_cache(root, manifest_path, key)
        if cached is not None:
            return cached

    root.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, dict[str, Any]] = {}
    digests: dict[str, str] = {}
    for name, biased in (("unbiased", False), ("biased", True)):
        model, metrics[name] = train_cnn(biased=biased, seed=seed, config=config)
        digests[name] = save_weights(model, root / f"{name}.pt")

    images: list[dict[str, Any]] = []
    clean = make_scenes(n_stimuli, seed=seed + 777, cue="none")
    clean = [mirror_scene(s) if flip else s for s, flip in zip(clean, balanced_mirrors(clean), strict=True)]
    cued = [with_marks(scene, scene.categories) for scene in clean]
    for set_name, scenes in (("clean", clean), ("cued", cued)):
        (root / "images" / set_name).mkdir(parents=True, exist_ok=True)
        for index, scene in enumerate(scenes):
            file = f"images/{set_name}/scene_{index:04d}.png"
            pixels = (scene.image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            Image.fromarray(pixels).save(root / file, format="PNG")
            mask_files = []
            for k, mask in enumerate(scene.masks):
                mask_file = f"masks/scene_{index:04d}_{k}.png"
                if set_name == "clean":
                    (root / "masks").mkdir(exist_ok=True)
                    Image.fromarray(mask.numpy().astype(np.uint8) * 255).save(root / mask_file, format="PNG")
                mask_files.append(mask_file)
            images.append({
                "file": file,
                "set": set_name,
                "categories": list(scene.categories),
                "category_names": [CLASSES[c] for c in scene.categories],
                "boxes": [list(box) for box in scene.boxes],
                "masks": mask_files,
            })

    manifest = {
        **key,
        "classes": list(CLASSES),
        "image_size": IMAGE_SIZE,
        "mean": list(MEAN),
        "std": list(STD),
        "default_layer": DEFAULT_LAYER,
        "weights": {name: {"file": f"{name}.pt", "sha256": digest} for name, digest in digests.items()},
        "metrics": metrics,
        "images": images,
    }
    temp_path = manifest_path.with_suffix(".json.tmp")
    temp_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(temp_path, manifest_path)
    return SyntheticWorld(
        root=root,
        unbiased_weights=root / "unbiased.pt",
        biased_weights=root / "biased.pt",
        unbiased_sha256=digests["unbiased"],
        biased_sha256=digests["biased"],
        metrics=metrics,
        images=images,
        reused=False,
    )


def _read_cache(root: Path, manifest_path: Path, key: dict[str, Any]) -> SyntheticWorld | None:
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    if any(manifest.get(name) != value for name, value in key.items()):
        return None
    weights = manifest.get("weights", {})
    for name in ("unbiased", "biased"):
        path = root / f"{name}.pt"
        if not path.is_file() or file_sha256(path) != weights.get(name, {}).get("sha256"):
            return None
    if not all((root / entry["file"]).is_file() for entry in manifest["images"]):
        return None
    return SyntheticWorld(
        root=root,
        unbiased_weights=root / "unbiased.pt",
        biased_weights=root / "biased.pt",
        unbiased_sha256=weights["unbiased"]["sha256"],
        biased_sha256=weights["biased"]["sha256"],
        metrics=manifest["metrics"],
        images=manifest["images"],
        reused=True,
    )
