"""Orchestration overhead of `dupes demo`: wall time against the trainings' own compute.

    overhead = demo wall / (sum of per-training compute seconds / concurrent slots)

1.0 would mean Ray, the scan, the writes and the analysis cost nothing beyond the trainings.
The demo wall is measured outside the process (imports included). Run:

    .venv/bin/python benchmarks/overhead.py                   # the demo as shipped, 3 times
    .venv/bin/python benchmarks/overhead.py --epochs 80 --runs 1   # longer trainings

Prints a table and writes benchmarks/results/overhead[-epochsN].json.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent


def one_demo(extra: list[str]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="dupes-overhead-"))
    try:
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "demo", "--out",
                              str(tmp / "demo"), *extra], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"demo failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        s = json.loads((tmp / "demo" / "run" / "summary.json").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ideal = s["compute_s"] / s["slots"]
    t = s["timings"]
    return {
        "wall_s": wall, "wall_in_process_s": s["wall_s"], "compute_s": s["compute_s"],
        "slots": s["slots"], "ideal_s": ideal, "overhead": wall / ideal,
        "fixed_s": wall - ideal, "ray_init_s": t.get("ray_init_s"),
        "train_launch_s": t.get("train_launch_s"), "trainings_s": t.get("trainings_s"),
        "train_teardown_s": t.get("train_teardown_s"), "scan_s": t.get("scan_s"),
        "analysis_s": t.get("analysis_s"), "planted_precision": s["planted_precision"],
        "planted_recall": s["planted_recall"], "heldout_accuracy_mean": s["heldout_accuracy_mean"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="demo runs to measure (default 3)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per training (default: demo's)")
    args = p.parse_args()
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    runs = [one_demo(extra) for _ in range(args.runs)]

    table = Table(title=f"dupes demo overhead ({platform.node()}, {len(runs)} run(s)"
                        + (f", --epochs {args.epochs}" if args.epochs else "") + ")")
    cols = ["wall_s", "compute_s", "slots", "ideal_s", "overhead", "fixed_s", "ray_init_s",
            "train_launch_s", "train_teardown_s", "planted_precision", "planted_recall"]
    table.add_column("run")
    for c in cols:
        table.add_column(c, justify="right")
    for i, r in enumerate(runs):
        table.add_row(str(i), *[f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols])
    median = {c: statistics.median(r[c] for r in runs) for c in cols}
    table.add_section()
    table.add_row("median", *[f"{median[c]:.2f}" for c in cols])
    Console(width=200).print(table)
    out = ROOT / "benchmarks" / "results" / (f"overhead-epochs{args.epochs}.json" if args.epochs
                                             else "overhead.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join(["python", "benchmarks/overhead.py", *sys.argv[1:]]),
        "machine": {"node": platform.node(), "cpus": __import__("os").cpu_count(),
                    "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": runs, "median": median,
        "target_overhead": 1.15,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
