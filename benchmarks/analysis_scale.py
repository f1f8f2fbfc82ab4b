"""Analysis at scale: 1,000,000 samples x 10 held-out predictions, 10 and 100 classes.

    .venv/bin/python benchmarks/analysis_scale.py            # target: <= 10 s, <= 4 GB

Writes a synthetic run (Parquet partitions exactly as a pass writes them, snappy) to a temp
dir, then times the analysis in a fresh subprocess per case, as `dupes report` does it:
streaming the predictions (only the given label's probability is kept per row, plus a
running per-sample sum of the probability vectors for the scores), votes, dupes at the
thresholds, per-training accuracy, cleanlab's scores and flags on the mean probabilities,
the confusion matrix, and the top 50 losses; confident learning's flag of every row against
its training's thresholds (a pass records them per training; the synthetic run writes them
to thresholds.json) and the dupe count that takes them. `--no-scores` leaves out the mean
probabilities, cleanlab and the flags; `--no-flags` the flags alone. Peak memory is that
process's max RSS.
Prints a table and writes benchmarks/results/analysis_scale.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_run(run: Path, n: int, classes: int, repeats: int, seed: int = 0) -> None:
    from analysis.confident import confident_thresholds, thresholds_json
    from orchestrator.run import partitions, rundir
    rng = np.random.default_rng(seed)
    thresholds = {}
    labels = rng.integers(0, classes, n)
    run.mkdir(parents=True)
    rundir.write_parquet(run / "index.parquet", pd.DataFrame({
        "sample_id": np.arange(n), "relpath": [f"{c}/img_{i}.png" for i, c in enumerate(labels)],
        "label": labels.astype(np.int16), "class_name": labels.astype(str)}))
    for r in range(repeats):
        fold = rng.integers(0, 2, n)
        for f in (0, 1):
            held = np.flatnonzero(fold == f)
            lab = labels[held]
            pred = np.where(rng.random(len(held)) < 0.9, lab, rng.integers(0, classes, len(held)))
            probs = rng.random((len(held), classes), dtype=np.float32)
            probs /= probs.sum(1, keepdims=True)
            thresholds[f"{r},{f}"] = thresholds_json(confident_thresholds(lab, probs, classes))
            part = partitions.partition_dir(run, r, f)
            part.mkdir(parents=True)
            pq.write_table(pa.table({
                "sample_id": pa.array(held, pa.int64()), "label": pa.array(lab, pa.int16()),
                "pred": pa.array(pred, pa.int16()),
                "loss": pa.array(-np.log(probs[np.arange(len(held)), lab]), pa.float32()),
                "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), classes)}),
                part / "part-0.parquet")
    rundir.write_json(run / "thresholds.json", thresholds)


def analyse(run: Path, classes: int, scores: bool, flags: bool) -> dict:
    """Runs in its own process: the timed part."""
    import resource

    from analysis.confident import thresholds_from_json

    from analysis.losses import loss_stats, top_losses
    from analysis.rule import DupeRule
    from analysis.run_analysis import analyze
    from orchestrator.run import partitions
    t0 = time.perf_counter()
    thresholds = None
    if scores and flags:
        thresholds = {tuple(int(v) for v in k.split(",")): thresholds_from_json(t) for k, t in
                      json.loads((run / "thresholds.json").read_text()).items()}
    cols = partitions.read_prediction_columns(run, mean_probs=scores, thresholds=thresholds)
    t1 = time.perf_counter()
    index = pd.read_parquet(run / "index.parquet")
    a = analyze(index, cols, [str(c) for c in range(classes)], scores=scores,
                rule=DupeRule() if scores else DupeRule(min_ratio=0))  # the ratio needs the mean probabilities
    t2 = time.perf_counter()
    top = top_losses(loss_stats(cols["sample_id"], cols["loss"], num_samples=len(index)), k=50)
    t3 = time.perf_counter()
    return {"read_s": t1 - t0, "analyze_s": t2 - t1, "top_losses_s": t3 - t2,
            "total_s": t3 - t0, "scores": scores, "n_top": len(top),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "rows": a.n_prediction_rows, "n_dupes": len(a.dupes),
            "flags": "confident_votes" in a.votes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    p.add_argument("--no-scores", action="store_true",
                   help="votes, dupes and top losses only: no mean probabilities, no cleanlab")
    p.add_argument("--no-flags", action="store_true",
                   help="without confident learning's per-row flags (runs recorded before them)")
    p.add_argument("--_analyse", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._analyse:
        print(json.dumps(analyse(Path(args._analyse[0]), int(args._analyse[1]),
                                 args._analyse[2] == "1", args._analyse[3] == "1")))
        return
    rows = []
    for c in args.classes:
        tmp = Path(tempfile.mkdtemp(prefix="dupes-scale-"))
        try:
            t = time.perf_counter()
            write_run(tmp / "run", args.samples, c, args.repeats)
            gen = time.perf_counter() - t
            size = sum(f.stat().st_size for f in (tmp / "run").rglob("*.parquet")) / 2**30
            out = subprocess.run([sys.executable, __file__, "--_analyse", str(tmp / "run"), str(c),
                                  "0" if args.no_scores else "1",
                                  "0" if args.no_flags else "1"],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append({"samples": args.samples, "classes": c, "parquet_gb": size,
                     "generate_s": gen, **r})
    what = "votes, dupes, top losses" + ("" if args.no_scores else ", cleanlab scores, errors"
                                          + ("" if args.no_flags else ", flags"))
    table = Table(title=f"analysis at scale ({platform.node()}): {what}")
    cols = ["samples", "classes", "rows", "parquet_gb", "read_s", "analyze_s", "top_losses_s",
            "total_s", "peak_rss_gb", "n_dupes"]
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(*[f"{r[k]:.2f}" if isinstance(r[k], float) else f"{r[k]:,}" for k in cols])
    Console(width=200).print(table)
    out = ROOT / "benchmarks" / "results" / (
        "analysis_scale_votes_only.json" if args.no_scores else
        "analysis_scale_no_flags.json" if args.no_flags else "analysis_scale.json")
    out.write_text(json.dumps({"command": "python benchmarks/analysis_scale.py"
                               + (" --no-scores" if args.no_scores else "")
                               + (" --no-flags" if args.no_flags else ""),
                               "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "target": {"total_s": 10, "peak_rss_gb": 4}, "runs": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
