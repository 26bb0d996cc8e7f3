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
    return rows


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    models = args.model or ["resnet18", "vgg16"]
    if args.quick:
        args.batch, args.size, args.repeats = 2, 64, 1
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
        for row in run_model(name, args, device):
            model, label, (ot, om), ref_name, (rt, rm), goal = row
            print(f"{model:<9} {label:<29} {ot:>8.3f} {ref_name:<26} {rt:>8.3f} {rt / ot:>7.2f}x "
                  f"{om:>9.0f} {rm:>8.0f}  {goal}", flush=True)
        args.occ_images = occ_default


if __name__ == "__main__":
    main()
