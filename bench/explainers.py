"""Benchmark: explainers.explain() against Captum, pytorch-grad-cam and the autograd floor.

Usage::

    python bench/explainers.py                      # CPU: ResNet-18 and VGG-16, batch 8, 224x224
    python bench/explainers.py --quick              # smoke test (small images, batch 2)
    python bench/explainers.py --device cuda --model resnet50 --batch 64 --bf16

Rows (each measured side by side in one process, same model, same images):

* ``bundle``: Grad-CAM, counterfactual Grad-CAM, saliency, Guided Backprop, Guided
  Grad-CAM, Deconvnet, Deconv Grad-CAM for 2 targets per image, versus the same maps
  from Captum per-method calls (goal >= 3x) and versus the floor: 1 forward + one plain
  backward per (rule, target), plain autograd, no hooks (goal <= 1.25x the floor). The
  floor runs the model as given (parameters requiring grad); ``torch.autograd.grad``
  w.r.t. the input computes no weight gradients there either, so freezing parameters
  (as ``explain`` does) changes little (measured within noise, <= 7%).
* Every ``explain`` row runs the default fast copy (BatchNorm folded into the convolutions,
  channels-last; :mod:`explainers.fast`); a ``fast=False`` row runs the model exactly as
  given, like the references. The floor is also timed on that fast copy, so the planning
  overhead is measured on equal kernels.
* ``gradcam``: Grad-CAM alone vs Captum ``LayerGradCam`` (goal: never slower) and
  pytorch-grad-cam ``GradCAM`` (goal >= 3x).
* CAM family (``--cam-family-only`` stops after these): ``layercam``, ``xgradcam``, ``hirescam``,
  ``eigencam``, ``scorecam``, ``ablationcam`` vs the pytorch-grad-cam class of the same name, and
  ``cam`` vs ``GradCAM`` on ResNets (goal: never slower; ScoreCAM / AblationCAM >= 2x, on
  ``--cam-images`` images).
* ``smoothgrad``: 8 samples vs Captum ``NoiseTunnel(Saliency)`` (goal >= 1.5x).
* ``occlusion``: window 32, stride 16 vs Captum ``Occlusion`` at
  ``perturbations_per_eval`` 1 and 16 (goal >= 1.5x).

Times are the median of ``--repeats`` runs after one warmup; a contender whose first
run takes longer than ``--slow`` seconds is timed once (that run). Peak memory is the
peak RSS increase over the call sampled every 2 ms (CPU) or
``torch.cuda.max_memory_allocated`` above the starting allocation (CUDA).
Only torch, torchvision, captum and grad-cam are needed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explainers import explain
from explainers.fast import fast_model
from explainers.layers import resolve_layer

BUNDLE = ["gradcam", "counterfactual_gradcam", "saliency", "guided_backprop",
          "guided_gradcam", "deconvnet", "deconv_gradcam"]


class PeakMemory:
    """Peak memory increase (MiB) during a ``with`` block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib = 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = self._rss()
            self._peak = self._start
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self._start
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, self._rss()) - self._start
        self.peak_mib = peak / 2**20


def measure(fn: Callable[[], object], device: torch.device, repeats: int, slow: float) -> tuple[float, float]:
    """(median seconds, peak MiB) of ``fn``."""
    def once() -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            result = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
        del result
        return elapsed, memory.peak_mib

    try:
        first, first_mem = once()
    except Exception as error:  # e.g. grad-cam cannot convert bf16 maps to numpy
        print(f"  (failed: {type(error).__name__}: {str(error)[:80]})", file=sys.stderr, flush=True)
        return float("nan"), float("nan")
    if first > slow or repeats <= 0:
        return first, first_mem
    runs = [once() for _ in range(repeats)]
    return statistics.median(t for t, _ in runs), max(m for _, m in runs)


