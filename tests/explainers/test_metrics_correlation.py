"""Spearman rank correlation and the occlusion-map comparison."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from explainers.metrics import occlusion_rank_correlation, pearson, rankdata, spearman


def test_rankdata_averages_ties():
    values = torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    assert rankdata(values).tolist() == [[4.0, 1.0, 4.0, 2.0, 4.0], [2.5, 2.5, 2.5, 2.5, 5.0]]


def test_spearman_hand_values():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    b = torch.tensor([[10.0, 20.0, 30.0, 400.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    rho = spearman(a, b)
    assert rho[0].item() == pytest.approx(1.0)  # any increasing transform
    assert rho[1].item() == pytest.approx(-1.0)
    assert math.isnan(rho[2].item())  # constant map: no ranking
    # [1, 2, 3] vs [1, 3, 2]: d = (0, 1, 1), rho = 1 - 6 * 2 / (3 * 8) = 0.5
    assert spearman(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 3.0, 2.0]])).item() == pytest.approx(
        0.5
    )


def test_spearman_and_pearson_match_scipy_with_ties():
    torch.manual_seed(0)
    a = torch.randint(0, 5, (3, 40)).float()
    b = torch.randn(3, 40)
    for i in range(3):
        assert spearman(a, b)[i].item() == pytest.approx(stats.spearmanr(a[i], b[i]).statistic, abs=1e-6)
        assert pearson(a, b)[i].item() == pytest.approx(stats.pearsonr(a[i], b[i]).statistic, abs=1e-6)


def test_occlusion_correlation_at_common_resolution():
    coarse = torch.tensor([[[1.0, 3.0], [2.0, 4.0]]])
    fine = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)  # 8x8 blocky copy
    fine = fine + 0.01 * torch.rand(1, 8, 8)  # detail below the occlusion grid's resolution
    assert occlusion_rank_correlation(fine, coarse).item() == pytest.approx(1.0)
    assert occlusion_rank_correlation(fine, -coarse).item() == pytest.approx(-1.0)
    assert occlusion_rank_correlation(fine[:, None].expand(1, 3, 8, 8), coarse).item() == pytest.approx(1.0)


def test_occlusion_correlation_errors_name_the_argument():
    with pytest.raises(ValueError, match="occlusion_maps"):
        occlusion_rank_correlation(torch.rand(2, 4, 4), torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="maps must be"):
        occlusion_rank_correlation(torch.rand(4, 4), torch.rand(1, 4, 4))
