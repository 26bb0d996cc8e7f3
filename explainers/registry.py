"""Method registry: what each explanation method is and which passes it needs.

Job specs name methods as strings; :data:`METHODS` maps each name to a :class:`MethodSpec`.
This table is the single source of every method's plan: the engine (:mod:`explainers.engine`)
derives from it which pass family runs a method, the rule of each backward of its shared pass,
the factors of the product maps and the function it calls; SmoothGrad
(:mod:`explainers.methods.smooth`) reads its base methods from it. A method's own module carries
only its implementation. Importing this module imports nothing but the standard library (no
torch): the web process validates a study's methods against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["gradient", "cam", "perturbation", "product", "sampled", "rule", "activation", "example"]
BackwardRule = Literal["plain", "guided", "deconvnet"]
Output = Literal["channels", "spatial", "picture", "examples"]
Perturbs = Literal["input", "layer"]

SHARED_FAMILIES: tuple[Family, ...] = ("gradient", "cam", "product")
"""Families served by the engine's one shared forward and its backwards per (rule, target)."""

STIMULUS_FAMILIES: tuple[Family, ...] = ("example",)
"""Families that are no attribution map: stimuli shown in place of a map (the picture alone, example
images). :func:`explainers.explain` refuses them; the studies pipeline renders them itself."""


@dataclass(frozen=True)
class MethodSpec:
    """Description of one method, and the rule by which the engine plans its passes.

    Attributes:
        name: registry key.
        family: which pass family of the engine runs it.

            * ``gradient``: a map of the input gradient ``dy_c/dx`` from one backward of the
              shared forward (with ``backward_rule``); also the base methods SmoothGrad accepts.
            * ``cam``: ``function(A, dy_c/dA)`` of the CAM layer's activation and its gradient,
              from the shared forward and its ``backward_rule`` backward to the layer, bilinearly
              upsampled.
            * ``product``: the product of the two maps named by ``requires``, computed in the same
              shared pass.
            * ``sampled``: own batched forward/backward passes on modified inputs (SmoothGrad,
              Integrated Gradients), one call ``function(runner, images, classes[:, k], **options)``
              -> ``[B, C, H, W]`` per target column ``k``.
            * ``rule``: own batched forward/backward passes with modified backward rules (DeepLIFT,
              LRP, excitation backprop), called like ``sampled``; with ``needs_layer`` the CAM layer
              module comes as a fourth argument (``function(runner, images, classes[:, k], layer,
              **options)``) and the map, at layer resolution, is upsampled like a CAM.
            * ``perturbation``: forward-only, under ``torch.inference_mode``, one call
              ``function(runner, images, classes [B, K], **options)`` -> ``[B, K, H, W]`` for all
              targets (occlusion, RISE, LIME).
            * ``activation``: forward-only CAM family members: one forward under
              ``torch.inference_mode`` keeps the CAM layer's activation and the logits, then
              ``function(runner, images, classes, activation, logits, model, layer, **options)``
              computes its own weights (with its own batched forwards for ScoreCAM / AblationCAM,
              see ``perturbs``).
            * ``example``: no attribution map, a stimulus shown in its place (issue #16): the
              picture alone, or example images of a reference set. ``explain()`` refuses them;
              ``function(model, images, classes, *, autocast_dtype=None, **options)`` gives, per
              image and target, what the stimulus shows (the studies pipeline calls it and draws it).

        backward_rule: rectifier rule (:mod:`explainers.rules`) of the shared forward's backward it
            needs: to the input for ``gradient`` and ``product`` methods, to the CAM layer for
            ``cam`` methods; ``None`` for the other families, which run their own passes.
        needs_layer: whether it uses the CAM layer (the engine resolves it, and for ``rule``
            methods hands it to the function).
        output: ``channels`` -> ``[B, C, H, W]`` signed; ``spatial`` -> ``[B, H, W]``; ``picture``
            (``example`` family): the input picture itself, drawn as it is; ``examples``
            (``example`` family): indices of reference images, drawn side by side.
        doc: one-line description with the reference.
        requires: the two maps a ``product`` method multiplies, ``(channel map, spatial map)``:
            a ``gradient`` method with the product's ``backward_rule`` and a ``cam`` method, the
            spatial map broadcast over channels. Empty for the other families.
        function: ``"module:attribute"`` of the function the engine calls (its keyword-only
            parameters other than ``autocast_dtype`` are the method's options); ``None`` for
            ``gradient`` and ``product`` methods, which the shared pass computes itself.
        times_input: ``gradient`` methods only: the map is the input times its gradient
            (``x * dy_c/dx``) rather than the gradient.
        perturbs: ``activation`` methods with batched forwards of their own: what those forwards
            perturb. ``input``: masked images through the whole model (the engine runs them on a
            fast copy that need not keep the CAM layer); ``layer``: replaced CAM-layer outputs, so
            the layer must give ``[B, C, h, w]`` (no ``reshape``). ``None`` otherwise.
    """

    name: str
    family: Family
    backward_rule: BackwardRule | None
    needs_layer: bool
    output: Output
    doc: str
    requires: tuple[str, ...] = ()
    function: str | None = None
    times_input: bool = False
    perturbs: Perturbs | None = None

    def __post_init__(self) -> None:
        shared = self.family in SHARED_FAMILIES
        problems = []
        if (self.backward_rule is not None) != shared:
            problems.append("backward_rule is set exactly for the gradient, cam and product families")
        if (self.function is not None) != (self.family not in ("gradient", "product")):
            problems.append("function is set exactly for families other than gradient and product")
        if bool(self.requires) != (self.family == "product"):
            problems.append("requires is set exactly for the product family")
        if self.times_input and self.family != "gradient":
            problems.append("times_input is for the gradient family only")
        if self.perturbs is not None and self.family != "activation":
            problems.append("perturbs is for the activation family only")
        if (self.output in ("picture", "examples")) != (self.family in STIMULUS_FAMILIES):
            problems.append("output picture/examples is exactly for the example family")
        if self.family in STIMULUS_FAMILIES and self.needs_layer:
            problems.append("example methods use no CAM layer")
        if problems:
            raise ValueError(f"MethodSpec {self.name!r}: " + "; ".join(problems))


