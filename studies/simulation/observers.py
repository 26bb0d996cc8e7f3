"""Simulated observers: explicit, simple models of a person answering a trial. Not people.

An observer gets what a participant gets (the ``Trial``: the PNG bytes the server serves, the
options in their displayed order, the class a trust trial asks about) plus, for the observers
that need it, a ``Scene``: where each category's object is in the image. The scene comes from
``studies.simulation.oracle`` and stands for the person's own knowledge of the picture ("that
blob is on the dog"); it never includes which option is right, which method made the map, or
anything else the platform stores about the item.

The rules and their parameters were fixed before any study was run and are not fitted to any
published result (see ``docs/operations.md``). They exist to exercise the platform, to check
that the analysis recovers a known effect, and to pilot a study before paying people; their
accuracies say nothing about how people would judge the same maps.

Observers:

- ``random``: each displayed option, or each of the five trust answers, with equal probability.
- ``heatmap_reader``: reads the map's perceived salience (``perceived_salience``), computes the
  fraction of the total salience inside each option's object region, adds independent Gaussian
  perception noise (sd ``noise``) to each fraction and picks the larger; with probability
  ``lapse`` it answers at random instead. For trust it compares the two robots' fractions on
  the asked class's object, ``d = f_A - f_B + noise``, and answers ``+2 / +1 / 0 / -1 / -2`` by
  the thresholds ``+-strong`` and ``+-weak``.
- ``straight_liner``: always the first displayed option; in trust always the same answer.
- ``careless``: random answers given in ``careless_ms`` (too fast to have looked).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image as PILImage

TRUST_SCORES = (-2, -1, 0, 1, 2)


@dataclass(frozen=True)
class Trial:
    """What a participant sees on one trial.

    Attributes:
        kind: ``class_discrimination`` or ``trust``.
        stimuli: PNG bytes as served; one for discrimination, ``[robot A, robot B]`` for trust.
        options: category names in displayed order (discrimination).
        class_label: the category a trust trial asks about.
        role: ``main``, ``catch`` or ``practice``, as the page says (unused by the rules).
    """

    kind: str
    stimuli: list[bytes]
    options: list[str] = field(default_factory=list)
    class_label: str = ""
    role: str = "main"


@dataclass(frozen=True)
class Scene:
    """Where each category's object lies, as boolean masks at the stimulus's display size."""

    regions: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Answer:
    """An observer's answer: a displayed option index, or a trust score towards Robot A."""

    option: int | None = None
    score: int | None = None
    response_ms: int = 2000


class Observer(Protocol):
    name: str
    needs_scene: bool

    def answer(self, trial: Trial, scene: Scene | None, rng: np.random.Generator) -> Answer: ...


def _human_time(rng: np.random.Generator) -> int:
    """A deliberate person's response time: log-normal, median 2.5 s (a fixed, a-priori choice)."""
    return int(min(30_000, rng.lognormal(mean=math.log(2500), sigma=0.4)))


def _random_answer(trial: Trial, rng: np.random.Generator, response_ms: int) -> Answer:
    if trial.kind == "trust":
        return Answer(score=int(rng.choice(TRUST_SCORES)), response_ms=response_ms)
    return Answer(option=int(rng.integers(len(trial.options))), response_ms=response_ms)


def perceived_salience(png: bytes) -> np.ndarray:
    """How salient each pixel of a rendered explanation looks, in ``[0, 1]`` (``H x W``).

    Two renderings are recognised from the pixels alone, as a person would recognise them:

    - a signed gradient image (Guided Backprop, Guided Grad-CAM, ...: zero is mid-grey, and most
      pixels are near-grey): salience is the mean absolute deviation of the channels from
      mid-grey, ``|v - 128| / 128``;
    - a colour-map overlay (Grad-CAM, occlusion, ...: ``jet`` blended with the photo): salience is
      the map's warmth ``(R - B)``, shifted so the coldest 5% of pixels read as zero and scaled to
      ``[0, 1]``. Red reads hot, blue cold, whatever the photo underneath adds (so a red object
      under a cold map reads warm: a known confound of this reading, see docs/operations.md).
    """
    rgb = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    grey_like = np.median(chroma) < 30 and 96 <= np.median(rgb) <= 160
    if grey_like:
        salience = np.abs(rgb - 128.0).mean(axis=2) / 128.0
    else:
        warmth = rgb[..., 0] - rgb[..., 2]
        salience = np.clip(warmth - np.percentile(warmth, 5), 0, None)
    top = float(salience.max())
    return salience / top if top > 0 else salience


