"""Stimuli that are no attribution map (issue #16): ``image_only`` and ``nearest_examples``.

A discrimination study on the synthetic world with ``["gradcam", "image_only", "nearest_examples"]``
is prepared inline (SQLite, eager); the PNGs are decoded and checked against an independent
computation: the picture resized with the same filter, and cosine nearest neighbours of features
read by a plain forward hook on the classifier's input.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from explainers.worlds import synthetic
from explainers.zoo import load_model
from studies.fixtures.builders import TEST_CONSENT, synthetic_model_create, synthetic_scenes_import
from studies.lib.rendering import colour_key_rows, rendering_of
from studies.models import ClassifierModel, Image, Item, Job, Study
from studies.pipeline.gpu import explain_runner
from studies.pipeline.prepare import prepare_inline
from studies.pipeline.stimuli import example_gap
from studies.services.study_checks import method_choices, study_config_errors

pytestmark = pytest.mark.django_db

METHODS = ["gradcam", "image_only", "nearest_examples"]
SIZE = 64
N_IMAGES = 7


@pytest.fixture
def cache_dir(settings, tmp_path: Path) -> Path:
    settings.XAISTUDY_FEATURE_CACHE_DIR = str(tmp_path / "features")
    return tmp_path / "features"


@pytest.fixture
def world(tmp_path: Path):
    model = synthetic_model_create(name="m", directory=tmp_path, seed=0)
    return model, synthetic_scenes_import(n=N_IMAGES, seed=7)


def _study(model: ClassifierModel, image_set, *, name: str = "d", options: dict | None = None) -> Study:
    return Study.objects.create(
        name=name, kind=Study.Kind.CLASS_DISCRIMINATION, model=model, image_set=image_set, methods=METHODS,
        catch_trials=1, practice_trials=1, seed=123, consent_text=TEST_CONSENT,
        explainer_options={"display_size": SIZE, "chunk_size": 2, **(options or {})},
    )


def _png(stimulus) -> np.ndarray:
    with default_storage.open(stimulus.file.name, "rb") as handle, PILImage.open(io.BytesIO(handle.read())) as picture:
        return np.asarray(picture.convert("RGB")).astype(np.int64)


def _picture(image: Image, size: int) -> PILImage.Image:
    with default_storage.open(image.file.name, "rb") as handle, PILImage.open(io.BytesIO(handle.read())) as picture:
        return picture.convert("RGB").resize((size, size), PILImage.Resampling.BILINEAR)


def _independent_features(model: ClassifierModel, images: list[Image]) -> np.ndarray:
    """Penultimate features by a plain forward hook on ``classifier`` (the synthetic CNN's head)."""
    loaded = load_model(model.arch, Path(default_storage.path(model.weights.name)), sha256=model.weights_sha256,
                        class_names=model.class_names)
    net = loaded.model.eval()
    seen: list[torch.Tensor] = []
    handle = net.classifier.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach()))
    pixels = np.stack([np.asarray(_picture(i, model.input_size), dtype=np.float32) / 255.0 for i in images])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    x = (x - torch.tensor(model.mean).view(1, 3, 1, 1)) / torch.tensor(model.std).view(1, 3, 1, 1)
    with torch.no_grad():
        net(x)
    handle.remove()
    return seen[0].numpy().astype(np.float64)


