"""Observers: the rules do what their docstrings say, on maps whose right answer is known."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from studies.models import Item
from studies.simulation.observers import (
    HeatmapReader,
    Scene,
    Trial,
    observer_get,
    perceived_salience,
    region_mass_fraction,
)
from studies.simulation.oracle import scene_for_image
from studies.simulation.toy import heat_render_png, toy_study_create


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _halves(size: int = 32) -> Scene:
    left = np.zeros((size, size), bool)
    left[:, : size // 2] = True
    return Scene(regions={"cat": left, "dog": ~left})


def test_overlay_salience_is_hot_where_the_heat_is() -> None:
    heat = np.zeros((32, 32))
    heat[8:24, 2:12] = 1.0
    photo = np.random.default_rng(0).integers(60, 200, (32, 32, 3), dtype=np.uint8)  # a busy photo
    salience = perceived_salience(heat_render_png(heat, photo))
    assert salience[8:24, 2:12].mean() > 2 * salience[:, 16:].mean()
    assert region_mass_fraction(salience, _halves().regions["cat"]) > 0.6


def test_gradient_salience_reads_deviation_from_grey() -> None:
    grey = np.full((32, 32, 3), 128, np.uint8)
    grey[4:12, 20:30] = (250, 40, 128)  # a strong signed gradient on the right half
    salience = perceived_salience(_png(grey))
    assert salience[4:12, 20:30].min() > 0.5
    assert salience[:, :16].max() == 0.0


def test_heatmap_reader_picks_the_region_with_more_mass() -> None:
    heat = np.zeros((32, 32))
    heat[:, 20:28] = 1.0  # on the dog
    trial = Trial(kind="class_discrimination", stimuli=[heat_render_png(heat)], options=["cat", "dog"])
    rng = np.random.default_rng(1)
    picks = [HeatmapReader(lapse=0.0).answer(trial, _halves(), rng).option for _ in range(50)]
    assert picks == [1] * 50


def test_heatmap_reader_trust_prefers_the_map_on_the_object() -> None:
    on, off = np.zeros((32, 32)), np.zeros((32, 32))
    on[:, 2:14], off[:, 18:30] = 1.0, 1.0
    rng = np.random.default_rng(2)
    reader = HeatmapReader(lapse=0.0)
    as_a = reader.answer(Trial(kind="trust", stimuli=[heat_render_png(on), heat_render_png(off)], class_label="cat"),
                         _halves(), rng)  # fmt: skip
    as_b = reader.answer(Trial(kind="trust", stimuli=[heat_render_png(off), heat_render_png(on)], class_label="cat"),
                         _halves(), rng)  # fmt: skip
    assert (as_a.score, as_b.score) == (2, -2)


def test_heatmap_reader_without_scene_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs the scene"):
        HeatmapReader().answer(Trial(kind="class_discrimination", stimuli=[b""], options=["a", "b"]), None,
                               np.random.default_rng(0))  # fmt: skip


def test_simple_observers_and_unknown_name() -> None:
    rng = np.random.default_rng(3)
    trial = Trial(kind="class_discrimination", stimuli=[b""], options=["a", "b"])
    assert {observer_get("straight_liner").answer(trial, None, rng).option for _ in range(20)} == {0}
    assert {observer_get("random").answer(trial, None, rng).option for _ in range(50)} == {0, 1}
    careless = [observer_get("careless").answer(trial, None, rng).response_ms for _ in range(20)]
    assert max(careless) <= 250
    trust = Trial(kind="trust", stimuli=[b"", b""], class_label="a")
    assert {observer_get("random").answer(trust, None, rng).score for _ in range(200)} == {-2, -1, 0, 1, 2}
    with pytest.raises(ValueError, match="known: .*heatmap_reader"):
        observer_get("oracle")


@pytest.mark.django_db
def test_reader_on_the_toy_study_tracks_the_known_behaviour_of_each_map() -> None:
    study = toy_study_create(n_images=6)
    rng = np.random.default_rng(4)
    reader, guesser = observer_get("heatmap_reader"), observer_get("random")
    hits: dict[tuple[str, str], list[bool]] = {}
    for item in Item.objects.filter(study=study).select_related("image", "stimulus_a"):
        with default_storage.open(item.stimulus_a.file.name, "rb") as handle:
            png = handle.read()
        scene = scene_for_image(image=item.image, width=64, height=64)
        trial = Trial(kind="class_discrimination", stimuli=[png], options=list(item.options))
        for observer in (reader, guesser):
            for _ in range(5):
                answer = observer.answer(trial, scene, rng)
                hits.setdefault((observer.name, item.method), []).append(answer.option == item.correct_option)
    accuracy = {key: float(np.mean(value)) for key, value in hits.items()}
    assert accuracy["heatmap_reader", "focused"] > 0.9
    assert accuracy["heatmap_reader", "misleading"] < 0.2
    assert 0.2 < accuracy["heatmap_reader", "diffuse"] < 0.8
    for method in ("focused", "diffuse", "misleading"):
        assert 0.25 < accuracy["random", method] < 0.75
