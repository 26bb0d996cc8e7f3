"""WSL boxes, localization error, pointing game and energy: hand values and Quantus."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from explainers.metrics import (
    box_iou,
    boxes_to_masks,
    energy_in_region,
    localization_error,
    pointing_game,
    wsl_boxes,
)


def two_blobs() -> torch.Tensor:
    m = torch.zeros(1, 10, 10)
    m[0, 1:3, 1:3] = 1.0  # 4 px, holds the maximum
    m[0, 5:9, 4:7] = 0.5  # 12 px, larger
    m[0, 4, 3] = 0.2  # diagonal neighbour of (5, 4): joins the big blob under 8-connectivity
    m[0, 0, 9] = 0.1  # below 15 % of the max: ignored
    return m


def test_wsl_box_is_the_largest_component():
    box = wsl_boxes(two_blobs())[0].tolist()
    assert box == [3.0, 4.0, 7.0, 9.0]  # x0, y0, x1, y1 half-open
    assert wsl_boxes(two_blobs(), threshold=0.6)[0].tolist() == [1.0, 1.0, 3.0, 3.0]


def test_wsl_box_is_nan_without_positive_values():
    assert torch.isnan(wsl_boxes(-torch.ones(1, 4, 4))).all()


def test_box_iou_hand_values():
    iou = box_iou((0, 0, 4, 4), [(0, 0, 4, 4), (2, 0, 6, 4), (10, 10, 12, 12)])
    assert iou.tolist() == pytest.approx([1.0, 8 / 24, 0.0])


def test_localization_error_rule():
    maps = two_blobs().expand(4, 10, 10)
    gt = [[(3, 4, 7, 9)], [(3, 4, 7, 9)], [(0, 0, 2, 2), (3, 4, 7, 8)], []]
    result = localization_error(maps, predictions=[1, 2, 1, 1], labels=[1, 1, 1, 1], gt_boxes=gt)
    # 0: right class, IoU 1. 1: wrong class. 2: best IoU 16/20 = 0.8. 3: no box for the class.
    assert result.correct_class.tolist() == [True, False, True, True]
    assert result.best_iou[:3].tolist() == pytest.approx([1.0, 1.0, 0.8])
    assert result.error[:3].tolist() == [0.0, 1.0, 0.0]
    assert math.isnan(result.error[3].item())
    low = localization_error(maps[:1], predictions=[1], labels=[1], gt_boxes=[[(3, 4, 7, 6)]])
    assert low.best_iou.item() == pytest.approx(8 / 20)
    assert low.error.item() == 1.0


def test_localization_error_checks_lengths():
    with pytest.raises(ValueError, match="gt_boxes"):
        localization_error(torch.rand(2, 4, 4), predictions=[0, 0], labels=[0, 0], gt_boxes=[[]])


def test_boxes_to_masks_half_open():
    masks = boxes_to_masks([[(1, 2, 3, 4)], []], (5, 5))
    assert masks[0].sum().item() == 4
    assert masks[0, 2:4, 1:3].all()
    assert masks[1].sum().item() == 0


def test_pointing_game_tolerance_ties_and_empty():
    regions = torch.zeros(4, 20, 20, dtype=torch.bool)
    regions[:3, 5:8, 5:8] = True
    maps = torch.zeros(4, 20, 20)
    maps[0, 6, 6] = 1.0  # on the object
    maps[1, 6, 10] = 1.0  # 3 px right of column 7
    maps[2, 6, 6] = maps[2, 15, 15] = 1.0  # tie: one of two maxima on the object
    maps[3, 0, 0] = 1.0  # no object of the class
    strict = pointing_game(maps, regions, tolerance=0)
    assert strict[:3].tolist() == [1.0, 0.0, 0.5]
    assert math.isnan(strict[3].item())
    assert pointing_game(maps, regions, tolerance=2.9)[1].item() == 0.0
    assert pointing_game(maps, regions, tolerance=3.0)[1].item() == 1.0
    assert pointing_game(maps, regions)[:2].tolist() == [1.0, 1.0]  # default 15 px


def test_energy_in_region_hand_values():
    maps = torch.tensor([[[1.0, 2.0], [3.0, -4.0]], [[0.0, 0.0], [0.0, -1.0]]])
    regions = torch.tensor([[[True, False], [True, True]], [[True, True], [False, False]]])
    energy = energy_in_region(maps, regions)
    assert energy[0].item() == pytest.approx(4 / 6)  # negative values carry no energy
    assert math.isnan(energy[1].item())  # no positive energy at all
    assert math.isnan(energy_in_region(maps[:1], torch.zeros(1, 2, 2, dtype=torch.bool)).item())


def test_map_is_resized_to_the_mask():
    coarse = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    regions = torch.zeros(1, 8, 8, dtype=torch.bool)
    regions[0, :4] = True
    # bilinear 2 -> 8 rows (half-pixel centres): 1, 1, .875, .625, .375, .125, 0, 0
    assert energy_in_region(coarse, regions).item() == pytest.approx(3.5 / 4.0)


def test_regions_are_validated():
    with pytest.raises(ValueError, match="regions"):
        pointing_game(torch.rand(2, 4, 4), torch.zeros(3, 4, 4, dtype=torch.bool))


@pytest.fixture(scope="module")
def random_localization_batch():
    rng = np.random.default_rng(0)
    maps = rng.random((6, 1, 12, 12)).astype(np.float32)
    masks = np.zeros((6, 1, 12, 12), dtype=bool)
    for i in range(6):
        y, x = rng.integers(0, 8, size=2)
        masks[i, 0, y : y + 5, x : x + 5] = True
    masks[0, 0][np.unravel_index(maps[0, 0].argmax(), (12, 12))] = True  # make sure of one hit
    return maps, masks


def test_pointing_game_equals_quantus_without_tolerance(random_localization_batch):
    """Same as quantus.PointingGame when the mask is non-empty and tolerance is 0.

    Quantus differs on empty masks: it writes NaN into a bool array, so they count as hits
    (see test_pointing_game_tolerance_ties_and_empty for our NaN), and it has no tolerance.
    """
    quantus = pytest.importorskip("quantus")
    maps, masks = random_localization_batch
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 2)).eval()
    q = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)(
        model=model,
        x_batch=np.zeros((6, 1, 12, 12), np.float32),
        y_batch=np.zeros(6, int),
        a_batch=maps,
        s_batch=masks,
        device="cpu",
    )
    ours = pointing_game(torch.from_numpy(maps[:, 0]), torch.from_numpy(masks[:, 0]), tolerance=0)
    assert ours.tolist() == [float(v) for v in q]
    assert 0 < ours.sum() < 6  # the batch has both hits and misses


def test_energy_equals_quantus_relevance_mass_accuracy(random_localization_batch):
    """Equal to quantus.RelevanceMassAccuracy for non-negative maps (it does not clip negatives)."""
    quantus = pytest.importorskip("quantus")
    maps, masks = random_localization_batch
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 2)).eval()
    q = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)(
        model=model,
        x_batch=np.zeros((6, 1, 12, 12), np.float32),
        y_batch=np.zeros(6, int),
        a_batch=maps,
        s_batch=masks,
        device="cpu",
    )
    ours = energy_in_region(torch.from_numpy(maps[:, 0]), torch.from_numpy(masks[:, 0]))
    np.testing.assert_allclose(ours.numpy(), np.asarray(q), rtol=1e-5)
