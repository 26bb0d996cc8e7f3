"""Statistics of the pre-launch validity audit (``studies/services/validity.py``), on plain data.

No Django here: the service reads the rows and files and hands this module numbers, PNG bytes
and layouts. Everything is deterministic given its ``seed``.

- :func:`png_format`: width, height, mode and the metadata chunks of a PNG, read from its bytes
  (no decoding), so stimuli can be compared for anything besides the picture that differs.
- :func:`size_summary`: median and interquartile range of file sizes.
- :func:`image_statistics`: a handful of simple statistics of a picture (mean and standard
  deviation per channel, clipped pixels, colourfulness, edge density, bytes per pixel) — what a
  worker could tell catch trials from main trials by without reading the map.
- :func:`logistic_fit` / :func:`classifier_audit`: an L2-penalised, class-balanced logistic
  regression (Newton's method) scored by stratified k-fold cross-validation, against chance by
  a binomial test (accuracy vs the majority-class rate) and a permutation test (balanced
  accuracy vs 0.5, labels permuted and the whole cross-validation rerun).
- :func:`category_side_counts` and :func:`layout_observers`: where each category sits in the
  two-category images, and how well observers that see only the layout (never the map's
  content) would answer the discrimination items.
- :func:`binomial_p`: exact binomial tests (scipy).
"""

from __future__ import annotations

import io
import struct
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import special
from scipy import stats as sps

# --- PNG format ------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Chunks every PNG has (or that only carry pixels); the rest is metadata worth comparing.
PIXEL_CHUNKS = frozenset({"IHDR", "IDAT", "IEND", "PLTE"})
TEXT_CHUNKS = frozenset({"tEXt", "zTXt", "iTXt"})
_COLOR_TYPES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}


@dataclass(frozen=True)
class PngFormat:
    """What a PNG declares besides its pixels: ``mode`` is Pillow's name (``RGB``, ``L``, ``P``...),
    ``bit_depth`` per sample, ``metadata`` the ancillary chunk types in file order (text chunks as
    ``tEXt:keyword``)."""

    width: int
    height: int
    mode: str
    bit_depth: int
    metadata: tuple[str, ...]

    @property
    def label(self) -> str:
        meta = ", ".join(self.metadata) if self.metadata else "no metadata chunks"
        return f"{self.width}x{self.height} {self.mode}/{self.bit_depth}-bit, {meta}"


