"""A budget on a machine that gets busy (issue #27, item 4): does `--budget` hold?

    .venv/bin/python benchmarks/budget_load.py --work /tmp/bm        # ~10 min

`dupes run DATA --budget B` on 2,000 MNIST training images (5% planted; the small CNN, which
the plan chooses for small gray images, so the trainings are most of the wall), twice: on a
quiet machine, and with a CPU burner (one busy process per core) started once the plan has
been probed, as a second job arriving would. Reports the wall against the budget, when the
pass first said it would be late, and how many trainings it dropped to keep it.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

from record import append_run  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "budget_load.json"


def burn(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x = (x * 7 + 3) % 1_000_003


def one(data: Path, out: Path, budget: str, burners: int) -> dict:
    cmd = [sys.executable, "-u", "-m", "orchestrator.cli.main", "run", str(data), "--out",
           str(out), "--budget", budget]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    procs, first_note, lines = [], None, []
    for line in proc.stdout:
        lines.append(line)
        if burners and not procs and "trainings on" in line:  # the plan is made: load arrives
            procs = [mp.Process(target=burn, args=(time.time() + 3600,)) for _ in range(burners)]
            for p in procs:
                p.start()
        if first_note is None and line.startswith("budget:"):
            first_note = (time.perf_counter() - t0, line.strip())
    proc.wait()
    wall = time.perf_counter() - t0
    for p in procs:
        p.terminate()
    summary = json.loads((out / "summary.json").read_text())
    (out.parent / f"log-{out.name}.txt").write_text("".join(lines))
    return {"burners": burners, "wall_s": wall, "exit": proc.returncode,
            "trainings": summary["n_trainings"],
            "dropped": len(summary.get("dropped_for_budget", [])),
            "first_note_s": first_note[0] if first_note else None,
            "first_note": first_note[1] if first_note else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--budget", default="3m")
    args = ap.parse_args()
    from models import make_case
    from orchestrator.config import parse_duration
    folder = args.work / "budget-mnist"
    if not (folder / "data").exists():
        make_case("mnist", folder / "data")
    budget_s = parse_duration(args.budget)
    rows = []
    for burners in (0, os.cpu_count() or 2):
        out = folder / f"run-burn{burners}-{time.strftime('%H%M%S')}"
        row = one(folder / "data", out, args.budget, burners)
        row["budget_s"] = budget_s
        rows.append(row)
        print(f"burners {burners}: wall {row['wall_s']:.0f} s of a {budget_s:.0f} s budget "
              f"({row['wall_s'] / budget_s - 1:+.0%}); {row['trainings']} trainings, "
              f"{row['dropped']} dropped; first said late at "
              f"{row['first_note_s'] or float('nan'):.0f} s", flush=True)
    append_run(OUT, results=rows)


if __name__ == "__main__":
    main()