def _expected_neighbours(features: np.ndarray, labels: list[set[int]], query: int, target: int, k: int) -> list[int]:
    """Cosine nearest neighbours, the query left out, references of the target class first."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit[query]
    others = [i for i in range(len(features)) if i != query]
    ranked = sorted(others, key=lambda i: (target not in labels[i], -similarity[i], i))
    return ranked[:k]


def _tiles(png: np.ndarray, k: int) -> list[np.ndarray]:
    gap = example_gap(SIZE)
    assert png.shape == (SIZE, k * SIZE + (k - 1) * gap, 3)
    for t in range(1, k):  # white gaps between the tiles
        assert (png[:, t * SIZE + (t - 1) * gap:t * (SIZE + gap)] == 255).all()
    return [png[:, t * (SIZE + gap):t * (SIZE + gap) + SIZE] for t in range(k)]


def _neighbours_of(stimulus, references: list[np.ndarray], k: int) -> list[int]:
    found = []
    for tile in _tiles(_png(stimulus), k):
        matches = [i for i, ref in enumerate(references) if np.array_equal(tile, ref)]
        assert len(matches) == 1, "every tile is exactly one reference picture at the display size"
        found.append(matches[0])
    return found


def test_image_only_and_nearest_examples_are_prepared_from_an_independent_computation(world, cache_dir, monkeypatch):
    model, image_set = world
    study = _study(model, image_set)
    assert study_config_errors(study=study) == {}
    assert {"image_only", "nearest_examples"} <= dict(method_choices()).keys()
    assert colour_key_rows(["image_only", "nearest_examples"]) == []  # no heatmap legend
    assert [row["kind"] for row in colour_key_rows(METHODS)] == ["overlay"]

    calls: list[int] = []
    compute = explain_runner.reference_features_compute
    monkeypatch.setattr(explain_runner, "reference_features_compute",
                        lambda *a, **kw: calls.append(1) or compute(*a, **kw))
    job = prepare_inline(study_id=study.pk)
    assert job.status == Job.Status.DONE, job.error
    assert len(calls) == 1, "the reference set is embedded once, for every chunk"
    cache_files = list(cache_dir.glob("*.npz"))
    assert len(cache_files) == 1

    # catch and practice items show maps only
    assert set(study.items.exclude(role=Item.Role.MAIN).values_list("method", flat=True)) == {"gradcam"}
    main = study.items.filter(role=Item.Role.MAIN).select_related("image", "stimulus_a")
    assert {m: main.filter(method=m).count() for m in METHODS} == {m: main.count() // 3 for m in METHODS}

    # image_only: the picture resized with the same filter, in colour, at the stimulus size
    for item in main.filter(method="image_only"):
        png = _png(item.stimulus_a)
        expected = np.asarray(_picture(item.image, SIZE)).astype(np.int64)
        assert png.shape == (SIZE, SIZE, 3)
        assert np.abs(png - expected).max() <= 1
        assert item.stimulus_a.settings["render"]["kind"] == "picture"
        twin = main.get(method="gradcam", image=item.image, target_class=item.target_class).stimulus_a
        with default_storage.open(item.stimulus_a.file.name, "rb") as a, default_storage.open(twin.file.name, "rb") as b:
            mine, theirs = PILImage.open(io.BytesIO(a.read())), PILImage.open(io.BytesIO(b.read()))
        assert (mine.size, mine.mode, mine.info) == (theirs.size, theirs.mode, theirs.info)  # same PNG path

    # nearest_examples: k = 3 tiles, the neighbours of an independent cosine computation
    references = list(image_set.images.order_by("pk"))
    features = _independent_features(model, references)
    labels = [{synthetic.CLASSES.index(c) for c in ref.categories} for ref in references]
    shown = [np.asarray(_picture(ref, SIZE)).astype(np.int64) for ref in references]
    checked = 0
    for item in main.filter(method="nearest_examples"):
        query = next(i for i, ref in enumerate(references) if ref.pk == item.image_id)
        found = _neighbours_of(item.stimulus_a, shown, 3)
        assert query not in found
        assert found == _expected_neighbours(features, labels, query, item.target_class, 3)
        labelled = sum(item.target_class in labels[i] for i in range(len(references)) if i != query)
        assert [item.target_class in labels[i] for i in found] == [t < labelled for t in range(3)]  # target's first
        checked += 1
    assert checked == main.count() // 3 > 0
    assert rendering_of("nearest_examples") == "examples"

    # a second study on the same model and reference set, k = 2: the features come from the cache
    mtime = cache_files[0].stat().st_mtime_ns
    second = _study(model, image_set, name="d2", options={"nearest_examples": {"k": 2}})
    job = prepare_inline(study_id=second.pk)
    assert job.status == Job.Status.DONE, job.error
    assert len(calls) == 1, "the cached features are reused"
    assert cache_files[0].stat().st_mtime_ns == mtime
    for item in second.items.filter(role=Item.Role.MAIN, method="nearest_examples").select_related("stimulus_a"):
        query = next(i for i, ref in enumerate(references) if ref.pk == item.image_id)
        assert _neighbours_of(item.stimulus_a, shown, 2) == _expected_neighbours(features, labels, query,
                                                                                  item.target_class, 2)


def test_a_named_reference_set_and_bad_options(world, cache_dir):
    model, image_set = world
    other = synthetic_scenes_import(n=5, seed=11, name="reference")
    study = _study(model, image_set, options={"nearest_examples": {"reference_image_set": other.pk, "k": 3}})
    job = prepare_inline(study_id=study.pk)
    assert job.status == Job.Status.DONE, job.error
    references = list(other.images.order_by("pk"))
    features = _independent_features(model, references)
    queries = _independent_features(model, list(image_set.images.order_by("pk")))
    labels = [{synthetic.CLASSES.index(c) for c in ref.categories} for ref in references]
    shown = [np.asarray(_picture(ref, SIZE)).astype(np.int64) for ref in references]
    ids = list(image_set.images.order_by("pk").values_list("pk", flat=True))
    for item in study.items.filter(role=Item.Role.MAIN, method="nearest_examples").select_related("stimulus_a"):
        q = queries[ids.index(item.image_id)]
        unit = features / np.linalg.norm(features, axis=1, keepdims=True)
        similarity = unit @ (q / np.linalg.norm(q))
        expected = sorted(range(len(references)), key=lambda i: (item.target_class not in labels[i], -similarity[i], i))[:3]
        assert _neighbours_of(item.stimulus_a, shown, 3) == expected

    bad = _study(model, image_set, name="bad", options={"nearest_examples": {"k": 3, "neighbours": 5}})
    job = prepare_inline(study_id=bad.pk)
    assert job.status == Job.Status.FAILED
    assert "unknown options ['neighbours']" in job.error


def test_explain_refuses_them_and_a_model_without_a_linear_head_is_refused():
    from torch import nn

    from explainers import explain
    from explainers.methods.examples import penultimate_features

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="no attribution maps"):
        explain(net, torch.rand(1, 3, 8, 8), [0], ["gradcam", "image_only"])
    assert penultimate_features(net, torch.rand(2, 3, 8, 8)).shape == (2, 4)
    with pytest.raises(ValueError, match="has no nn.Linear"):
        penultimate_features(nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                             torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="does not give the logits"):
        penultimate_features(nn.Sequential(nn.Flatten(), nn.Linear(192, 4), nn.Tanh()), torch.rand(1, 3, 8, 8))


def test_the_automatic_metrics_evaluate_the_map_methods_only(tmp_path: Path):
    from studies.models import EvaluationResult
    from studies.pipeline.evaluation import study_evaluate, study_evaluation_current

    study = Study.objects.create(
        name="eval", kind=Study.Kind.CLASS_DISCRIMINATION, model=synthetic_model_create(name="e", directory=tmp_path),
        image_set=synthetic_scenes_import(n=2, seed=31, name="masked", with_masks=True), methods=METHODS, seed=7,
        catch_trials=0, practice_trials=0,
        explainer_options={"display_size": 64, "occlusion": {"window": 16, "stride": 8},
                           "evaluation": {"steps": 4, "sanity_units": 1, "sanity_steps": 2}},
    )
    study_evaluate(study_id=study.pk)
    evaluated = {m for m in EvaluationResult.objects.filter(study=study).values_list("method", flat=True)
                 if not m.startswith("control:")}
    assert evaluated == {"gradcam"}
    assert study_evaluation_current(study=study)
