"""LIME against Captum ``Lime`` with the same segmentation, the same samples and the same kernel.

Captum gets our superpixels as ``feature_mask``, a ``perturb_func`` that hands back our pre-drawn
binary masks in order, its own default similarity (``get_exp_kernel_similarity_function()``:
exponential kernel on the cosine distance of the images) and its own default
``from_interp_rep_transform`` (``z[s] * x + (1 - z[s]) * baseline``). The linear model is the one
thing not Captum's: its ridge (``SkLearnRidge``) needs scikit-learn, which is not installed, and
its torch ``SGDRidge`` is iterative; it is given our closed-form ridge as ``interpretable_model``.
So the comparison checks the sampling, the perturbation, the kernel, the scoring and the plumbing
(which mask goes with which score and weight); the ridge is checked on its own against the normal
equations solved another way.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

from explainers import explain
from explainers.methods.lime import lime_samples, ridge, superpixels
from tests.explainers._tools import max_rel as _rel

captum_attr = pytest.importorskip("captum.attr")
pytest.importorskip("skimage")
from captum._utils.models.model import Model  # noqa: E402


class _ClosedFormRidge(Model):
    """Captum's interpretable-model interface around :func:`explainers.methods.lime.ridge`."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.beta: torch.Tensor | None = None

    def fit(self, train_data, **kwargs):
        xs, ys, ws = zip(*train_data)
        self.beta, self.bias = ridge(torch.cat(xs), torch.cat(ys).flatten(), torch.cat(ws), self.alpha)
        return {}

    def representation(self) -> torch.Tensor:
        return self.beta

    def __call__(self, x):
        return x @ self.beta + self.bias


def _small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


class _Softmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(dim=1)


def _captum(model, images, classes, segmentation, samples, seed, baseline, alpha):
    """Captum Lime, one image at a time, fed the same binary samples as ours."""
    out = []
    for b in range(images.shape[0]):
        features = int(segmentation[b].max()) + 1
        drawn = iter(lime_samples(features, samples, seed).long())

        def perturb(original, **kwargs):
            return next(drawn).unsqueeze(0)

        explainer = captum_attr.Lime(model, interpretable_model=_ClosedFormRidge(alpha), perturb_func=perturb)
        base = baseline[b:b + 1] if isinstance(baseline, torch.Tensor) else baseline
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attr = explainer.attribute(images[b:b + 1], target=int(classes[b]), baselines=base,
                                       feature_mask=segmentation[b].view(1, 1, *segmentation.shape[1:]),
                                       n_samples=samples, perturbations_per_eval=16)
        assert torch.equal(attr[0, 0], attr[0, -1])  # one coefficient per pixel, all channels
        out.append(attr[0, 0])
    return torch.stack(out)


@pytest.mark.parametrize(("arch", "size"), [("small", 32), ("resnet18", 64)])
@pytest.mark.parametrize("score", ["softmax", "logit"])
def test_lime_matches_captum(arch: str, size: int, score: str) -> None:
    model = _small() if arch == "small" else _resnet()
    torch.manual_seed(1)
    images = torch.randn(2, 3, size, size)
    images[:, :, : size // 2] += 1.0  # some structure for SLIC
    classes = torch.tensor([3, 7])
    samples, seed = 60, 5
    ours = explain(model, images, classes, ["lime"], fast=False,
                   options={"lime": {"samples": samples, "seed": seed, "segments": 12, "score": score,
                                     "batch_size": 24}})["lime"]
    segmentation = superpixels(images, 12)
    assert segmentation.shape == (2, size, size)
    assert int(segmentation.max()) >= 3
    reference = _captum(_Softmax(model) if score == "softmax" else model, images, classes, segmentation,
                        samples, seed, 0.0, 1.0)
    assert ours.shape == (2, size, size)
    assert _rel(ours, reference) < 1e-4


def test_lime_mean_baseline_and_targets_matrix() -> None:
    model = _small()
    torch.manual_seed(2)
    images = torch.randn(2, 3, 32, 32)
    options = {"lime": {"samples": 40, "segments": 10, "baseline": "mean", "alpha": 0.5}}
    both = explain(model, images, torch.tensor([[1, 4], [4, 2]]), ["lime"], fast=False, options=options)["lime"]
    assert both.shape == (2, 2, 32, 32)
    single = explain(model, images, torch.tensor([4, 2]), ["lime"], fast=False, options=options)["lime"]
    torch.testing.assert_close(both[:, 1], single, rtol=1e-5, atol=1e-7)
    segmentation = superpixels(images, 10)
    mean = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    reference = _captum(_Softmax(model), images, torch.tensor([4, 2]), segmentation, 40, 0, mean, 0.5)
    assert _rel(single, reference) < 1e-4


def test_lime_same_image_same_map_whatever_the_batch() -> None:
    model = _small()
    torch.manual_seed(3)
    images = torch.randn(3, 3, 32, 32)
    options = {"lime": {"samples": 30, "segments": 8}}
    batch = explain(model, images, torch.tensor([1, 2, 3]), ["lime"], options=options)["lime"]
    alone = explain(model, images[1:2], torch.tensor([2]), ["lime"], options=options)["lime"]
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-4, atol=1e-6)
    # fast copy against the model as given
    exact = explain(model, images, torch.tensor([1, 2, 3]), ["lime"], options=options, fast=False)["lime"]
    assert float((batch - exact).norm() / exact.norm()) < 1e-4


def test_ridge_closed_form() -> None:
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(50, 6, generator=generator) < 0.5).float()
    y = torch.randn(50, 2, generator=generator)
    w = torch.rand(50, generator=generator)
    beta, bias = ridge(x, y, w, 0.7)
    # the same objective through an augmented least-squares problem (intercept unpenalised)
    sw = w.double().sqrt()[:, None]
    design = torch.cat([x.double(), torch.ones(50, 1, dtype=torch.float64)], dim=1) * sw
    penalty = torch.cat([0.7 ** 0.5 * torch.eye(6, dtype=torch.float64), torch.zeros(6, 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(torch.cat([design, penalty]),
                                  torch.cat([y.double() * sw, torch.zeros(6, 2, dtype=torch.float64)])).solution
    torch.testing.assert_close(beta.double(), solution[:6], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bias.double(), solution[6], rtol=1e-5, atol=1e-6)


def test_lime_options_refused() -> None:
    model = _small()
    images = torch.randn(1, 3, 32, 32)
    for bad in ({"samples": 0}, {"segments": 0}, {"baseline": "median"}, {"score": "prob"},
                {"kernel_width": 0.0}, {"alpha": -1.0}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            explain(model, images, [0], ["lime"], options={"lime": bad})
    with pytest.raises(ValueError, match="out of range"):
        explain(model, images, [10], ["lime"], options={"lime": {"samples": 4}})
