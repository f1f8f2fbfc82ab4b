"""Does mirroring keep the labels? The measurement behind the flip decision of a pass.

    .venv/bin/python benchmarks/mirror_check.py [--seeds 3]

For the demo's digits (scikit-learn) and the 10k test sets of MNIST, Fashion-MNIST and
CIFAR-10 (../shared/data), runs `trainers.sanity.mirror_check` (the small CNN trained without
flips on 1,024 images, predicting 1,024 held-out images as they are and mirrored, 1 CPU
thread) with several seeds. Prints the share of above-chance accuracy each keeps on mirrored
images, and the decision (flips on at >= MIRROR_KEEPS); writes
benchmarks/results/mirror_check.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "mirror_check.json"
DATASETS = ("digits", "mnist_test", "fashion_mnist_test", "cifar10_test")


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        return (d.images * 255 / 16).astype(np.uint8)[..., None], d.target
    d = np.load(SHARED / f"{name}.npz")
    x = d["images"]
    return (x[..., None] if x.ndim == 3 else x), d["labels"]


def main() -> None:
    from trainers.sanity import MIRROR_KEEPS, mirror_check

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds per dataset")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in DATASETS:
        x, y = load(name)
        for seed in range(args.seeds):
            m = mirror_check(x, y, seed=seed)
            flip, why = m.decision()
            rows.append({"dataset": name, "seed": seed, "accuracy": m.accuracy,
                         "mirrored_accuracy": m.mirrored_accuracy, "chance": m.chance,
                         "kept": m.kept, "flip": flip, "seconds": m.seconds})
    table = Table(title=f"mirror check (flips on at kept >= {MIRROR_KEEPS})")
    for col in ("dataset", "seed", "accuracy", "mirrored", "chance", "kept", "flips", "s"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["dataset"], str(r["seed"]), f"{r['accuracy']:.3f}",
                      f"{r['mirrored_accuracy']:.3f}", f"{r['chance']:.3f}", f"{r['kept']:.2f}",
                      "on" if r["flip"] else "off", f"{r['seconds']:.1f}")
    Console().print(table)
    OUT.write_text(json.dumps({"rows": rows, "threads": 1}, indent=1))


if __name__ == "__main__":
    main()
