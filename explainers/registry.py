"""Method registry: what each explanation method is and which passes it needs.

Job specs name methods as strings; :data:`METHODS` maps each name to a
:class:`MethodSpec` that the engine uses to plan passes (one shared forward, one
backward per (rule, target), separate batched passes for sampled/perturbation methods).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["gradient", "cam", "perturbation", "product", "sampled", "rule", "activation"]
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
            (forward-only, under ``torch.inference_mode``), ``rule`` (own batched
            forward/backward with modified backward rules: DeepLIFT, LRP, excitation backprop).
            ``activation`` (forward-only CAM family members: one forward under
            ``torch.inference_mode`` keeps the CAM layer's activation, then the method's own
            weights, with its own batched forwards for ScoreCAM / AblationCAM).
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
    # --- rule-based and surrogate methods (deeplift, lrp, excitation, lime) ---
    MethodSpec("deeplift", "rule", None, False, "channels",
               "(x-x') * m_x, rescale multipliers (f(z)-f(z'))/(z-z') (Shrikumar et al., 2017)"),
    # --- lrp (explainers/methods/lrp.py) ---
    MethodSpec("lrp_epsilon_plus", "rule", None, False, "channels",
               "LRP, Zennit EpsilonPlus: z+ on convolutions, epsilon on linear layers, BN folded "
               "(Bach et al., 2015; Montavon et al., 2019)"),
    MethodSpec("lrp_epsilon_gamma_box", "rule", None, False, "channels",
               "LRP, Zennit EpsilonGammaBox: ZBox first convolution, gamma on convolutions, epsilon on "
               "linear layers, BN folded (Montavon et al., 2017, 2019)"),
    # --- end lrp ---
    # --- end rule-based and surrogate methods ---
)

# --- CAM family members (explainers/methods/cam_family.py) ---
_CAM_FAMILY = (
    MethodSpec("cam", "activation", None, True, "spatial",
               "ReLU(sum_k w_ck A_k), w = final linear layer on the pooled CAM layer (Zhou et al., 2016)"),
    MethodSpec("layercam", "cam", "plain", True, "spatial",
               "ReLU(sum_k ReLU(dy_c/dA_k) * A_k) (Jiang et al., 2021)"),
    MethodSpec("xgradcam", "cam", "plain", True, "spatial",
               "ReLU(sum_k w_k A_k), w_k = sum_ij dy_c/dA_kij A_kij / sum_ij A_kij (Fu et al., 2020)"),
    MethodSpec("hirescam", "cam", "plain", True, "spatial",
               "ReLU(sum_k dy_c/dA_k * A_k), element-wise (Draelos & Carin, 2020)"),
    MethodSpec("eigencam", "activation", None, True, "spatial",
               "ReLU(projection of A on its first principal component), class-agnostic (Muhammad & Yeasin, 2020)"),
    MethodSpec("scorecam", "activation", None, True, "spatial",
               "ReLU(sum_k softmax_k(y_c(x * norm(up(A_k)))) A_k) (Wang et al., 2020)"),
    MethodSpec("ablationcam", "activation", None, True, "spatial",
               "ReLU(sum_k (y_c - y_c(A_k ablated)) / y_c * A_k) (Desai & Ramaswamy, 2020)"),
)
_SPECS = _SPECS + _CAM_FAMILY
# --- end CAM family members ---

# --- LIME and excitation backprop (explainers/methods/lime.py, excitation.py) ---
_LIME_EXCITATION = (
    MethodSpec("lime", "perturbation", None, False, "spatial",
               "ridge coefficients of f_c(x_z) on superpixel masks z, kernel exp(-(1-cos)^2/2w^2) "
               "(Ribeiro et al., 2016)"),
    MethodSpec("excitation_backprop", "rule", None, True, "spatial",
               "sum_ch P(a), P(a_j) = sum_i a_j w+_ji / (sum_k a_k w+_ki) P(a_i) from P(y_c) = 1 "
               "(Zhang et al., 2016)"),
    MethodSpec("contrastive_excitation_backprop", "rule", None, True, "spatial",
               "max(MWP_c - MWP_dual, 0), dual = the target's output weights negated (c-MWP, Zhang et al., 2016)"),
)
_SPECS = _SPECS + _LIME_EXCITATION
# --- end LIME and excitation backprop ---

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> MethodSpec:
    """Return the spec of ``name`` or raise a ``ValueError`` listing the known methods."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown explanation method {name!r}; known: {', '.join(METHODS)}"
        ) from None
