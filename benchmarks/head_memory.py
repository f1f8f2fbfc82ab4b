"""A frozen pass's head at scale: memory and wall of one head, resident against streamed
(issue #24; trainers.heads.train_head).

    .venv/bin/python benchmarks/head_memory.py                 # ~10 min on 2 cores
    .venv/bin/python benchmarks/head_memory.py --rows 50000 --dim 1280

Writes N x D float16 embeddings as the embedding pass does (shards of 10,000 rows, .npy) to a
temp folder, with 10 classes whose means differ a little (a head has something to fit), then
trains one logistic-regression head on a random half and predicts the other, as a pass's
worker does: on the shards memory-mapped (`ShardedFeatures`), resident (the half gathered as
float32) or streamed (16,384 rows at a time). Each configuration runs in a fresh process so its
peak memory is its own: the peak of its anonymous resident memory (RssAnon, sampled every 10
ms) over what it held before the head, which leaves out the memory-mapped shards' pages (page
cache, shared and reclaimable, but counted in the total RSS, also reported). Prints a table,
writes benchmarks/results/head_memory.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from record import append_run  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "head_memory.json"
SHARD_ROWS = 10_000


def write(folder: Path, rows: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, rows)
    centres = rng.standard_normal((10, dim)).astype(np.float32) * 0.3
    for k, lo in enumerate(range(0, rows, SHARD_ROWS)):
        y = labels[lo:lo + SHARD_ROWS]
        x = rng.standard_normal((len(y), dim), dtype=np.float32) + centres[y]
        np.save(folder / f"shard-{k:05d}.npy", np.abs(x).astype(np.float16))  # post-ReLU-like
    np.save(folder / "labels.npy", labels)


def anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakAnon(threading.Thread):
    """The highest RssAnon seen while it runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = anon_mb(), threading.Event()

    def run(self):
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, anon_mb())


def one(folder: Path, streamed: bool, threads: int, prune: bool = False) -> dict:
    """One head in this process: its wall and this process's peak memory."""
    import torch

    from trainers.heads import train_head
    from trainers.hyp import Hyp
    from trainers.shards import ShardedFeatures
    torch.set_num_threads(threads)
    labels = np.load(folder / "labels.npy")
    n = len(labels)
    paths = sorted(str(p) for p in folder.glob("shard-*.npy"))
    ids = np.arange(n)
    features = ShardedFeatures(paths, (ids // SHARD_ROWS).astype(np.int32),
                               (ids % SHARD_ROWS).astype(np.int32))
    order = np.random.default_rng(1).permutation(n)
    before = anon_mb()
    watch = PeakAnon()
    watch.start()
    t0 = time.perf_counter()
    # one fit, or with --head-prune (a pass's default from halves of 1,000 images) three in
    # turn: a head on each half of the training half predicting the other, then the kept rows
    out = train_head(Hyp(mode="frozen", head_prune=prune), features, labels, order[:n // 2],
                     order[n // 2:], seed=0, num_classes=10, streamed=streamed)
    wall = time.perf_counter() - t0
    watch.stop.set()
    watch.join()
    return {"streamed": streamed, "wall_s": wall,
            "peak_anon_mb": max(watch.peak, anon_mb()) - before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "heldout_accuracy": float((out.pred == labels[order[n // 2:]]).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--dim", type=int, default=3864, help="3,864: the default Lite0+Lite2 with "
                    "their stage features (2,560: their final features alone)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--head-prune", action="store_true",
                    help="the pruned head (three fits; a pass's default from halves of 1,000)")
    ap.add_argument("--one", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # a child: one configuration
        print(json.dumps(one(Path(args.one[0]), args.one[1] == "streamed", args.threads,
                             args.head_prune)))
        return
    rows = []
    print("| rows (half) | dim | embeddings on disk | head | wall | the head's peak memory "
          "(anonymous) | peak RSS with mapped pages | held-out acc |\n"
          "|---|---|---|---|---|---|---|---|", flush=True)
    for n in args.rows:
        with tempfile.TemporaryDirectory(prefix="dupes-heads-") as tmp:
            write(Path(tmp), n, args.dim)
            for mode in ("resident", "streamed"):
                res = subprocess.run([sys.executable, __file__, "--one", tmp, mode,
                                      "--threads", str(args.threads),
                                      *(["--head-prune"] if args.head_prune else [])],
                                     check=True,
                                     capture_output=True, text=True)
                r = {"rows": n, "dim": args.dim, "disk_mb": n * args.dim * 2 / 2**20,
                     "head_prune": args.head_prune,
                     **json.loads(res.stdout.strip().splitlines()[-1])}
                rows.append(r)
                print(f"| {n:,} ({n // 2:,}) | {args.dim:,} | {r['disk_mb']:,.0f} MB | {mode} | "
                      f"{r['wall_s']:.1f} s | {r['peak_anon_mb']:,.0f} MB | "
                      f"{r['peak_rss_mb']:,.0f} MB | "
                      f"{r['heldout_accuracy']:.3f} |", flush=True)
    append_run(OUT, threads=args.threads, results=rows)


if __name__ == "__main__":
    main()
