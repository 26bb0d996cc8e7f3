"""Metrics on the synthetic world, where the object masks are exact ground truth.

One small CNN is trained once per test session (``trained_synthetic_cnn`` in
``tests/explainers/conftest.py``, a reduced ``TrainConfig``); maps are made from the scenes' masks and corner marks, Grad-CAM comes from
``explainers.explain``.
"""

from __future__ import annotations

import pytest
import torch

from explainers import explain
from explainers.metrics import (
    boxes_to_masks,
    control_explain_fn,
    control_map,
    deletion_insertion,
    energy_in_region,
    localization_error,
    pointing_game,
    sanity_cascade,
    sanity_verdict,
)
from explainers.worlds import synthetic

pytestmark = pytest.mark.slow

N_SCENES = 12


@pytest.fixture(scope="module")
def world(trained_synthetic_cnn):
    model, _, _ = trained_synthetic_cnn  # trained once per session (tests/explainers/conftest.py)
    scenes = synthetic.make_scenes(N_SCENES, seed=99, cue="matched")
    images, _ = synthetic.scenes_to_tensors(scenes)
    targets = torch.tensor([scene.categories[0] for scene in scenes])
    object_masks = torch.stack([scene.masks[0] for scene in scenes])
    mark_maps = torch.zeros(N_SCENES, synthetic.IMAGE_SIZE, synthetic.IMAGE_SIZE)
    for i, category in enumerate(targets.tolist()):
        x0, y0 = synthetic._corner_origin(category, synthetic.IMAGE_SIZE)
        mark_maps[i, y0 : y0 + synthetic.MARK_SIZE, x0 : x0 + synthetic.MARK_SIZE] = 1.0
    return {
        "model": model,
        "scenes": scenes,
        "inputs": synthetic.normalize(images),
        "targets": targets,
        "object_masks": object_masks,
        "boxes": [[scene.boxes[0]] for scene in scenes],
        "mark_maps": mark_maps,
    }


def test_object_mask_map_localizes_and_points(world):
    maps = world["object_masks"].float()
    loc = localization_error(
        maps, predictions=world["targets"], labels=world["targets"], gt_boxes=world["boxes"]
    )
    assert loc.error.tolist() == [0.0] * N_SCENES
    assert loc.best_iou.min().item() == pytest.approx(1.0)
    assert pointing_game(maps, world["object_masks"], tolerance=0).tolist() == [1.0] * N_SCENES
    assert energy_in_region(maps, boxes_to_masks(world["boxes"], (64, 64))).tolist() == [1.0] * N_SCENES


def test_corner_mark_map_fails_localization_and_pointing(world):
    maps = world["mark_maps"]
    mark_pixels = world["scenes"][0].image[:, maps[0] > 0]
    assert torch.allclose(mark_pixels, torch.tensor(synthetic.MARK_COLOR)[:, None])  # the map covers the mark
    loc = localization_error(
        maps, predictions=world["targets"], labels=world["targets"], gt_boxes=world["boxes"]
    )
    assert loc.error.tolist() == [1.0] * N_SCENES
    assert loc.best_iou.max().item() == 0.0
    assert pointing_game(maps, world["object_masks"], tolerance=0).tolist() == [0.0] * N_SCENES
    assert energy_in_region(maps, world["object_masks"]).tolist() == [0.0] * N_SCENES


def test_true_object_map_deletes_faster_than_random(world):
    kwargs = {"steps": 16, "baseline": "blur", "score": "sigmoid", "batch_size": 96}
    model, inputs, targets = world["model"], world["inputs"], world["targets"]
    # Object pixels first (ties broken by a tiny random map), then the rest at random.
    obj = deletion_insertion(
        model,
        inputs,
        targets,
        world["object_masks"].float() + 0.01 * control_map("random", inputs, seed=1),
        **kwargs,
    )
    rnd = deletion_insertion(model, inputs, targets, control_map("random", inputs, seed=2), **kwargs)
    assert obj.auc.mean() < rnd.auc.mean() - 0.05
    assert (obj.auc < rnd.auc).float().mean() >= 0.75


def test_gradcam_passes_cascading_sanity_check_and_sobel_does_not(world):
    model, inputs, targets = world["model"], world["inputs"][:6], world["targets"][:6]

    def gradcam(m, x, t):
        return explain(m, x, t, ["gradcam"])["gradcam"]

    cam = sanity_cascade(model, inputs, targets, gradcam, measures=("spearman_abs", "ssim"))
    assert cam.layers[0] == "classifier"
    assert len(cam.layers) == 5
    verdict = sanity_verdict(cam)
    assert verdict.passed, (verdict, cam.curve())
    edges = sanity_cascade(
        model, inputs, targets, control_explain_fn("sobel"), measures=("spearman_abs", "ssim")
    )
    assert torch.allclose(edges.similarity["spearman_abs"], torch.ones(5, 6), atol=1e-5)
    assert torch.allclose(edges.similarity["ssim"], torch.ones(5, 6), atol=1e-5)
    assert not sanity_verdict(edges).passed
