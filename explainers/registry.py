"""Method registry: what each explanation method is and which passes it needs.

Job specs name methods as strings; :data:`METHODS` maps each name to a
:class:`MethodSpec` that the engine uses to plan passes (one shared forward, one
backward per (rule, target), separate batched passes for sampled/perturbation methods).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["gradient", "cam", "perturbation", "product", "sampled"]
BackwardRule = Literal["plain", "guided", "deconvnet"]
Output = Literal["channels", "spatial"]


@dataclass(frozen=True)
class MethodSpec:
    """Description of one method.

    Attributes:
        name: registry key.
        family: ``gradient`` (one backward of the shared forward, input gradient),
            ``cam`` (plain backward to the CAM layer), ``product`` (product of two maps
            already computed), ``sampled`` (own batched forward/backward passes on
            modified inputs: SmoothGrad, Integrated Gradients), ``perturbation``
            (forward-only, under ``torch.inference_mode``).
        backward_rule: rectifier rule of the backward it needs from the shared forward,
            or ``None`` when it does not use the shared forward's backward.
        needs_layer: whether it uses the CAM layer.
        output: ``channels`` -> ``[B, C, H, W]`` signed; ``spatial`` -> ``[B, H, W]``.
        requires: other maps it is built from (for ``product`` methods).
        doc: one-line description with the reference.
    """

    name: str
    family: Family
    backward_rule: BackwardRule | None
    needs_layer: bool
    output: Output
    doc: str
    requires: tuple[str, ...] = ()


_SPECS = (
    MethodSpec("saliency", "gradient", "plain", False, "channels",
               "dy_c/dx, signed (Simonyan et al., 2014)"),
    MethodSpec("input_x_gradient", "gradient", "plain", False, "channels",
               "x * dy_c/dx (Shrikumar et al., 2016)"),
    MethodSpec("guided_backprop", "gradient", "guided", False, "channels",
               "gradient with ReLU backward max(g,0)*1[x>0] (Springenberg et al., 2015)"),
    MethodSpec("deconvnet", "gradient", "deconvnet", False, "channels",
               "gradient with ReLU backward max(g,0) (Zeiler & Fergus, 2014)"),
    MethodSpec("smoothgrad", "sampled", None, False, "channels",
               "mean of a gradient method over x + N(0, (noise*(max-min))^2) (Smilkov et al., 2017)"),
    MethodSpec("integrated_gradients", "sampled", None, False, "channels",
               "(x-x') * integral of dy_c/dx along x'->x (Sundararajan et al., 2017)"),
    MethodSpec("gradcam", "cam", "plain", True, "spatial",
               "ReLU(sum_k mean(dy_c/dA_k) A_k), bilinear upsampled (Selvaraju et al., 2017)"),
    MethodSpec("counterfactual_gradcam", "cam", "plain", True, "spatial",
               "Grad-CAM with negated gradients (Selvaraju et al., 2017, sec. 5.3)"),
    MethodSpec("gradcam_plus_plus", "cam", "plain", True, "spatial",
               "Grad-CAM++ weights, eq. 19 (Chattopadhyay et al., 2018)"),
    MethodSpec("guided_gradcam", "product", "guided", True, "channels",
               "guided_backprop * gradcam (Selvaraju et al., 2017)",
               requires=("guided_backprop", "gradcam")),
    MethodSpec("deconv_gradcam", "product", "deconvnet", True, "channels",
               "deconvnet * gradcam (Selvaraju et al., 2017)",
               requires=("deconvnet", "gradcam")),
    MethodSpec("occlusion", "perturbation", None, False, "spatial",
               "mean over windows covering a pixel of y_c(x) - y_c(x occluded) (Zeiler & Fergus, 2014)"),
    MethodSpec("rise", "perturbation", None, False, "spatial",
               "sum_i p_c(x*M_i) M_i / (N p) over random masks (Petsiuk et al., 2018)"),
)

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> MethodSpec:
    """Return the spec of ``name`` or raise a ``ValueError`` listing the known methods."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown explanation method {name!r}; known: {', '.join(METHODS)}"
        ) from None
