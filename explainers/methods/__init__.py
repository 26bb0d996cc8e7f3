"""Explanation methods as plain functions on tensors (the engine plans their passes)."""

from explainers.methods.cam import counterfactual_gradcam, gradcam, gradcam_plus_plus, upsample
from explainers.methods.integrated import integrated_gradients, quadrature
from explainers.methods.perturbation import occlusion, rise, rise_masks
from explainers.methods.smooth import smoothgrad

__all__ = [
    "counterfactual_gradcam",
    "gradcam",
    "gradcam_plus_plus",
    "integrated_gradients",
    "occlusion",
    "quadrature",
    "rise",
    "rise_masks",
    "smoothgrad",
    "upsample",
]