def png_format(data: bytes) -> PngFormat | None:
    """The declared format of PNG bytes, or None when they are not a well-formed PNG."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    offset = len(PNG_SIGNATURE)
    header: tuple[int, int, int, int] | None = None
    metadata: list[str] = []
    while offset + 8 <= len(data):
        length, raw_type = struct.unpack(">I4s", data[offset:offset + 8])
        chunk_type = raw_type.decode("latin-1")
        body = data[offset + 8:offset + 8 + length]
        if len(body) != length:
            return None
        if chunk_type == "IHDR" and length >= 10:
            width, height, bit_depth, color_type = struct.unpack(">IIBB", body[:10])
            header = (width, height, bit_depth, color_type)
        elif chunk_type in TEXT_CHUNKS:
            keyword = body.split(b"\0", 1)[0].decode("latin-1", "replace")
            metadata.append(f"{chunk_type}:{keyword}")
        elif chunk_type not in PIXEL_CHUNKS:
            metadata.append(chunk_type)
        offset += 12 + length
        if chunk_type == "IEND":
            break
    if header is None:
        return None
    width, height, bit_depth, color_type = header
    return PngFormat(width, height, _COLOR_TYPES.get(color_type, f"type{color_type}"), bit_depth, tuple(metadata))


# --- sizes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeSummary:
    n: int
    median: float
    q1: float
    q3: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def size_summary(sizes: Sequence[float]) -> SizeSummary:
    """Median and quartiles (numpy's linear interpolation) of file sizes in bytes."""
    values = np.asarray(sizes, dtype=np.float64)
    if values.size == 0:
        return SizeSummary(0, float("nan"), float("nan"), float("nan"))
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return SizeSummary(int(values.size), float(median), float(q1), float(q3))


# --- image statistics ------------------------------------------------------------------------

FEATURE_NAMES = (
    "mean red", "mean green", "mean blue", "sd red", "sd green", "sd blue",
    "clipped pixels", "colourfulness", "edge density", "bytes per pixel",
)  # fmt: skip
#: A neighbouring-pixel jump of grey level above this (0..1 scale) counts as an edge.
EDGE_STEP = 0.1
#: Pictures are reduced to at most this side before their statistics are taken.
STAT_SIDE = 256


def image_statistics(data: bytes) -> NDArray[np.float64]:
    """The :data:`FEATURE_NAMES` of an encoded picture (any format Pillow reads).

    - mean and sd of R, G, B on 0..1;
    - clipped pixels: the fraction of pixels with a channel at 0 or 255 (saturated);
    - colourfulness (Hasler & Suesstrunk 2003): ``sd(rg, yb) + 0.3 * mean(rg, yb)`` with
      ``rg = R - G``, ``yb = (R + G) / 2 - B`` (0..255 scale, divided by 255 here);
    - edge density: fraction of horizontal and vertical neighbour pairs whose grey levels differ
      by more than :data:`EDGE_STEP`;
    - bytes per pixel of the encoded file (what a worker sees in the browser's network panel).
    """
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as picture:
        n_pixels = max(1, picture.width * picture.height)
        rgb = picture.convert("RGB")
        if max(rgb.size) > STAT_SIDE:
            rgb.thumbnail((STAT_SIDE, STAT_SIDE), PILImage.Resampling.BOX)
        pixels = np.asarray(rgb, dtype=np.uint8)
    x = pixels.astype(np.float64) / 255.0
    flat = x.reshape(-1, 3)
    clipped = np.mean(np.any((pixels == 0) | (pixels == 255), axis=2))
    rg = flat[:, 0] - flat[:, 1]
    yb = 0.5 * (flat[:, 0] + flat[:, 1]) - flat[:, 2]
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    grey = x.mean(axis=2)
    steps = [np.abs(np.diff(grey, axis=axis)).ravel() for axis in (0, 1)]
    edges = np.concatenate(steps)
    edge_density = float(np.mean(edges > EDGE_STEP)) if edges.size else 0.0
    return np.array([*flat.mean(axis=0), *flat.std(axis=0), clipped, colourfulness, edge_density,
                     len(data) / n_pixels], dtype=np.float64)  # fmt: skip


# --- logistic regression ---------------------------------------------------------------------


def logistic_fit(x: NDArray[np.float64], y: NDArray[np.integer], *, l2: float = 1.0,
                 sample_weight: NDArray[np.float64] | None = None, max_iter: int = 100,
                 tol: float = 1e-9) -> NDArray[np.float64]:
    """Penalised maximum likelihood of ``P(y=1 | x) = sigmoid(b0 + x @ b)`` by Newton's method.

    Minimises ``-sum_i w_i [y_i log p_i + (1 - y_i) log(1 - p_i)] + l2/2 * |b|^2`` (the
    intercept ``b0`` is not penalised). Returns ``[b0, b...]``. The penalty keeps the fit finite
    when the classes separate.
    """
    x = np.asarray(x, dtype=np.float64)
    target = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    weights = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    design = np.hstack([np.ones((n, 1)), x])
    penalty = np.full(d + 1, float(l2))
    penalty[0] = 0.0
    coef = np.zeros(d + 1)
    for _ in range(max_iter):
        p = special.expit(design @ coef)
        gradient = design.T @ (weights * (p - target)) + penalty * coef
        curvature = weights * p * (1.0 - p)
        hessian = (design * curvature[:, None]).T @ design + np.diag(penalty) + 1e-10 * np.eye(d + 1)
        step = np.linalg.solve(hessian, gradient)
        coef -= step
        if np.max(np.abs(step)) < tol:
            break
    return coef


def logistic_predict(coef: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
    """``P(y=1 | x)`` under a :func:`logistic_fit` result."""
    return special.expit(coef[0] + np.asarray(x, dtype=np.float64) @ coef[1:])


def stratified_folds(y: NDArray[np.integer], k: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """Fold number (0..k-1) of each sample: each class shuffled, then dealt out in turn."""
    folds = np.empty(len(y), dtype=np.intp)
    start = 0
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        folds[members] = (start + np.arange(members.size)) % k
        start += members.size
    return folds


def cross_validated_predictions(x: NDArray[np.float64], y: NDArray[np.integer], folds: NDArray[np.intp], *,
                                l2: float = 1.0) -> NDArray[np.intp]:
    """Out-of-fold class predictions of the class-balanced logistic regression.

    Features are standardised with the training fold's mean and sd; each class gets the total
    weight ``n_train / 2``, so the threshold 0.5 is neutral between the classes.
    """
    predicted = np.zeros(len(y), dtype=np.intp)
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        x_train, y_train = x[train], y[train]
        mean = x_train.mean(axis=0)
        sd = x_train.std(axis=0)
        sd[sd < 1e-12] = 1.0
        counts = np.bincount(y_train, minlength=2).astype(np.float64)
        if np.any(counts == 0):  # one class missing from the training fold: predict the other
            predicted[test] = int(np.argmax(counts))
            continue
        weight = (len(y_train) / (2.0 * counts))[y_train]
        coef = logistic_fit((x_train - mean) / sd, y_train, l2=l2, sample_weight=weight)
        predicted[test] = (logistic_predict(coef, (x[test] - mean) / sd) >= 0.5).astype(np.intp)
    return predicted


def balanced_accuracy(y: NDArray[np.integer], predicted: NDArray[np.integer]) -> float:
    """Mean of the per-class recalls (0.5 = chance for two classes, whatever their sizes)."""
    recalls = [np.mean(predicted[y == label] == label) for label in np.unique(y)]
    return float(np.mean(recalls))


@dataclass(frozen=True)
class ClassifierResult:
    """Cross-validated separability of two groups of pictures."""

    n: int
    n_positive: int
    folds: int
    accuracy: float
    majority_rate: float
    p_binomial: float
    balanced_accuracy: float
    p_permutation: float
    permutations: int


def classifier_audit(x: NDArray[np.float64], y: NDArray[np.integer], *, seed: int, permutations: int = 300,
                     max_folds: int = 5, l2: float = 1.0) -> ClassifierResult | None:
    """Can a small classifier tell the ``y == 1`` pictures from the others by ``x``?

    Stratified ``k``-fold cross-validation, ``k = min(max_folds, smaller class size)``;
    ``accuracy`` is tested against the majority-class rate (one-sided exact binomial test,
    ``p_binomial``); ``balanced_accuracy`` against 0.5 by a permutation test: the labels are
    permuted ``permutations`` times and the whole cross-validation (new folds) is rerun,
    ``p = (1 + #{permuted >= observed}) / (1 + permutations)``. None when the smaller class has
    fewer than two members (nothing to cross-validate).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.intp)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 2:
        return None
    k = int(min(max_folds, counts.min()))
    rng = np.random.default_rng(seed)
    folds = stratified_folds(y, k, rng)
    predicted = cross_validated_predictions(x, y, folds, l2=l2)
    correct = int(np.sum(predicted == y))
    majority = float(counts.max() / counts.sum())
    observed = balanced_accuracy(y, predicted)
    exceed = 0
    for _ in range(permutations):
        shuffled = rng.permutation(y)
        again = cross_validated_predictions(x, shuffled, stratified_folds(shuffled, k, rng), l2=l2)
        exceed += balanced_accuracy(shuffled, again) >= observed - 1e-12
    return ClassifierResult(
        n=len(y), n_positive=int(counts[1]), folds=k, accuracy=correct / len(y), majority_rate=majority,
        p_binomial=binomial_p(correct, len(y), majority, alternative="greater"),
        balanced_accuracy=observed, p_permutation=(1 + exceed) / (1 + permutations), permutations=permutations,
    )


# --- tests -----------------------------------------------------------------------------------


def binomial_p(successes: int, n: int, p0: float = 0.5,
               alternative: Literal["two-sided", "greater", "less"] = "two-sided") -> float:
    """Exact binomial test of ``H0: p = p0`` (scipy's ``binomtest``); ``nan`` when ``n == 0``."""
    if n <= 0:
        return float("nan")
    return float(sps.binomtest(int(successes), int(n), p=min(max(p0, 0.0), 1.0), alternative=alternative).pvalue)


# --- layout ----------------------------------------------------------------------------------

Side = Literal["left", "right"]
#: Box centres closer than this share of the image width: one object above the other, neither side
#: (the planner's rule, ``studies.lib.scenes.SIDE_MIN_GAP``).
SIDE_MIN_GAP = 0.1


@dataclass(frozen=True)
class LayoutImage:
    """A two-category image as a layout: each category's box x-centre and area, in pixels."""

    key: str
    width: float
    centres: dict[str, float]
    areas: dict[str, float] = field(default_factory=dict)

    def side(self, category: str) -> Side | None:
        """``left`` when the category's box centre lies left of the other category's (or, with
        only its own box, left of the image centre); None when the centres are closer than
        :data:`SIDE_MIN_GAP` of the width (one object above the other) or the box is unknown."""
        if category not in self.centres:
            return None
        others = [x for c, x in self.centres.items() if c != category]
        reference = others[0] if others else self.width / 2.0
        here = self.centres[category]
        if abs(here - reference) < SIDE_MIN_GAP * max(self.width, 1e-9):
            return None
        return "left" if here < reference else "right"


def layout_from_boxes(key: str, width: float, categories: Sequence[str], boxes: Iterable[dict]) -> LayoutImage:
    """A :class:`LayoutImage` from ``Image.boxes`` (the first box of each of ``categories``)."""
    centres: dict[str, float] = {}
    areas: dict[str, float] = {}
    for box in boxes or ():
        category = box.get("category")
        if category in categories and category not in centres:
            centres[category] = (float(box["x0"]) + float(box["x1"])) / 2.0
            areas[category] = abs(float(box["x1"]) - float(box["x0"])) * abs(float(box["y1"]) - float(box["y0"]))
    return LayoutImage(key=key, width=float(width), centres=centres, areas=areas)


def category_side_counts(images: Iterable[LayoutImage]) -> dict[str, dict[str, int]]:
    """Per category: in how many images it is ``left``, ``right`` or ``centre`` (see
    :meth:`LayoutImage.side`; the same counts as ``studies.pipeline.plan.layout_balance``)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"left": 0, "right": 0, "centre": 0})
    for image in images:
        for category in image.centres:
            counts[category][image.side(category) or "centre"] += 1
    return {category: dict(value) for category, value in sorted(counts.items())}


def side_balance_allowed(n: int, tolerance: float) -> int:
    """The largest ``|left - right|`` accepted for a category seen in ``n`` images: ``tolerance``
    of ``n`` either side of even (``|left share - 0.5| <= tolerance / 2``), and at least 1 (an
    odd count cannot be split evenly)."""
    return max(1, int(np.floor(tolerance * n + 1e-9)))


@dataclass(frozen=True)
class ObserverResult:
    """A layout-only observer's expected accuracy on ``n`` decisions (a tie counts one half)."""

    name: str
    description: str
    n: int
    expected_correct: float

    @property
    def accuracy(self) -> float:
        return self.expected_correct / self.n if self.n else float("nan")

    def p_value(self, chance: float = 0.5) -> float:
        """One-sided exact binomial test against ``chance`` (ties rounded down to whole answers)."""
        return binomial_p(int(np.floor(self.expected_correct + 1e-9)), self.n, chance, alternative="greater")


def layout_observers(trials: Sequence[tuple[LayoutImage, str, str]]) -> list[ObserverResult]:
    """Observers that never read a map, on discrimination trials ``(image, target, other)``.

    - ``left box``: picks the category whose box is on the left;
    - ``right box``: the one on the right;
    - ``larger box``: the one with the larger box;
    - ``side only``: sees only which side the map points to (the target's side), not the picture
      nor the map's shape, and answers with the category the study's images put on that side
      more often (counted over all of them, as a worker learns the layout over the session).
    A tie (centred boxes, equal areas, equal shares) is a coin flip: half a correct answer.
    """
    shares: dict[str, dict[str, float]] = {}
    for category, count in category_side_counts({t[0].key: t[0] for t in trials}.values()).items():
        seen = count["left"] + count["right"] + count["centre"]
        shares[category] = {"left": count["left"] / seen if seen else 0.5,
                            "right": count["right"] / seen if seen else 0.5}  # fmt: skip

    def score(mine: float, theirs: float) -> float:
        return 1.0 if mine > theirs + 1e-12 else 0.0 if mine < theirs - 1e-12 else 0.5

    totals = {"left box": 0.0, "right box": 0.0, "larger box": 0.0, "side only": 0.0}
    for image, target, other in trials:
        side = image.side(target)
        left = 0.5 if side is None else float(side == "left")
        totals["left box"] += left
        totals["right box"] += 0.5 if side is None else 1.0 - left
        totals["larger box"] += score(image.areas.get(target, 0.0), image.areas.get(other, 0.0))
        if side is None:
            totals["side only"] += 0.5
        else:
            totals["side only"] += score(shares.get(target, {}).get(side, 0.5), shares.get(other, {}).get(side, 0.5))
    descriptions = {
        "left box": "always picks the category whose box is on the left",
        "right box": "always picks the category whose box is on the right",
        "larger box": "picks the category with the larger box",
        "side only": "sees only which side the map points to (not the picture), picks the category the "
                     "study's images put on that side more often",
    }
    return [ObserverResult(name, descriptions[name], len(trials), total) for name, total in totals.items()]
