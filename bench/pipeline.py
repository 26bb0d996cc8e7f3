"""Benchmark of the gpu-queue step of preparation, and the README's example stimuli.

``python bench/pipeline.py`` explains a two-category photo composite (skimage's chelsea the
cat | coffee) with EfficientNet-Lite0 for the six methods of the discrimination demo, renders
every map the way the pipeline does (``studies.pipeline.gpu.explain_runner``), and prints stimuli
per second for a batch of ``--batch`` copies. ``--docs DIR`` also writes one PNG per method
(the map for the cat, the left half) for the README.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xaistudy.settings")

METHODS = ["gradcam", "guided_gradcam", "guided_backprop", "deconvnet", "deconv_gradcam", "counterfactual_gradcam"]


def composite(size: int):  # type: ignore[no-untyped-def]
    """Cat on the left half, espresso on the right half, ``[3, size, size]`` in [0, 1]."""
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data

    halves = []
    for photo in (data.chelsea(), data.coffee()):
        h, w = photo.shape[:2]
        crop_w = min(w, h // 2)
        x0 = (w - crop_w) // 2
        half = Image.fromarray(photo[:, x0:x0 + crop_w]).resize((size // 2, size), Image.Resampling.BILINEAR)
        halves.append(np.asarray(half))
    pixels = np.concatenate(halves, axis=1).astype(np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--docs", type=Path, help="write <method>.png here")
    args = parser.parse_args()

    import django
    import torch

    django.setup()
    from explainers import explain
    from explainers.zoo import load_model
    from studies.pipeline.gpu.explain_runner import _render_gradient, _render_overlay

    torch.set_num_threads(args.threads)
    loaded = load_model("efficientnet_lite0")
    names = [n.lower() for n in loaded.class_names]
    cat, coffee = names.index("tabby"), names.index("espresso")
    image = composite(loaded.input_size)
    x = loaded.preprocess(image.unsqueeze(0)).repeat(args.batch, 1, 1, 1)
    targets = torch.tensor([[cat, coffee]] * args.batch)
    explain(loaded.model, x[:1], targets[:1], METHODS, loaded.default_layer)  # warm-up
    started = time.perf_counter()
    maps = explain(loaded.model, x, targets, METHODS, loaded.default_layer)
    explained = time.perf_counter() - started
    pngs = {}
    for method in METHODS:
        for b in range(args.batch):
            for k in range(2):
                value = maps[method][b, k]
                pngs[(method, b, k)] = _render_gradient(value) if value.dim() == 3 else _render_overlay(image, value)
    total = time.perf_counter() - started
    n = len(pngs)
    print(f"efficientnet_lite0 {loaded.input_size}px, batch {args.batch} x 2 targets x {len(METHODS)} methods "
          f"= {n} stimuli, {args.threads} threads")
    print(f"explain {explained:.2f}s, explain+render {total:.2f}s: {n / total:.1f} stimuli/s, "
          f"mean PNG {sum(map(len, pngs.values())) / n / 1024:.1f} KiB")
    if args.docs:
        args.docs.mkdir(parents=True, exist_ok=True)
        import io

        from PIL import Image

        for method in METHODS:
            path = args.docs / f"{method}.png"  # 256-colour palette keeps each under 100 KB
            Image.open(io.BytesIO(pngs[(method, 0, 0)])).quantize(256).save(path, optimize=True)
            print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
