"""Deletion / insertion curves: hand-computed tiny cases and Quantus PixelFlipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from explainers.metrics import deletion_insertion, make_baseline, perturbation_curves
from explainers.metrics.deletion import gaussian_blur


def sum_model() -> nn.Module:
    """logit_0 = sum of all pixels, logit_1 = 0, so p_0 = sigmoid(sum)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    return model.eval()


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


IMAGE = torch.tensor([[[[1.0, 2.0], [3.0, -1.0]]]])  # [1, 1, 2, 2]
MAP = torch.tensor([[[0.4, 0.1], [0.9, 0.5]]])  # ranks: 3.0 (0.9), -1 (0.5), 1 (0.4), 2 (0.1)


def test_deletion_zero_baseline_matches_hand_computation():
    result = deletion_insertion(sum_model(), IMAGE, [0], MAP, mode="deletion", steps=4, baseline="zero")
    sums = [5.0, 2.0, 3.0, 2.0, 0.0]  # remove 3, then -1, then 1, then 2
    expected = [sigmoid(s) for s in sums]
    assert result.fractions.tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert result.probs[0].tolist() == pytest.approx(expected, abs=1e-6)
    auc = sum(0.25 * (expected[i] + expected[i + 1]) / 2 for i in range(4))
    assert result.auc.item() == pytest.approx(auc, abs=1e-6)


def test_insertion_zero_baseline_matches_hand_computation():
    result = deletion_insertion(sum_model(), IMAGE, [0], MAP, mode="insertion", steps=4, baseline="zero")
    sums = [0.0, 3.0, 2.0, 3.0, 5.0]  # insert 3, then -1, then 1, then 2
    assert result.probs[0].tolist() == pytest.approx([sigmoid(s) for s in sums], abs=1e-6)


def test_second_class_and_two_steps():
    result = deletion_insertion(sum_model(), IMAGE, [1], MAP, mode="deletion", steps=2, baseline="zero")
    # counts round(0, 2, 4): p_1 = 1 - sigmoid(sum)
    assert result.probs[0].tolist() == pytest.approx([1 - sigmoid(5.0), 1 - sigmoid(3.0), 0.5], abs=1e-6)


def test_logit_score_and_constant_baseline():
    result = deletion_insertion(sum_model(), IMAGE, [0], MAP, steps=4, baseline=10.0, score="logit")
    assert result.probs[0].tolist() == pytest.approx([5.0, 12.0, 23.0, 32.0, 40.0])


def test_patches_are_removed_together():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = 1.0
    saliency = torch.zeros(1, 4, 4)
    saliency[0, 2:, 2:] = 3.0  # bottom-right patch first
    saliency[0, :2, :2] = 2.0  # then top-left
    result = deletion_insertion(
        model.eval(), image, [0], saliency, steps=4, patch=2, baseline="zero", score="logit"
    )
    total = image.sum().item()
    br, tl, tr = (10 + 11 + 14 + 15), (0 + 1 + 4 + 5), (2 + 3 + 6 + 7)
    expected = [total, total - br, total - br - tl, total - br - tl - tr, 0.0]
    assert result.probs[0].tolist() == pytest.approx(expected)


def test_chunking_and_curve_sharing_do_not_change_results():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    ).eval()
    images, maps = torch.randn(5, 3, 8, 8), torch.rand(5, 8, 8)
    targets = torch.tensor([0, 1, 2, 0, 1])
    both = perturbation_curves(model, images, targets, maps, steps=8, batch_size=7, baseline="mean")
    alone = deletion_insertion(model, images, targets, maps, steps=8, batch_size=1000, baseline="mean")
    assert torch.allclose(both["deletion"].probs, alone.probs, atol=1e-6)
    # Insertion ends where deletion starts (the image) and vice versa (the baseline).
    assert torch.allclose(both["insertion"].probs[:, -1], both["deletion"].probs[:, 0])
    assert torch.allclose(both["insertion"].probs[:, 0], both["deletion"].probs[:, -1])


def test_gradient_maps_are_reduced_and_resized():
    model = sum_model()
    low_res = MAP[:, None]  # [B, 1, 2, 2] gradient-style map with one channel
    a = deletion_insertion(model, IMAGE, [0], low_res, steps=4, baseline="zero")
    b = deletion_insertion(model, IMAGE, [0], MAP.abs(), steps=4, baseline="zero")
    assert torch.equal(a.probs, b.probs)


def test_model_flags_restored_and_no_parameter_gradients():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.Dropout(0.5))
    model.train()
    deletion_insertion(model, IMAGE, [0], MAP, steps=2)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_baselines():
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(make_baseline(images, "zero"), torch.zeros_like(images))
    mean = make_baseline(images, "mean")
    assert torch.allclose(mean[:, :, 0, 0], images.mean(dim=(2, 3)))
    constant = torch.full((1, 3, 16, 16), 0.7)
    assert torch.allclose(gaussian_blur(constant, 3.0), constant, atol=1e-6)  # kernel sums to 1
    blurred = make_baseline(images, "blur", blur_sigma=2.0)
    assert blurred.std() < images.std()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch": 3}, "patch=3"),
        ({"steps": 0}, "steps"),
        ({"baseline": "noise"}, "baseline"),
        ({"score": "prob"}, "score"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        deletion_insertion(sum_model(), IMAGE, [0], MAP, **kwargs)


def test_wrong_number_of_targets_or_maps():
    with pytest.raises(ValueError, match="targets"):
        deletion_insertion(sum_model(), IMAGE, [0, 1], MAP)
    with pytest.raises(ValueError, match="maps"):
        deletion_insertion(sum_model(), IMAGE, [0], MAP.expand(2, 2, 2))


def test_equals_quantus_pixel_flipping_at_equal_settings():
    """Quantus PixelFlipping = our deletion curve without its first (unperturbed) point.

    Equal settings: zero baseline (``perturb_baseline=0.0``), softmax, no abs/normalise,
    ``features_in_step = k`` pixels per step. Single-channel images: Quantus ranks the map
    broadcast over the channels and requires ``features_in_step`` to divide H * W, so with three
    channels its steps would split a pixel's channels between steps (ours never do).
    """
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    ).eval()
    images = torch.randn(4, 1, 8, 8)
    maps = torch.rand(4, 8, 8)
    targets = np.array([0, 1, 2, 1])
    k = 4  # pixels per step -> 16 steps
    metric = quantus.PixelFlipping(
        features_in_step=k, perturb_baseline=0.0, abs=False, normalise=False, disable_warnings=True
    )
    q = np.array(
        metric(
            model=model,
            x_batch=images.numpy(),
            y_batch=targets,
            a_batch=maps[:, None].numpy(),
            softmax=True,
            device="cpu",
            batch_size=4,
        )
    )
    ours = deletion_insertion(model, images, targets.tolist(), maps, steps=64 // k, baseline="zero")
    assert q.shape == (4, 16)
    np.testing.assert_allclose(ours.probs[:, 1:].numpy(), q, atol=1e-5)


def test_sigmoid_score_for_multi_label_models():
    result = deletion_insertion(sum_model(), IMAGE, [0], MAP, steps=4, baseline="zero", score="sigmoid")
    assert result.probs[0].tolist() == pytest.approx(
        [sigmoid(s) for s in (5.0, 2.0, 3.0, 2.0, 0.0)], abs=1e-6
    )