_M = "explainers.methods."  # the package of the method implementations

_SPECS = (
    MethodSpec("saliency", "gradient", "plain", False, "channels",
               "dy_c/dx, signed (Simonyan et al., 2014)"),
    MethodSpec("input_x_gradient", "gradient", "plain", False, "channels",
               "x * dy_c/dx (Shrikumar et al., 2016)", times_input=True),
    MethodSpec("guided_backprop", "gradient", "guided", False, "channels",
               "gradient with ReLU backward max(g,0)*1[x>0] (Springenberg et al., 2015)"),
    MethodSpec("deconvnet", "gradient", "deconvnet", False, "channels",
               "gradient with ReLU backward max(g,0) (Zeiler & Fergus, 2014)"),
    MethodSpec("smoothgrad", "sampled", None, False, "channels",
               "mean of a gradient method over x + N(0, (noise*(max-min))^2) (Smilkov et al., 2017)",
               function=_M + "smooth:smoothgrad"),
    MethodSpec("integrated_gradients", "sampled", None, False, "channels",
               "(x-x') * integral of dy_c/dx along x'->x (Sundararajan et al., 2017)",
               function=_M + "integrated:integrated_gradients"),
    MethodSpec("gradcam", "cam", "plain", True, "spatial",
               "ReLU(sum_k mean(dy_c/dA_k) A_k), bilinear upsampled (Selvaraju et al., 2017)",
               function=_M + "cam:gradcam"),
    MethodSpec("counterfactual_gradcam", "cam", "plain", True, "spatial",
               "Grad-CAM with negated gradients (Selvaraju et al., 2017, sec. 5.3)",
               function=_M + "cam:counterfactual_gradcam"),
    MethodSpec("gradcam_plus_plus", "cam", "plain", True, "spatial",
               "Grad-CAM++ weights, eq. 19 (Chattopadhyay et al., 2018)",
               function=_M + "cam:gradcam_plus_plus"),
    MethodSpec("guided_gradcam", "product", "guided", True, "channels",
               "guided_backprop * gradcam (Selvaraju et al., 2017)",
               requires=("guided_backprop", "gradcam")),
    MethodSpec("deconv_gradcam", "product", "deconvnet", True, "channels",
               "deconvnet * gradcam (Selvaraju et al., 2017)",
               requires=("deconvnet", "gradcam")),
    MethodSpec("occlusion", "perturbation", None, False, "spatial",
               "mean over windows covering a pixel of y_c(x) - y_c(x occluded) (Zeiler & Fergus, 2014)",
               function=_M + "perturbation:occlusion"),
    MethodSpec("rise", "perturbation", None, False, "spatial",
               "sum_i p_c(x*M_i) M_i / (N p) over random masks (Petsiuk et al., 2018)",
               function=_M + "perturbation:rise"),
    # --- rule-based and surrogate methods (deeplift, lrp, excitation, lime) ---
    MethodSpec("deeplift", "rule", None, False, "channels",
               "(x-x') * m_x, rescale multipliers (f(z)-f(z'))/(z-z') (Shrikumar et al., 2017)",
               function=_M + "deeplift:deeplift"),
    # --- lrp (explainers/methods/lrp.py) ---
    MethodSpec("lrp_epsilon_plus", "rule", None, False, "channels",
               "LRP, Zennit EpsilonPlus: z+ on convolutions, epsilon on linear layers, BN folded "
               "(Bach et al., 2015; Montavon et al., 2019)",
               function=_M + "lrp:lrp_epsilon_plus"),
    MethodSpec("lrp_epsilon_gamma_box", "rule", None, False, "channels",
               "LRP, Zennit EpsilonGammaBox: ZBox first convolution, gamma on convolutions, epsilon on "
               "linear layers, BN folded (Montavon et al., 2017, 2019)",
               function=_M + "lrp:lrp_epsilon_gamma_box"),
    # --- end lrp ---
    # --- end rule-based and surrogate methods ---
)

