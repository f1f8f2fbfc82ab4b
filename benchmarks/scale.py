"""The data plane at scale: memory and throughput of a short pass on synthetic JPEG datasets.

    .venv/bin/python benchmarks/scale.py --sizes 20000 60000 200000
    .venv/bin/python benchmarks/scale.py --sizes 20000 --modes resident streamed
    .venv/bin/python benchmarks/scale.py --sizes 500000          # cache > this machine's RAM

Each dataset is 128 px RGB JPEGs in 10 class folders, made from CIFAR-10's training images
(../shared/data/cifar10_train.npz, upscaled, with a per-copy colour jitter so copies differ),
kept in --work between runs (nothing is committed). Each pass is `dupes run DATA --repeats 1
--epochs 1` with a small model (the small CNN after a 4x average-pooling stem) and no sanity
check, in its own process. Sampled every 0.5 s: the driver's RSS (the `dupes` process) and the
machine's used memory (MemTotal - MemAvailable, less what was used before the pass). Prints a
table and writes benchmarks/results/scale.json (one entry per run, merged by size and mode).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
CIFAR = ROOT.parent / "shared" / "data" / "cifar10_train.npz"
OUT = ROOT / "benchmarks" / "results" / "scale.json"
PASS = ["--repeats", "1", "--epochs", "1", "--model", "smallcnn", "--width", "8",
        "--stem-pool", "4", "--no-sanity", "--epoch-losses", "0", "--no-flip", "--translate",
        "0", "--image-size", "128"]


def _write_chunk(args) -> int:
    out, start, stop = args
    d = np.load(CIFAR)
    images, labels, classes = d["images"], d["labels"], d["classes"]
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        j = i % len(images)
        img = Image.fromarray(images[j]).resize((128, 128), Image.BICUBIC)
        if i >= len(images):  # a copy: jitter its colours so it is not a duplicate file
            arr = np.asarray(img, np.int16) + rng.integers(-12, 13, 3)
            img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        folder = out / str(classes[labels[j]])
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{i:07d}.jpg", quality=90)
    return stop - start


def make_dataset(out: Path, n: int) -> Path:
    marker = out / ".complete"
    if marker.exists():
        return out
    chunks = [(out, a, min(n, a + 5000)) for a in range(0, n, 5000)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        assert sum(pool.map(_write_chunk, chunks)) == n
    marker.write_text(str(n))
    return out


def used_bytes() -> int:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kb = lambda k: int(info[k].split()[0]) * 1024  # noqa: E731
    return kb("MemTotal") - kb("MemAvailable")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run_pass(data: Path, run: Path, mode: str) -> dict:
    base = used_bytes()
    cmd = [sys.executable, "-m", "orchestrator.cli.main", "run", str(data), "--out", str(run),
           "--data-mode", mode, *PASS]
    t0 = time.perf_counter()
    log = open(run.with_suffix(".log"), "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    peak = {"driver": 0, "machine": 0}

    def sample():
        while proc.poll() is None:
            try:
                peak["driver"] = max(peak["driver"], rss_bytes(proc.pid))
            except OSError:  # the process just ended
                pass
            peak["machine"] = max(peak["machine"], used_bytes() - base)
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    sampler.join()
    log.close()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"pass failed ({rc}): see {run.with_suffix('.log')}")
    s = json.loads((run / "summary.json").read_text())
    trainings = [json.loads(p.read_text()) for p in sorted((run / "trainings").glob("*.json"))]
    n = s["n_samples"]
    classes = json.loads((run / "classes.json").read_text())
    return {
        "n_images": n, "mode": mode, "modes_seen": sorted({t["data_mode"] for t in trainings}),
        "wall_s": wall, "scan_s": s["timings"]["scan_s"], "scan_images_per_s": n / s["timings"]["scan_s"],
        "training_s": [t["seconds"] for t in trainings],
        # one epoch on the training half, plus the held-out prediction of the other half
        "training_images_per_s": [(n - t["n_heldout"]) / t["seconds"] for t in trainings],
        "images_per_training_s": [n / t["seconds"] for t in trainings],
        "heldout_accuracy": [t["heldout_accuracy"] for t in trainings],
        "driver_peak_gb": peak["driver"] / 1e9, "machine_peak_gb": peak["machine"] / 1e9,
        "decoded_cache_gb": n * 128 * 128 * 3 / 1e9, "shards": classes.get("shards"),
        "cache_on_disk_gb": sum(f.stat().st_size for f in (run / "cache").glob("*.npy")) / 1e9,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[20000, 60000, 200000])
    p.add_argument("--modes", nargs="+", default=["auto"],
                   choices=["auto", "resident", "streamed"])
    p.add_argument("--work", type=Path, default=Path("/tmp/dupes-scale"),
                   help="where datasets (kept) and runs (removed after) go")
    args = p.parse_args()
    console = Console()
    results = json.loads(OUT.read_text())["runs"] if OUT.exists() else []
    for n in args.sizes:
        t0 = time.perf_counter()
        data = make_dataset(args.work / f"data-{n}", n)
        console.print(f"dataset of {n:,} JPEGs ready in {time.perf_counter() - t0:.0f} s")
        for mode in args.modes:
            run = args.work / f"run-{n}-{mode}"
            subprocess.run(["rm", "-rf", str(run), str(run.with_suffix(".log"))], check=True)
            r = run_pass(data, run, mode)
            console.print(r)
            results = [x for x in results if (x["n_images"], x["mode"]) != (n, mode)] + [r]
            subprocess.run(["rm", "-rf", str(run)], check=True)
    results.sort(key=lambda r: (r["n_images"], r["mode"]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": f"{platform.node()} {os.cpu_count()} CPUs",
                               "command": "benchmarks/scale.py", "pass": PASS, "runs": results},
                              indent=2) + "\n")
    table = Table(title="data plane at scale (128 px RGB JPEGs, --repeats 1 --epochs 1)")
    for col in ("images", "mode", "decoded GB", "driver peak GB", "machine peak GB", "scan img/s",
                "train img/s (per training)", "wall s"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(f"{r['n_images']:,}", "/".join(r["modes_seen"]),
                      f"{r['decoded_cache_gb']:.1f}", f"{r['driver_peak_gb']:.2f}",
                      f"{r['machine_peak_gb']:.2f}", f"{r['scan_images_per_s']:,.0f}",
                      " / ".join(f"{v:,.0f}" for v in r["training_images_per_s"]),
                      f"{r['wall_s']:.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
