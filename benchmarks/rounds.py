"""Close the loop (issue #25): do the corrections make a better model, round by round?

    .venv/bin/python benchmarks/rounds.py --work /tmp/bm   # both cases: ~20 min on 2 cores when
                                                           # benchmarks/models.py left round 1
    .venv/bin/python benchmarks/rounds.py --work /tmp/bm --cases c10n-aggre --budgets 0.05

The whole loop as a user runs it, with a simulated technician who knows the truth:
- round 1: `dupes run` on the noisy data (the `CASE:frozen` run of benchmarks/models.py in the
  same --work is reused: the same command), `dupes review export`, then the technician
  decides at most B images (B = a share of the dataset) in the product's own review order
  through the triage server's decision endpoint (the HTTP calls the review page makes):
  relabel to the true class, keep the label where it was right; then `dupes apply`;
- round 2: `dupes run` on the corrected copy (it finds its round and ledger itself), the same
  review of B images, `dupes apply`;
- the final classifier on the noisy labels, after round 1, after round 2 and on the true
  labels (the ceiling): the project's frozen-feature head (a logistic regression on the
  EfficientNet-Lite0 features of the round-1 run, trained on all 10,000 images), tested on
  the 10,000 CIFAR-10 test images. The head is convex and fit to convergence, so its three
  seeds agree exactly (spread 0): the spread a user would see comes from the labels.

Cases: the first 10,000 CIFAR-10 training images under CIFAR-10N's "aggregate" (9.1% wrong)
and "worst" (41.0% wrong) human labels. Prints a table, writes benchmarks/results/rounds.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from record import append_run  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "rounds.json"
CASES = ["c10n-aggre", "c10n-worst"]
SEEDS = (0, 1, 2)


def dupes(*argv, log: Path) -> None:
    with open(log, "a") as f:
        res = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *map(str, argv)],
                             cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode not in (0, 1):
        raise SystemExit(f"dupes {' '.join(map(str, argv))} exited {res.returncode}; see {log}")


def technician(review: Path, truth_by_name: dict, classes: list[str], budget: int,
               ledger: Path) -> dict:
    """Decide the first `budget` images of the review in the page's order, through the
    triage server's HTTP endpoint, as the review page does; returns the decisions' counts."""
    from orchestrator.review.server import ReviewServer
    server = ReviewServer(review, port=0, ledger=ledger).start()
    counts = {"relabel": 0, "accept": 0, "confirm": 0}

    def call(path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"X-Token": server.token,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    try:
        items = call("/api/state")["items"]
        for it in items[:budget]:
            true = classes[truth_by_name[Path(it["relpath"]).stem]]
            if true == it["given"]:
                decision, label = "confirm", None
            elif true == it["suggested"]:
                decision, label = "accept", None
            else:
                decision, label = "relabel", true
            call("/api/decide", {"review_path": it["review_path"], "decision": decision,
                                 "label": label})
            counts[decision] += 1
    finally:
        server.stop()
    return counts


def labels_of(data: Path, classes: list[str]) -> dict[str, int]:
    """file stem -> the class folder it is in (the given label of that dataset version)."""
    return {p.stem: classes.index(p.parent.name) for p in data.glob("*/*.png")}


def wrong_share(given: dict[str, int], truth: dict[str, int]) -> float:
    return float(np.mean([given[s] != truth[s] for s in given]))


def test_features(spec) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 test: features through the run's backbone (cached beside this script's work)."""
    from models import DATA
    from trainers.backbones import embed, feature_extractor
    d = dict(np.load(DATA / "cifar10_test.npz"))
    ext, _ = feature_extractor(spec["backbone"], size=spec["size"])
    return embed(ext, d["images"]), d["labels"].astype(np.int64)


def final_accuracy(train_x, train_y, test_x, test_y) -> list[float]:
    """The frozen-feature head on all training images, tested; one accuracy per seed."""
    from trainers.heads import train_head
    from trainers.hyp import Hyp
    x = np.concatenate([train_x, test_x])
    y = np.concatenate([train_y, test_y])
    tr, ev = np.arange(len(train_x)), np.arange(len(train_x), len(x))
    return [float((train_head(Hyp(mode="frozen"), x, y, tr, ev, seed=s,
                              num_classes=10).pred == test_y).mean()) for s in SEEDS]


