"""Control explainers: seeded random, Sobel edges, centred Gaussian."""

from __future__ import annotations

import pytest
import torch

from explainers.metrics import control_explain_fn, control_map


def test_random_control_is_seeded():
    images = torch.zeros(2, 3, 6, 5)
    a, b = control_map("random", images, seed=3), control_map("random", images, seed=3)
    assert a.shape == (2, 6, 5)
    assert torch.equal(a, b)
    assert not torch.equal(a, control_map("random", images, seed=4))
    assert 0 <= a.min()
    assert a.max() < 1


def test_sobel_of_a_vertical_step_edge():
    images = torch.zeros(1, 3, 5, 6)
    images[..., 3:] = 1.0  # step between columns 2 and 3
    edges = control_map("sobel", images)
    # Gx = (1 + 2 + 1) * 1 at the two columns beside the step, 0 elsewhere; Gy = 0.
    assert edges[0, :, 2].tolist() == [4.0] * 5
    assert edges[0, :, 3].tolist() == [4.0] * 5
    assert edges[0, :, [0, 1, 4, 5]].abs().max() == 0
    assert control_map("sobel", torch.full((1, 3, 4, 4), 0.3)).abs().max() < 1e-6


def test_gaussian_control_is_centred():
    g = control_map("gaussian", torch.zeros(1, 1, 9, 9), sigma=0.25)[0]
    assert g[4, 4].item() == pytest.approx(1.0)
    assert torch.allclose(g, g.flip(0))
    assert torch.allclose(g, g.T)
    # one pixel off centre: exp(-1 / (2 * 2.25^2))
    assert g[4, 5].item() == pytest.approx(float(torch.exp(torch.tensor(-1 / (2 * 2.25**2)))))


def test_control_explain_fn_ignores_model_and_bad_kind():
    fn = control_explain_fn("sobel")
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(fn(None, images, [0, 1]), control_map("sobel", images))
    with pytest.raises(ValueError, match="kind"):
        control_map("edges", images)
