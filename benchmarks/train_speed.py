"""Full dupes pass on MNIST's 10,000 test images on CPU: wall time, images/s, accuracy.

    .venv/bin/python benchmarks/train_speed.py            # target: <= 5 min on 2 cores

The images are written as PNG class folders to a temporary directory (from
../shared/data/mnist_test.npz; nothing is committed), then `dupes run` does the whole pass:
scan, sanity check, 20 trainings, predictions, analysis. Prints a table and writes
benchmarks/results/train_speed.json. The settings are the ones measured best for this
budget (width 16, 6 epochs, progressive resizing from 50%: 1.8x faster than full size for
-0.2 pt accuracy on one training).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "mnist_test.npz"
SETTINGS = ["--width", "16", "--epochs", "6", "--batch-size", "128", "--lr", "0.2",
            "--progressive", "0.5", "--no-flip", "--translate", "1"]


def write_pngs(npz: Path, out: Path) -> int:
    d = np.load(npz)
    for i, (img, label) in enumerate(zip(d["images"], d["labels"])):
        folder = out / str(d["classes"][label])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return len(d["labels"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA, help="an .npz with images/labels/classes")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dupes-speed-"))
    try:
        n = write_pngs(args.data, tmp / "data")
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "run", str(tmp / "data"),
                              "--out", str(tmp / "run"), *SETTINGS], cwd=ROOT,
                             capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"run failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        s = json.loads((tmp / "run" / "summary.json").read_text())
        trainings = [json.loads(f.read_text()) for f in sorted((tmp / "run" / "trainings").glob("*.json"))]
        sanity = json.loads((tmp / "run" / "sanity.json").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    secs = [t["seconds"] for t in trainings]
    accs = [t["heldout_accuracy"] for t in trainings]
    images_per_s = (n / 2) * 6 / np.mean(secs)  # training images x epochs / training seconds
    row = {"images": n, "wall_s": wall, "trainings": len(trainings),
           "training_s_mean": float(np.mean(secs)), "training_s_max": float(np.max(secs)),
           "train_images_per_s_per_training": float(images_per_s),
           "heldout_accuracy_mean": float(np.mean(accs)), "heldout_accuracy_min": float(np.min(accs)),
           "sanity_s": sanity["seconds"], "n_dupes": s["n_dupes"], "timings": s["timings"],
           "target_wall_s": 300}
    table = Table(title=f"MNIST test (10k) full pass on CPU ({platform.node()}, {os.cpu_count()} cores)")
    for k in ("wall_s", "trainings", "training_s_mean", "training_s_max",
              "train_images_per_s_per_training", "heldout_accuracy_mean", "heldout_accuracy_min",
              "sanity_s", "n_dupes"):
        table.add_column(k, justify="right")
    table.add_row(*[f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in (
        "wall_s", "trainings", "training_s_mean", "training_s_max",
        "train_images_per_s_per_training", "heldout_accuracy_mean", "heldout_accuracy_min",
        "sanity_s", "n_dupes")])
    Console(width=200).print(table)
    out = ROOT / "benchmarks" / "results" / "train_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/train_speed.py",
                               "settings": SETTINGS, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                               **row}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
