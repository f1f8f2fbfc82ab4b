"""The embedding path's cost per image: pretrained backbones with offline ImageNet weights
(EfficientNet-Lite0, and the default Lite0+Lite2 ensemble) on this machine's CPU threads at a
few input sizes, and one logistic-regression head.

    .venv/bin/python benchmarks/embed_speed.py                # Lite0 at 128, 192, 224 px
    .venv/bin/python benchmarks/embed_speed.py --sizes 96 160 --threads 1
    .venv/bin/python benchmarks/embed_speed.py --backbones efficientnet_lite0 \
        efficientnet_lite2 efficientnet_lite0+efficientnet_lite2 --sizes 192
    .venv/bin/python benchmarks/embed_speed.py --random-weights --sizes 192 224 --backbones \
        timm:vit_small_patch14_dinov2.lvd142m timm:convnext_tiny.fb_in22k   # hub backbones

Times `trainers.backbones.embed` (channels-last, batches of 32, the pass's CPU setting) on
256 random 64-px uint8 images (resized by the extractor, as the pass does), after one warm-up
batch (`--random-weights`: the architecture with random weights, for backbones whose
weights come from a hub this machine cannot reach: the speed is the same); and
`trainers.heads.train_head` on 5,000 x 1,280 random features (a training half of
10,000 images). Prints a table and writes benchmarks/results/embed_speed.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from record import append_run  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "embed_speed.json"


def main() -> None:
    from trainers.backbones import (LITE0, FeatureExtractor, backbone_spec, build, embed,
                                    feature_extractor)
    from trainers.heads import train_head
    from trainers.hyp import Hyp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 192, 224])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--backbones", nargs="+", default=[LITE0],
                    help="backbone names (a+b: an ensemble, as --backbone takes them)")
    ap.add_argument("--random-weights", action="store_true",
                    help="time each (single) backbone's architecture without its weights")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (args.images, 64, 64, 3), dtype=np.uint8)
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            if args.random_weights:
                model, _ = build(backbone, size=size, pretrained=False)
                ext = FeatureExtractor(model, backbone_spec(backbone), size).eval()
                ext = ext.to(memory_format=torch.channels_last).requires_grad_(False)
            else:
                ext, _ = feature_extractor(backbone, size=size)
            embed(ext, images[:32])
            t0 = time.perf_counter()
            embed(ext, images)
            rate = args.images / (time.perf_counter() - t0)
            rows.append({"backbone": backbone, "size": size, "images_per_s": rate,
                         "dim": int(ext.spec.dim), "random_weights": args.random_weights})
            print(f"{backbone} at {size} px: {rate:,.1f} images/s on {args.threads} thread(s)",
                  flush=True)
    feats = rng.standard_normal((10_000, 1280)).astype(np.float16)
    labels = rng.integers(0, 10, 10_000)
    t0 = time.perf_counter()
    train_head(Hyp(head_prune=False), feats, labels, np.arange(5000), np.arange(5000, 10_000),
               seed=0, num_classes=10)
    head_s = time.perf_counter() - t0
    print(f"one head (one fit, unpruned), 5,000 x 1,280 features, 10 classes: {head_s:.2f} s")
    print("| backbone | features | input size | images/s | 1M images | 10M images |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backbone']} | {r['dim']:,} | {r['size']} px | {r['images_per_s']:,.0f} | "
              f"{1e6 / r['images_per_s'] / 3600:,.1f} h | {1e7 / r['images_per_s'] / 3600:,.0f} h |")
    append_run(OUT, threads=args.threads, embed=rows, head_s_5000x1280=head_s)


if __name__ == "__main__":
    main()
