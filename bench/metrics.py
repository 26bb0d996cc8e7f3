"""Benchmark explainers.metrics on the synthetic world, against Quantus where it has the metric.

Prints, per method, every metric's mean with a 95 % percentile-bootstrap interval over images,
then the time each metric took for all methods with ours and with Quantus at equal settings.

Equal settings for the timing comparison:
* deletion: zero baseline, softmax of the target class (the synthetic CNN is multi-label, but
  Quantus offers only softmax or logits; we use softmax on both sides), the same number of
  steps, i.e. ``features_in_step = H * W / steps * 3 // 3`` channel values for Quantus.
  Quantus needs ``features_in_step`` to divide ``H * W`` while it ranks the ``C * H * W``
  values, so on RGB its steps can split one pixel's channels (ours never do): same cost, curves
  identical only on one-channel inputs (checked in tests/explainers/test_metrics_deletion.py).
* pointing game: no tolerance (Quantus has none); energy: RelevanceMassAccuracy, abs=False,
  normalise=False; sanity: cascading (top_down) randomization, Spearman similarity, Grad-CAM.

Usage: ``python bench/metrics.py [--quick] [--images N] [--seed S]``
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explainers import explain
from explainers.metrics import (
    HIGHER_IS_BETTER,
    bootstrap_interval,
    control_map,
    deletion_insertion,
    energy_in_region,
    evaluate_methods,
    pointing_game,
    sanity_cascade,
    sanity_verdict,
)
from explainers.worlds import synthetic

METHODS = (
    "saliency",
    "input_x_gradient",
    "guided_backprop",
    "gradcam",
    "guided_gradcam",
    "integrated_gradients",
)
CONTROLS = ("random", "sobel", "gaussian")
COLUMNS = (
    ("deletion_auc", "deletion AUC"),
    ("insertion_auc", "insertion AUC"),
    ("occlusion_spearman", "occl. rho"),
    ("pointing_game", "pointing(15*64/224 px)"),
    ("energy_in_region", "energy in mask"),
    ("localization_error", "WSL top-1 err"),
)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model and few images (about a minute)")
    parser.add_argument("--images", type=int, default=None, help="number of scenes (default 64, quick 24)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    n = args.images or (24 if args.quick else 64)
    steps = 16 if args.quick else 32
    config = (
        synthetic.TrainConfig(n_train=320, epochs=5, width=8, n_test=50, lr=5e-3)
        if args.quick
        else synthetic.TrainConfig(n_train=1000, epochs=4, n_test=100)
    )
    (model, info), train_s = timed(lambda: synthetic.train_cnn(biased=False, seed=args.seed, config=config))
    scenes = synthetic.make_scenes(n, seed=args.seed + 777, cue="none")
    images, _ = synthetic.scenes_to_tensors(scenes)
    inputs = synthetic.normalize(images)
    targets = torch.tensor([s.categories[0] for s in scenes])
    masks = torch.stack([s.masks[0] for s in scenes])
    boxes = [[s.boxes[0]] for s in scenes]
    print(
        f"synthetic world: {n} scenes 64x64, CNN width {config.width} trained in {train_s:.1f} s "
        f"(top-2 clean {info['top2_clean']:.2f}); steps={steps}; torch threads=2"
    )

    maps, explain_s = timed(
        lambda: explain(
            model,
            inputs,
            targets,
            list(METHODS) + ["occlusion"],
            options={"occlusion": {"window": 8, "stride": 4}},
        )
    )
    occlusion = maps.pop("occlusion")
    maps = {m: maps[m] for m in METHODS}
    maps["occlusion"] = occlusion
    for kind in CONTROLS:
        maps[f"control:{kind}"] = control_map(kind, inputs, seed=args.seed)
    print(f"maps for {len(METHODS) + 1} methods via explainers.explain: {explain_s:.1f} s")

    tolerance = 15 * 64 / 224
    per_image, eval_s = timed(
        lambda: evaluate_methods(
            model,
            inputs,
            targets,
            maps,
            masks=masks,
            boxes=boxes,
            labels=targets,
            occlusion=occlusion,
            steps=steps,
            baseline="blur",
            score="sigmoid",
            tolerance=tolerance,
            batch_size=256,
        )
    )
    print(
        f"\nper-method metrics, mean [95% bootstrap CI over images] (evaluate_methods: {eval_s:.1f} s; "
        "deletion/insertion: blur baseline, sigmoid score)"
    )
    arrows = {k: ("(lower better)" if not v else "(higher better)") for k, v in HIGHER_IS_BETTER.items()}
    header = f"{'method':<22}" + "".join(f"{title:>24}" for _, title in COLUMNS)
    print(header)
    print(f"{'':<22}" + "".join(f"{arrows[key]:>24}" for key, _ in COLUMNS))
    for method, row in per_image.items():
        cells = []
        for key, _ in COLUMNS:
            ci = bootstrap_interval(row[key], seed=args.seed)
            cells.append(f"{ci.mean:6.3f} [{ci.low:6.3f},{ci.high:6.3f}]" if ci.n else "n/a")
        print(f"{method:<22}" + "".join(f"{c:>24}" for c in cells))

    # Sanity check (cascading) for Grad-CAM and the Sobel control.
    sub = slice(0, min(n, 8))

    def gradcam(m, x, t):
        return explain(m, x, t, ["gradcam"])["gradcam"]

    print("\ncascading sanity check (spearman_abs, mean over images; pass rule in sanity_verdict):")
    for name, fn in (
        ("gradcam", gradcam),
        ("saliency", lambda m, x, t: explain(m, x, t, ["saliency"])["saliency"]),
    ):
        res = sanity_cascade(model, inputs[sub], targets[sub], fn)
        v = sanity_verdict(res)
        curve = " ".join(f"{c:+.2f}" for c in res.curve().tolist())
        print(f"  {name:<10} {curve}  passed={v.passed}")
    print("\ntiming, all methods together (seconds):")
    print(f"{'metric':<34}{'ours':>10}{'quantus':>10}{'speedup':>10}")
    compare(model, inputs, targets, maps, masks, steps, gradcam, sub)


def compare(model, inputs, targets, maps, masks, steps, gradcam, sub) -> None:
    import quantus

    x_np, y_np = inputs.numpy(), targets.numpy()
    s_np = masks[:, None].numpy()
    saliency = {m: (v if v.ndim == 3 else v.abs().sum(1)) for m, v in maps.items()}
    rows = []

    _, ours = timed(
        lambda: [
            deletion_insertion(model, inputs, targets, v, steps=steps, baseline="zero", batch_size=256)
            for v in saliency.values()
        ]
    )
    k = 64 * 64 // steps
    metric = quantus.PixelFlipping(
        features_in_step=k, perturb_baseline=0.0, abs=False, normalise=False, disable_warnings=True
    )
    _, theirs = timed(
        lambda: [
            metric(
                model=model,
                x_batch=x_np,
                y_batch=y_np,
                a_batch=v[:, None].numpy(),
                softmax=True,
                device="cpu",
                batch_size=256,
            )
            for v in saliency.values()
        ]
    )
    rows.append((f"deletion curve ({steps} steps, zero)", ours, theirs))
    _, exact = timed(
        lambda: [
            deletion_insertion(model, inputs, targets, v, steps=steps, baseline="zero", batch_size=256, fast=False)
            for v in saliency.values()
        ]
    )
    rows.append(("  the same, fast=False (model as given)", exact, theirs))

    _, ours = timed(lambda: [pointing_game(v, masks, tolerance=0) for v in saliency.values()])
    pg = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)
    _, theirs = timed(
        lambda: [
            pg(
                model=model,
                x_batch=x_np,
                y_batch=y_np,
                a_batch=v[:, None].numpy(),
                s_batch=s_np,
                device="cpu",
            )
            for v in saliency.values()
        ]
    )
    rows.append(("pointing game (no tolerance)", ours, theirs))

    _, ours = timed(lambda: [energy_in_region(v, masks) for v in saliency.values()])
    rma = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)
    _, theirs = timed(
        lambda: [
            rma(
                model=model,
                x_batch=x_np,
                y_batch=y_np,
                a_batch=v.clamp_min(0)[:, None].numpy(),
                s_batch=s_np,
                device="cpu",
            )
            for v in saliency.values()
        ]
    )
    rows.append(("energy in mask / RelevanceMassAcc.", ours, theirs))

    def gradcam_np(model, inputs, targets, **kwargs):
        return gradcam(model, torch.as_tensor(inputs), torch.as_tensor(targets))[:, None].numpy()

    xs, ys = inputs[sub], targets[sub]
    _, ours = timed(lambda: sanity_cascade(model, xs, ys, gradcam, measures=("spearman",)))
    mprt = quantus.MPRT(
        layer_order="top_down",
        abs=False,
        normalise=False,
        disable_warnings=True,
        similarity_func=quantus.similarity_func.correlation_spearman,
    )
    _, theirs = timed(
        lambda: mprt(
            model=model,
            x_batch=xs.numpy(),
            y_batch=ys.numpy(),
            a_batch=gradcam_np(model, xs.numpy(), ys.numpy()),
            explain_func=gradcam_np,
            device="cpu",
            batch_size=len(xs),
        )
    )
    rows.append(("sanity cascade, Grad-CAM (MPRT)", ours, theirs))
    for name, o, t in rows:
        print(f"{name:<34}{o:>10.3f}{t:>10.3f}{t / o:>9.1f}x")
    print(
        "(no Quantus equivalent: insertion curve, occlusion rank correlation, WSL box error, tolerance "
        "pointing game, HOG similarity)"
    )


if __name__ == "__main__":
    main()
