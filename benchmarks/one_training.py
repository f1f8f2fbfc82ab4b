"""One training on half of a dataset, predicting the other half, on 1 CPU thread: the unit
the defaults' rule was chosen with (BENCHMARKS.md, "Defaults sized to the data").

    .venv/bin/python benchmarks/one_training.py mnist_test 10000 '{"width": 16, "epochs": 12}' [SEED]

DATASET is a file of ../shared/data without .npz, or `digits` (scikit-learn's, the demo's);
N the images used (a seeded sample); the JSON sets hyperparameters on top of the small CNN's
Hyp defaults. Prints one JSON line
(held-out accuracy, seconds) and appends it to benchmarks/results/one_training.jsonl.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def cpu_model() -> str:
    """The CPU's model name: seconds from different machines are not comparable (the pass's
    probe measured 2,034 training images/s on an AMD EPYC here, 3,498 on an Intel Xeon)."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform
    return platform.processor() or "unknown"


def main() -> None:
    from trainers.hyp import Hyp
    from trainers.train import train

    name, n, given = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0  # the training's seed
    torch.set_num_threads(1)
    if name == "digits":  # the demo's images (scikit-learn), as `dupes demo` scans them
        from sklearn.datasets import load_digits
        dg = load_digits()
        d = {"images": np.round(dg.images * (255 / 16)).astype(np.uint8), "labels": dg.target}
    else:
        d = np.load(SHARED / f"{name}.npz")
    pick = np.random.default_rng(0).permutation(len(d["labels"]))[:n]
    x, y = d["images"][pick], d["labels"][pick]
    x = x[..., None] if x.ndim == 3 else x
    halves = np.random.default_rng(1).permutation(n)
    tr, ev = np.sort(halves[:n // 2]), np.sort(halves[n // 2:])
    hyp = replace(Hyp(model="smallcnn"), **given)
    t0 = time.perf_counter()
    out = train(hyp, x, y, tr, ev, seed=seed)
    row = {"dataset": name, "n": n, "hyp": given, "seed": seed, "heldout_accuracy": float((out.pred == y[ev]).mean()),
           "seconds": time.perf_counter() - t0, "cpu": cpu_model()}
    print(json.dumps(row))
    with open(ROOT / "benchmarks" / "results" / "one_training.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
