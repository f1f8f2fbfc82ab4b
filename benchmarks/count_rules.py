"""How many dupes under weak models: estimates of the count against the truth, on finished
passes of benchmarks/models.py (issue #24).

    .venv/bin/python benchmarks/models.py --work /tmp/bm ...      # the passes
    .venv/bin/python benchmarks/count_rules.py --work /tmp/bm     # ~2 min on 2 cores

Under `--select auto` a pass whose held-out accuracy is under 0.8 takes the N most suspect
images by its ranking (`combined`), N from an estimate (analysis/run_analysis.select). This
scores every estimate below by the F1 of that top-N set against the planted or human errors,
on each pass it finds under --work (every `CASE/run-*` with the case's truth.json), so a
change of the count is measured on all of them at once, not tuned on one:

- product: the smallest of confident learning's uncalibrated count, the votes' count (>= 8
  of the held-out predictions for one wrong class, that class >= 2x the label's mean
  probability) and, for passes whose trainings recorded their thresholds, "steady";
  confident learning's alone where the pass has too few repeats for 8 votes
- steady: images confident learning flags in >= 8 of their held-out predictions, each
  training's predictions tested against that training's own thresholds (what a pass records
  since --head-prune; n/a for older passes)
- cl: confident learning's uncalibrated off-diagonal count (cleanlab's default estimate)
- calibrated: its calibrated estimate (the report's noise estimate)
- votes: the votes' count alone
- both: cleanlab's `find_label_issues(filter_by="both")`
- ratio3: images whose most probable other class has >= 3x the label's mean probability
- unanimous: images whose every held-out prediction is the same wrong class
- cl x acc: confident learning's count times the held-out accuracy
- stable: images confident learning counts in at least 80% of the repeats, each repeat's
  held-out probabilities on their own (every image is predicted once per repeat)
- best: the N of the highest F1 (an oracle: what any count could reach with this ranking)

Prints a table (F1 per pass and estimate, the mean over the weak passes) and writes
benchmarks/results/count_rules.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from record import append_run  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "count_rules.json"
RULES = ("product", "cl", "calibrated", "votes", "both", "ratio3", "unanimous", "cl x acc",
         "stable", "steady")
WEAK_BELOW = 0.8  # analysis.rule.RANKING_BELOW_ACCURACY


def top_n_scores(order: np.ndarray, wrong: np.ndarray, n: int) -> dict:
    n = int(max(1, min(n, len(order))))
    hit = int(wrong[order[:n]].sum())
    p, r = hit / n, hit / max(1, int(wrong.sum()))
    return {"n": n, "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if hit else 0.0}


def stable_count(opened, labels: np.ndarray, num_classes: int) -> int:
    """Images off the confident joint's diagonal (cleanlab's uncalibrated count) in at least
    80% of the repeats, each repeat's predictions on their own."""
    from cleanlab.count import compute_confident_joint

    from analysis.scores import off_diagonal_rows
    table = opened.predictions(["sample_id", "repeat", "probs"]).to_pandas()
    n = len(labels)
    times = np.zeros(n, int)
    repeats = sorted(table["repeat"].unique())
    for rep in repeats:
        one = table[table["repeat"] == rep]
        p = np.zeros((n, num_classes))
        p[one["sample_id"].to_numpy()] = np.stack(one["probs"].to_numpy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, off = compute_confident_joint(labels, p, calibrate=False,
                                             return_indices_of_off_diagonals=True)
        times[off_diagonal_rows(labels, p, off)] += 1
    return int((times >= np.ceil(0.8 * len(repeats))).sum())


def labels_by_id(votes) -> np.ndarray:
    out = np.zeros(int(votes["sample_id"].max()) + 1, np.int64)
    out[votes["sample_id"].to_numpy()] = votes["label"].to_numpy()
    return out


def counts(analysis, mean_probs: np.ndarray, opened) -> dict:
    from cleanlab.filter import find_label_issues
    votes = analysis.votes
    y = votes["label"].to_numpy(np.int64)
    idx = np.arange(len(y))
    p = mean_probs[votes["sample_id"].to_numpy()]
    given = p[idx, y]
    other = p.copy()
    other[idx, y] = -1
    by_votes = int(((votes["top_wrong_votes"] >= 8)
                    & (votes["mean_prob_suggested"] >= 2 * votes["mean_prob_given"])).sum())
    few = int(votes["n_evals"].max()) < 8
    cl = int(analysis.num_confident)
    steady = (int((votes["confident_votes"] >= 8).sum()) if "confident_votes" in votes
              and not few else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = int(find_label_issues(y, p, filter_by="both", n_jobs=1).sum())
    product = cl if few else min(cl, by_votes, *([steady] if steady is not None else []))
    return {"product": product, "cl": cl,
            "calibrated": int(analysis.num_issues), "votes": None if few else by_votes,
            "both": both, "ratio3": int((other.max(1) >= 3 * given).sum()),
            "unanimous": int((votes["top_wrong_votes"] == votes["n_evals"]).sum()),
            "cl x acc": int(round(cl * float(analysis.accuracy["accuracy"].mean()))),
            "stable": stable_count(opened, labels_by_id(votes), p.shape[1]),
            "steady": steady}


def score_pass(run: Path) -> dict:
    from orchestrator.run.directory import Run
    truth = json.loads((run.parent / "truth.json").read_text())
    opened = Run.open(run)
    analysis, _ = opened.analysis()
    votes = analysis.votes
    wrong = np.array([truth[r][0] != truth[r][1] for r in votes["relpath"]])
    suspect = np.nan_to_num(votes["combined"].to_numpy(np.float64), nan=-np.inf)
    order = np.argsort(-suspect, kind="stable")
    mean_probs = opened.prediction_columns(mean_probs=True)["mean_probs"]
    est = counts(analysis, mean_probs, opened)
    scores = {k: (None if v is None else top_n_scores(order, wrong, v)) for k, v in est.items()}
    f1 = [top_n_scores(order, wrong, n)["f1"] for n in range(1, 3 * int(wrong.sum()) + 1)]
    scores["best"] = top_n_scores(order, wrong, int(np.argmax(f1)) + 1)
    return {"pass": f"{run.parent.name}/{run.name}", "n": len(votes), "wrong": int(wrong.sum()),
            "heldout_accuracy": float(analysis.accuracy["accuracy"].mean()), "scores": scores}


def table(rows: list[dict]) -> str:
    names = (*RULES, "best")
    lines = ["| pass | held-out acc | wrong | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for r in rows:
        cells = []
        for k in names:
            s = r["scores"][k]
            cells.append("n/a" if s is None else f"{s['n']:,}: {s['f1']:.3f}")
        lines.append(f"| {r['pass']} | {r['heldout_accuracy']:.3f} | {r['wrong']:,} | "
                     + " | ".join(cells) + " |")
    weak = [r for r in rows if r["heldout_accuracy"] < WEAK_BELOW]
    mean = []
    for k in names:
        got = [r["scores"][k]["f1"] for r in weak if r["scores"][k] is not None]
        mean.append(f"{np.mean(got):.3f} ({len(got)})" if got else "n/a")
    lines.append(f"| **mean F1, held-out acc < {WEAK_BELOW}** | | | " + " | ".join(mean) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="benchmarks/models.py's --work")
    ap.add_argument("--passes", nargs="*", default=None,
                    help="CASE/run-TAG under --work (default: every one with a truth.json)")
    args = ap.parse_args()
    runs = ([args.work / p for p in args.passes] if args.passes else
            sorted(r for r in args.work.glob("*/run-*")
                   if (r.parent / "truth.json").exists() and (r / "summary.json").exists()))
    rows = []
    for run in runs:
        rows.append(score_pass(run))
        print(table(rows[-1:]).splitlines()[2], flush=True)
    print("F1 of the top N by the pass's ranking (combined); each cell is N: F1\n")
    print(table(rows))
    append_run(OUT, results=rows)


if __name__ == "__main__":
    main()