def region_mass_fraction(salience: np.ndarray, region: np.ndarray) -> float:
    """Fraction of the total salience inside ``region`` (0 when the map is blank)."""
    total = float(salience.sum())
    return float(salience[region].sum()) / total if total > 0 else 0.0


@dataclass(frozen=True)
class RandomObserver:
    name: str = "random"
    needs_scene: bool = False

    def answer(self, trial: Trial, scene: Scene | None, rng: np.random.Generator) -> Answer:
        return _random_answer(trial, rng, _human_time(rng))


@dataclass(frozen=True)
class StraightLiner:
    name: str = "straight_liner"
    needs_scene: bool = False
    score: int = 2

    def answer(self, trial: Trial, scene: Scene | None, rng: np.random.Generator) -> Answer:
        if trial.kind == "trust":
            return Answer(score=self.score, response_ms=_human_time(rng))
        return Answer(option=0, response_ms=_human_time(rng))


@dataclass(frozen=True)
class CarelessObserver:
    name: str = "careless"
    needs_scene: bool = False
    careless_ms: int = 250

    def answer(self, trial: Trial, scene: Scene | None, rng: np.random.Generator) -> Answer:
        return _random_answer(trial, rng, int(rng.integers(self.careless_ms // 2, self.careless_ms + 1)))


@dataclass(frozen=True)
class HeatmapReader:
    """Picks the option whose object holds more of the map's salience (see module docstring).

    Attributes:
        noise: sd of the Gaussian noise added to each perceived mass fraction.
        lapse: probability of an attention lapse (a random answer).
        weak, strong: trust thresholds on the difference of fractions.
    """

    name: str = "heatmap_reader"
    needs_scene: bool = True
    noise: float = 0.05
    lapse: float = 0.05
    weak: float = 0.05
    strong: float = 0.20

    def _fraction(self, png: bytes, scene: Scene, category: str) -> float:
        salience = perceived_salience(png)
        region = scene.regions.get(category)
        if region is None:
            return 0.0
        if region.shape != salience.shape:
            region = _resize_mask(region, salience.shape)
        return region_mass_fraction(salience, region)

    def answer(self, trial: Trial, scene: Scene | None, rng: np.random.Generator) -> Answer:
        if scene is None:
            raise ValueError("heatmap_reader needs the scene (where each object is)")
        response_ms = _human_time(rng)
        if rng.random() < self.lapse:
            return _random_answer(trial, rng, response_ms)
        if trial.kind == "trust":
            f_a, f_b = (self._fraction(png, scene, trial.class_label) for png in trial.stimuli[:2])
            d = f_a - f_b + rng.normal(0, self.noise)
            score = 2 if d > self.strong else 1 if d > self.weak else -2 if d < -self.strong else -1 if d < -self.weak else 0
            return Answer(score=score, response_ms=response_ms)
        perceived = [self._fraction(trial.stimuli[0], scene, option) + rng.normal(0, self.noise)
                     for option in trial.options]  # fmt: skip
        return Answer(option=int(np.argmax(perceived)), response_ms=response_ms)


def _resize_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    picture = PILImage.fromarray(mask.astype(np.uint8) * 255)
    resized = picture.resize((shape[1], shape[0]), PILImage.Resampling.NEAREST)
    return np.asarray(resized) > 127


OBSERVERS: dict[str, Callable[[], Observer]] = {
    "random": RandomObserver,
    "heatmap_reader": HeatmapReader,
    "straight_liner": StraightLiner,
    "careless": CarelessObserver,
}


def observer_get(name: str) -> Observer:
    """The observer called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return OBSERVERS[name]()
    except KeyError:
        raise ValueError(f"unknown observer {name!r}; known: {sorted(OBSERVERS)}") from None