def build(name: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval().to(device)
    layer = {"vgg16": "features.29"}.get(name)
    if layer is None:
        layer, _ = resolve_layer(model, None, example=torch.zeros(1, 3, 64, 64, device=device))
    return model, layer


def captum_bundle(model, layer, images, targets, size):
    from captum.attr import (
        Deconvolution,
        GuidedBackprop,
        GuidedGradCam,
        LayerAttribution,
        LayerGradCam,
        Saliency,
    )
    out = {}
    for k in range(targets.shape[1]):
        t = targets[:, k]
        low = LayerGradCam(model, layer).attribute(images, target=t, relu_attributions=True)
        cam = LayerAttribution.interpolate(low, size, interpolate_mode="bilinear")
        low = LayerGradCam(lambda x: -model(x), layer).attribute(images, target=t, relu_attributions=True)
        out[("counterfactual_gradcam", k)] = LayerAttribution.interpolate(low, size, interpolate_mode="bilinear")
        out[("saliency", k)] = Saliency(model).attribute(images, target=t, abs=False)
        out[("guided_backprop", k)] = GuidedBackprop(model).attribute(images, target=t)
        out[("guided_gradcam", k)] = GuidedGradCam(model, layer).attribute(
            images, target=t, interpolate_mode="bilinear")
        deconv = Deconvolution(model).attribute(images, target=t)
        out[("deconvnet", k)] = deconv
        out[("deconv_gradcam", k)] = deconv * cam
        out[("gradcam", k)] = cam
    return out


def floor(model, images, targets):
    """1 forward + 3 rules x K plain backwards w.r.t. the input: plain autograd, no hooks."""
    x = images.detach().clone().requires_grad_(True)
    logits = model(x)
    grads = []
    steps = [(k, r) for k in range(targets.shape[1]) for r in range(3)]
    for i, (k, _) in enumerate(steps):
        vec = torch.zeros_like(logits).scatter_(1, targets[:, k:k + 1], 1.0)
        grads.append(torch.autograd.grad(logits, x, vec, retain_graph=i < len(steps) - 1)[0])
    return grads


def gradcam_library(model, layer, images, targets):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    with GradCAM(model, [layer]) as cam:
        return cam(images, targets=[ClassifierOutputTarget(int(t)) for t in targets])


# --- CAM family rows (explainers/methods/cam_family.py) ---
CAM_FAMILY = {"layercam": "LayerCAM", "xgradcam": "XGradCAM", "hirescam": "HiResCAM", "eigencam": "EigenCAM",
              "scorecam": "ScoreCAM", "ablationcam": "AblationCAM", "cam": "GradCAM"}


def cam_family_rows(name, model, layer_name, images, t1, args, device):
    """Each new CAM method vs the pytorch-grad-cam class of the same name (``cam`` vs ``GradCAM``,
    the same map on GAP nets), same layer, targets and images; ScoreCAM / AblationCAM on
    ``--cam-images`` images (one forward per channel and image)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.get_submodule(layer_name)
    m = lambda fn: measure(fn, device, args.repeats, args.slow)  # noqa: E731
    rows = []
    for method, cls_name in CAM_FAMILY.items():
        if method == "cam" and not isinstance(getattr(model, "fc", None), torch.nn.Linear):
            continue  # CAM needs a GAP + linear classifier (ResNet); VGG refuses it
        n = args.cam_images if method in ("scorecam", "ablationcam") else images.shape[0]
        x, t = images[:n], t1[:n]
        print(f"[{name}] {method} ...", file=sys.stderr, flush=True)
        ours = m(lambda: explain(model, x, t, [method], layer_name))
        cls = getattr(pytorch_grad_cam, cls_name)

        def ref(cls=cls, x=x, t=t):
            with cls(model, [layer]) as cam:
                return cam(x, targets=[ClassifierOutputTarget(int(c)) for c in t])
        rows.append((name, f"{method} ({n} img)", ours, f"grad-cam {cls_name}", m(ref),
                     ">=2x" if method in ("scorecam", "ablationcam") else "never slower"))
    return rows
# --- end CAM family rows ---


def run_model(name: str, args: argparse.Namespace, device: torch.device) -> list[tuple]:
    from captum.attr import LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency

    model, layer_name = build(name, device)
    layer = model.get_submodule(layer_name)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=generator).to(device)
    targets = torch.randint(0, 1000, (args.batch, 2), generator=generator).to(device)
    size = (args.size, args.size)
    amp = args.bf16 and torch.bfloat16
    ours_amp = torch.bfloat16 if args.bf16 else None

    def ctx():
        return torch.autocast(device.type, dtype=torch.bfloat16) if amp else _Null()

    def ref(fn):
        def wrapped():
            with ctx():
                return fn()
        return wrapped

    m = lambda fn: measure(fn, device, args.repeats, args.slow)  # noqa: E731
    rows = []
    print(f"[{name}] bundle ...", file=sys.stderr, flush=True)
    ours = m(lambda: explain(model, images, targets, BUNDLE, layer_name, autocast_dtype=ours_amp))
    exact = m(lambda: explain(model, images, targets, BUNDLE, layer_name, autocast_dtype=ours_amp, fast=False))
    captum = m(ref(lambda: captum_bundle(model, layer, images, targets, size)))
    flo = m(ref(lambda: floor(model, images, targets)))
    copy = fast_model(model.eval(), keep=layer)  # the copy explain() runs: same kernels, no planning
    flo_fast = m(ref(lambda: floor(copy, images, targets)))
    rows.append((name, "bundle (7 maps x 2 targets)", ours, "Captum per-method", captum, ">=3x"))
    rows.append((name, "bundle, fast=False", exact, "Captum per-method", captum, "(as given)"))
    rows.append((name, "bundle (7 maps x 2 targets)", ours, "floor 1 fwd+6 bwd", flo, "speedup>=0.8 (<=1.25x floor)"))
    rows.append((name, "bundle (7 maps x 2 targets)", ours, "floor on the fast copy", flo_fast, "speedup>=0.8 (<=1.25x floor)"))
    rows.append((name, "bundle, fast=False", exact, "floor 1 fwd+6 bwd", flo, "speedup>=0.8 (<=1.25x floor)"))

    print(f"[{name}] gradcam ...", file=sys.stderr, flush=True)
    t1 = targets[:, 0]
    ours = m(lambda: explain(model, images, t1, ["gradcam"], layer_name, autocast_dtype=ours_amp))
    lgc = m(ref(lambda: LayerAttribution.interpolate(
        LayerGradCam(model, layer).attribute(images, target=t1, relu_attributions=True), size,
        interpolate_mode="bilinear")))
    pgc = m(ref(lambda: gradcam_library(model, layer, images, t1)))
    exact = m(lambda: explain(model, images, t1, ["gradcam"], layer_name, autocast_dtype=ours_amp, fast=False))
    rows.append((name, "gradcam", ours, "Captum LayerGradCam", lgc, "never slower"))
    rows.append((name, "gradcam, fast=False", exact, "Captum LayerGradCam", lgc, "never slower"))
    rows.append((name, "gradcam", ours, "grad-cam GradCAM", pgc, ">=3x"))
    rows += cam_family_rows(name, model, layer_name, images, t1, args, device)  # CAM family rows
    if args.cam_family_only:
        return rows

    print(f"[{name}] smoothgrad ...", file=sys.stderr, flush=True)
    chunk = max(1, args.sg_rows // args.batch)
    sg_opts = {"smoothgrad": {"samples": 8, "noise": 0.15, "seed": 0, "batch_size": chunk * args.batch}}
    ours = m(lambda: explain(model, images, t1, ["smoothgrad"], options=sg_opts, autocast_dtype=ours_amp))
    sigma = float(0.15 * (images.max() - images.min()))
    nt = m(ref(lambda: NoiseTunnel(Saliency(model)).attribute(
        images, target=t1, nt_type="smoothgrad", nt_samples=8, stdevs=sigma, abs=False,
        nt_samples_batch_size=chunk)))
    exact = m(lambda: explain(model, images, t1, ["smoothgrad"], options=sg_opts, autocast_dtype=ours_amp, fast=False))
    rows.append((name, "smoothgrad 8 samples", ours, "Captum NoiseTunnel", nt, ">=1.5x"))
    rows.append((name, "smoothgrad, fast=False", exact, "Captum NoiseTunnel", nt, ">=1.5x"))

    occ_n = args.occ_images or args.batch
    occ_images, occ_t = images[:occ_n], t1[:occ_n]
    label = f"occlusion 32/16 ({occ_n} img)"
    print(f"[{name}] {label} ...", file=sys.stderr, flush=True)
    opts = {"occlusion": {"window": 32, "stride": 16, "baseline": 0.0, "batch_size": args.occ_rows}}
    ours = m(lambda: explain(model, occ_images, occ_t, ["occlusion"], options=opts, autocast_dtype=ours_amp))
    exact = m(lambda: explain(model, occ_images, occ_t, ["occlusion"], options=opts, autocast_dtype=ours_amp,
                              fast=False))
    for ppe in (1, 16):
        cap = m(ref(lambda ppe=ppe: Occlusion(model).attribute(
            occ_images, target=occ_t, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16),
            baselines=0.0, perturbations_per_eval=ppe)))
        rows.append((name, label, ours, f"Captum Occlusion ppe={ppe}", cap, ">=1.5x"))
        rows.append((name, "occlusion, fast=False", exact, f"Captum Occlusion ppe={ppe}", cap, ">=1.5x"))

    # --- rule-based and surrogate methods (deeplift, lrp, excitation, lime) ---
    print(f"[{name}] deeplift ...", file=sys.stderr, flush=True)
    ours = m(lambda: explain(model, images, t1, ["deeplift"], autocast_dtype=ours_amp))
    exact = m(lambda: explain(model, images, t1, ["deeplift"], autocast_dtype=ours_amp, fast=False))
    from captum.attr import DeepLift  # reused ReLU modules (ResNet) make Captum raise: timed anyway
    captum_runs = _captum_deeplift(DeepLift, model, images[:1], t1[:1]) is not None
    label = "Captum DeepLift" if captum_runs else "Captum DeepLift (raises: reused module)"
    dl = m(ref(lambda: _captum_deeplift(DeepLift, model, images, t1))) if captum_runs else (float("nan"), 0.0)
    rows.append((name, "deeplift (zero baseline)", ours, label, dl, "never slower"))
    rows.append((name, "deeplift, fast=False", exact, label, dl, "never slower"))
    rows += lrp_rows(name, model, images, t1, args, device)  # lrp
    rows += lime_excitation_rows(name, model, layer_name, images, t1, args, device)  # lime, excitation
    # --- end rule-based and surrogate methods ---
    return rows


# --- lrp rows (explainers/methods/lrp.py) ---
def lrp_rows(name, model, images, t1, args, device):
    """Both LRP composites vs Zennit's (``SequentialMergeBatchNorm``, one-hot output relevance), same
    images and targets. Chains only: ResNet is refused by ours (and skipped here)."""
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonGammaBox, EpsilonPlus

    from explainers.methods.lrp import build_steps

    try:
        build_steps(model.eval(), "lrp")
    except ValueError:
        print(f"[{name}] lrp: refused (not a chain of layers)", file=sys.stderr, flush=True)
        return []
    m = lambda fn: measure(fn, device, args.repeats, args.slow)  # noqa: E731
    classes = int(model(images[:1]).shape[1])
    vector = torch.nn.functional.one_hot(t1, classes).to(images.dtype)
    bounds = {"low": -3.0, "high": 3.0}
    rows = []
    for method, composite in (("lrp_epsilon_plus", lambda: EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])),
                              ("lrp_epsilon_gamma_box", lambda: EpsilonGammaBox(
                                  **bounds, canonizers=[SequentialMergeBatchNorm()]))):
        print(f"[{name}] {method} ...", file=sys.stderr, flush=True)
        opts = {method: bounds} if method == "lrp_epsilon_gamma_box" else None
        ours = m(lambda: explain(model, images, t1, [method], options=opts))

        def ref(composite=composite):
            with Gradient(model, composite()) as attributor:
                return attributor(images, vector)[1]
        rows.append((name, method, ours, "Zennit " + composite().__class__.__name__, m(ref), "never slower"))
    return rows
# --- end lrp rows ---


# --- LIME and excitation backprop rows (explainers/methods/lime.py, excitation.py) ---
def lime_excitation_rows(name, model, layer_name, images, t1, args, device):
    """LIME vs Captum ``Lime`` on the same images, superpixels (ours, as ``feature_mask``), sample
    count, baseline 0, kernel (Captum's default) and linear model (our closed-form ridge: Captum's
    ``SkLearnRidge`` needs scikit-learn); Captum runs one image at a time (its batch>1 path loops
    anyway) with ``perturbations_per_eval`` = our ``batch_size``. Excitation backprop has no
    reference library installed: timed against one plain forward + backward (``saliency``)."""
    from captum._utils.models.model import Model
    from captum.attr import Lime

    from explainers.methods.lime import ridge, superpixels

    class ClosedFormRidge(Model):
        def fit(self, train_data, **kwargs):
            xs, ys, ws = zip(*train_data)
            self.beta, self.bias = ridge(torch.cat(xs), torch.cat(ys).flatten(), torch.cat(ws), 1.0)

        def representation(self):
            return self.beta

        def __call__(self, x):
            return x @ self.beta + self.bias

    m = lambda fn: measure(fn, device, args.repeats, args.slow)  # noqa: E731
    samples = args.lime_samples
    opts = {"lime": {"samples": samples, "score": "logit", "batch_size": 64}}
    print(f"[{name}] lime ({samples} samples) ...", file=sys.stderr, flush=True)
    ours = m(lambda: explain(model, images, t1, ["lime"], options=opts))
    segmentation = superpixels(images)

    def captum():
        with torch.no_grad():
            return [Lime(model, interpretable_model=ClosedFormRidge()).attribute(
                images[b:b + 1], target=int(t1[b]), baselines=0.0, n_samples=samples, perturbations_per_eval=64,
                feature_mask=segmentation[b].view(1, 1, *segmentation.shape[1:])) for b in range(images.shape[0])]
    rows = [(name, f"lime {samples} samples", ours, "Captum Lime (same ridge)", m(captum), "never slower")]
    print(f"[{name}] excitation backprop ...", file=sys.stderr, flush=True)
    try:
        eb = m(lambda: explain(model, images, t1, ["excitation_backprop"], layer_name))
        ceb = m(lambda: explain(model, images, t1, ["contrastive_excitation_backprop"], layer_name))
    except ValueError as error:
        print(f"[{name}] excitation backprop refused: {error}", file=sys.stderr, flush=True)
        return rows
    sal = m(lambda: explain(model, images, t1, ["saliency"]))
    rows.append((name, "excitation_backprop", eb, "saliency (1 fwd + 1 bwd)", sal, "(no reference lib)"))
    rows.append((name, "contrastive_excitation_bp", ceb, "saliency (1 fwd + 1 bwd)", sal, "(no reference lib)"))
    return rows
# --- end LIME and excitation backprop rows ---


def _captum_deeplift(cls, model, images, targets):
    try:
        return cls(model).attribute(images, baselines=0.0, target=targets)
    except RuntimeError:  # "module being used more than once" (ResNet's shared ReLU)
        return None


# --- container CAM layer rows (issue 14, defect 7) ---
CONTAINER_MODELS = ("efficientnet_b0", "densenet121")


def container_rows(args: argparse.Namespace, device: torch.device) -> list[tuple]:
    """The bundle with the zoo's container CAM layer ``features``: the fast copy now traces
    through the container (its BatchNorms fold) instead of keeping it whole. Guided/deconvnet
    maps are refused on EfficientNet-B0 (SiLU), so its bundle is the gradient and CAM maps."""
    from explainers.fast import build_fast_model

    rows = []
    for name in CONTAINER_MODELS:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)().eval().to(device)
        generator = torch.Generator().manual_seed(1)
        images = torch.randn(args.batch, 3, args.size, args.size, generator=generator).to(device)
        targets = torch.randint(0, 1000, (args.batch, 2), generator=generator).to(device)
        bundle = BUNDLE if name.startswith("densenet") else [
            "gradcam", "counterfactual_gradcam", "gradcam_plus_plus", "saliency", "input_x_gradient"]
        folded = build_fast_model(model, keep=model.features).folded
        print(f"[{name}] container bundle ({folded} folds) ...", file=sys.stderr, flush=True)
        m = lambda fn: measure(fn, device, args.repeats, args.slow)  # noqa: E731
        ours = m(lambda: explain(model, images, targets, bundle, "features"))
        exact = m(lambda: explain(model, images, targets, bundle, "features", fast=False))
        rows.append((name, f"bundle, features ({folded} folds)", ours, "same, fast=False", exact, ">1x"))
    return rows
# --- end container CAM layer rows ---


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", action="append", help="torchvision name; repeatable "
                        "(default resnet18 and vgg16)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--bf16", action="store_true", help="autocast bf16 forward for every contender")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow", type=float, default=20.0,
                        help="time a contender once if its first run exceeds this many seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sg-rows", type=int, default=16,
                        help="rows per SmoothGrad pass (both sides; 16 measured fastest on CPU)")
    parser.add_argument("--occ-rows", type=int, default=16,
                        help="perturbed images per occlusion forward (ours; 16 measured fastest on CPU)")
    parser.add_argument("--occ-images", type=int, default=None,
                        help="images for the occlusion rows (default: the batch; CPU VGG: 1)")
    parser.add_argument("--quick", action="store_true", help="smoke test: batch 2, 64x64, 1 repeat")
    parser.add_argument("--cam-images", type=int, default=1,
                        help="images for the ScoreCAM / AblationCAM rows (one forward per channel and image)")
    parser.add_argument("--container", action="store_true",
                        help="also time the EfficientNet-B0 / DenseNet-121 bundle with the container CAM "
                             "layer 'features' (always on with --quick)")
    parser.add_argument("--lrp-only", action="store_true",  # lrp
                        help="only the LRP rows against Zennit (chain models: vgg*, alexnet)")
    parser.add_argument("--lime-only", action="store_true",  # lime, excitation
                        help="only the LIME (vs Captum Lime) and excitation backprop rows")
    parser.add_argument("--lime-samples", type=int, default=None,  # lime, excitation
                        help="LIME samples per image (default 1000; 100 with --quick)")
    parser.add_argument("--cam-family-only", action="store_true",
                        help="stop after the bundle, Grad-CAM and CAM family rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    models = args.model or ["resnet18", "vgg16"]
    if args.quick:
        args.batch, args.size, args.repeats = 2, 64, 1
    if args.lime_samples is None:  # lime
        args.lime_samples = 100 if args.quick else 1000
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {args.threads} threads")
          + f", batch {args.batch}, {args.size}x{args.size}, bf16={args.bf16}", flush=True)
    header = f"{'model':<9} {'row':<29} {'ours s':>8} {'reference':<26} {'ref s':>8} {'speedup':>8} " \
             f"{'ours MiB':>9} {'ref MiB':>8}  goal"
    print(header)
    print("-" * len(header))
    for name in models:
        occ_default = args.occ_images
        if args.occ_images is None and device.type == "cpu" and name.startswith("vgg") and not args.quick:
            args.occ_images = 1
        if args.lime_only:  # lime, excitation
            model, layer_name = build(name, device)
            generator = torch.Generator().manual_seed(1)
            images = torch.randn(args.batch, 3, args.size, args.size, generator=generator).to(device)
            t1 = torch.randint(0, 1000, (args.batch,), generator=generator).to(device)
            rows = lime_excitation_rows(name, model, layer_name, images, t1, args, device)
        elif args.lrp_only:  # lrp
            model, _ = build(name, device)
            generator = torch.Generator().manual_seed(1)
            images = torch.randn(args.batch, 3, args.size, args.size, generator=generator).to(device)
            t1 = torch.randint(0, 1000, (args.batch,), generator=generator).to(device)
            rows = lrp_rows(name, model, images, t1, args, device)
        else:
            rows = run_model(name, args, device)
        for row in rows:
            model, label, (ot, om), ref_name, (rt, rm), goal = row
            print(f"{model:<9} {label:<29} {ot:>8.3f} {ref_name:<26} {rt:>8.3f} {rt / ot:>7.2f}x "
                  f"{om:>9.0f} {rm:>8.0f}  {goal}", flush=True)
        args.occ_images = occ_default
    if (args.quick or args.container) and not args.lrp_only and not args.lime_only:
        for row in container_rows(args, device):
            model, label, (ot, om), ref_name, (rt, rm), goal = row
            print(f"{model:<9} {label:<29} {ot:>8.3f} {ref_name:<26} {rt:>8.3f} {rt / ot:>7.2f}x "
                  f"{om:>9.0f} {rm:>8.0f}  {goal}", flush=True)


if __name__ == "__main__":
    main()