# --- CAM family members (explainers/methods/cam_family.py) ---
_CAM_FAMILY = (
    MethodSpec("cam", "activation", None, True, "spatial",
               "ReLU(sum_k w_ck A_k), w = final linear layer on the pooled CAM layer (Zhou et al., 2016)",
               function=_M + "cam_family:cam"),
    MethodSpec("layercam", "cam", "plain", True, "spatial",
               "ReLU(sum_k ReLU(dy_c/dA_k) * A_k) (Jiang et al., 2021)",
               function=_M + "cam_family:layercam"),
    MethodSpec("xgradcam", "cam", "plain", True, "spatial",
               "ReLU(sum_k w_k A_k), w_k = sum_ij dy_c/dA_kij A_kij / sum_ij A_kij (Fu et al., 2020)",
               function=_M + "cam_family:xgradcam"),
    MethodSpec("hirescam", "cam", "plain", True, "spatial",
               "ReLU(sum_k dy_c/dA_k * A_k), element-wise (Draelos & Carin, 2020)",
               function=_M + "cam_family:hirescam"),
    MethodSpec("eigencam", "activation", None, True, "spatial",
               "ReLU(projection of A on its first principal component), class-agnostic (Muhammad & Yeasin, 2020)",
               function=_M + "cam_family:eigencam"),
    MethodSpec("scorecam", "activation", None, True, "spatial",
               "ReLU(sum_k softmax_k(y_c(x * norm(up(A_k)))) A_k) (Wang et al., 2020)",
               function=_M + "cam_family:scorecam", perturbs="input"),
    MethodSpec("ablationcam", "activation", None, True, "spatial",
               "ReLU(sum_k (y_c - y_c(A_k ablated)) / y_c * A_k) (Desai & Ramaswamy, 2020)",
               function=_M + "cam_family:ablationcam", perturbs="layer"),
)
_SPECS = _SPECS + _CAM_FAMILY
# --- end CAM family members ---

# --- LIME and excitation backprop (explainers/methods/lime.py, excitation.py) ---
_LIME_EXCITATION = (
    MethodSpec("lime", "perturbation", None, False, "spatial",
               "ridge coefficients of f_c(x_z) on superpixel masks z, kernel exp(-(1-cos)^2/2w^2) "
               "(Ribeiro et al., 2016)",
               function=_M + "lime:lime"),
    MethodSpec("excitation_backprop", "rule", None, True, "spatial",
               "sum_ch P(a), P(a_j) = sum_i a_j w+_ji / (sum_k a_k w+_ki) P(a_i) from P(y_c) = 1 "
               "(Zhang et al., 2016)",
               function=_M + "excitation:excitation_backprop"),
    MethodSpec("contrastive_excitation_backprop", "rule", None, True, "spatial",
               "max(MWP_c - MWP_dual, 0), dual = the target's output weights negated (c-MWP, Zhang et al., 2016)",
               function=_M + "excitation:contrastive_excitation_backprop"),
)
_SPECS = _SPECS + _LIME_EXCITATION
# --- end LIME and excitation backprop ---

# --- stimuli that are no attribution map (explainers/methods/examples.py; issue #16) ---
_EXAMPLES = (
    MethodSpec("image_only", "example", None, False, "picture",
               "the picture alone, no explanation (control arm: no explanation / confidence only)",
               function=_M + "examples:image_only"),
    MethodSpec("nearest_examples", "example", None, False, "examples",
               "the k (default 3) reference images nearest in the model's penultimate features, cosine, "
               "the target class's first (Nguyen et al., 2021)",
               function=_M + "examples:nearest_examples"),
)
_SPECS = _SPECS + _EXAMPLES
# --- end stimuli that are no attribution map ---

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}


def check_registry(methods: dict[str, MethodSpec]) -> None:
    """Raise a ``ValueError`` unless ``methods`` is a consistent registry: keys are the specs'
    names and every ``product`` multiplies a channel ``gradient`` map of its own backward rule by
    a spatial ``cam`` map (``MethodSpec.requires``). Run on :data:`METHODS` at import."""
    for key, spec in methods.items():
        if key != spec.name:
            raise ValueError(f"registry key {key!r} holds the spec of {spec.name!r}")
        if spec.family != "product":
            continue
        factors = [methods.get(name) for name in spec.requires]
        if (len(factors) != 2 or factors[0] is None or factors[1] is None
                or factors[0].family != "gradient" or factors[0].backward_rule != spec.backward_rule
                or factors[1].family != "cam"):
            raise ValueError(f"product {key!r} requires {spec.requires}: need (a gradient method with "
                             f"backward rule {spec.backward_rule!r}, a cam method)")


check_registry(METHODS)


def get_spec(name: str) -> MethodSpec:
    """Return the spec of ``name`` or raise a ``ValueError`` listing the known methods."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown explanation method {name!r}; known: {', '.join(METHODS)}"
        ) from None