def run_case(case: str, work: Path, budget_share: float, test: tuple) -> dict:
    from orchestrator.run.directory import Run
    from orchestrator.run.embeddings import EmbedSpec, stored_features
    from models import run_case as models_case
    folder = work / case
    models_case(f"{case}:frozen", work)  # round 1: reused when benchmarks/models.py ran it
    run1 = folder / "run-frozen"
    truth_rel = json.loads((folder / "truth.json").read_text())
    truth = {Path(r).stem: t for r, (_, t) in truth_rel.items()}
    classes = Run.open(run1).classes()
    tag = f"b{budget_share:g}"
    loop = folder / f"rounds-{tag}"
    loop.mkdir(exist_ok=True)
    log = loop / "log.txt"
    budget = int(round(budget_share * len(truth)))
    ledger = loop / "ledger.csv"
    row = {"case": case, "budget": budget, "budget_share": budget_share, "n": len(truth)}
    versions = {"noisy": folder / "data"}
    runs = [run1]
    t0 = time.perf_counter()
    for k in (1, 2):
        review = loop / f"review{k}"
        if not (loop / f"data-r{k}").exists():
            if not review.exists():
                dupes("review", "export", runs[-1], "--out", review, "--ledger", ledger, log=log)
            row[f"decisions_r{k}"] = technician(review, truth, classes, budget, ledger)
            dupes("apply", review / "manifest.csv", "--data", versions[list(versions)[-1]],
                  "--out", loop / f"data-r{k}", log=log)
        versions[f"round{k}"] = loop / f"data-r{k}"
        if k == 1:
            run2 = loop / "run-r2"
            if not (run2 / "summary.json").exists():
                dupes(*(["run", "--resume", run2] if (run2 / "config.json").exists() else
                        ["run", loop / "data-r1", "--out", run2]), log=log)
            runs.append(run2)
        actions = pd.read_csv(review / "manifest.csv", dtype=str)["action"].tolist()
        fixed = sum(a in ("relabel", "remove") for a in actions)
        row[f"reviewed_r{k}"] = len([a for a in actions if a != "unsure"])
        row[f"precision_r{k}"] = fixed / max(1, row[f"reviewed_r{k}"])
    row["loop_wall_s"] = time.perf_counter() - t0
    for name, data in versions.items():
        row[f"wrong_{name}"] = wrong_share(labels_of(data, classes), truth)
    # the final classifier: the round-1 run's features (the same images in every version)
    r1 = Run.open(run1)
    spec = EmbedSpec(**r1.config().embedding)
    feats = stored_features(r1, spec, local=True)[1].gather(np.arange(len(truth)))
    stems = [Path(r).stem for r in r1.index()["relpath"]]
    test_x, test_y = test
    for name, data in [*versions.items(), ("true", None)]:
        given = truth if data is None else labels_of(data, classes)
        keep = np.array([s in given for s in stems])
        y = np.array([given[s] for s, k in zip(stems, keep) if k])
        accs = final_accuracy(feats[keep].astype(np.float32), y, test_x, test_y)
        row[f"test_{name}"] = {"mean": float(np.mean(accs)), "spread": float(np.ptp(accs))}
    gap = row["test_true"]["mean"] - row["test_noisy"]["mean"]
    row["recovered"] = ((row["test_round2"]["mean"] - row["test_noisy"]["mean"]) / gap
                        if gap > 0 else float("nan"))
    return row


def table(rows: list[dict]) -> str:
    lines = ["| case | budget / round | wrong labels: round 0 / 1 / 2 | reviewed (precision) "
             "round 1, 2 | test accuracy: noisy / round 1 / round 2 / true labels | gap "
             "recovered |", "|---|---|---|---|---|---|"]
    for r in rows:
        t = {k: r[f"test_{k}"]["mean"] for k in ("noisy", "round1", "round2", "true")}
        lines.append(
            f"| {r['case']} | {r['budget']:,} ({r['budget_share']:.0%}) | "
            f"{r['wrong_noisy']:.1%} / {r['wrong_round1']:.1%} / {r['wrong_round2']:.1%} | "
            f"{r['reviewed_r1']:,} ({r['precision_r1']:.0%}), {r['reviewed_r2']:,} "
            f"({r['precision_r2']:.0%}) | {t['noisy']:.3f} / {t['round1']:.3f} / "
            f"{t['round2']:.3f} / {t['true']:.3f} (spread "
            f"{max(r[f'test_{k}']['spread'] for k in t):.3f}) | {r['recovered']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.05],
                    help="review budgets per round, as shares of the dataset")
    ap.add_argument("--work", type=Path, required=True,
                    help="folder of the cases (benchmarks/models.py's --work: its runs are "
                         "round 1)")
    args = ap.parse_args()
    from orchestrator.run.directory import Run
    test = None
    rows = []
    for case in args.cases:
        for b in args.budgets:
            if test is None:
                from models import run_case as models_case
                models_case(f"{case}:frozen", args.work)
                test = test_features(Run.open(args.work / case / "run-frozen").config().embedding)
            rows.append(run_case(case, args.work, b, test))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    append_run(OUT, results=rows)


if __name__ == "__main__":
    main()
