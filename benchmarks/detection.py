"""How well does dupes find wrong labels? Full passes on real data with planted noise.

    .venv/bin/python benchmarks/detection.py                      # 8 CPU passes, ~25 min
    .venv/bin/python benchmarks/detection.py --cases mnist-sym-10 # one case
    .venv/bin/python benchmarks/detection.py --evaluate-only      # re-score finished runs
    .venv/bin/python benchmarks/detection.py --cases cifar-sym-10 cifar-asym-10 \
        cifar-human-aggre cifar-human-random1 mnist-sym-10:1000 cifar-sym-10:2000
                                                      # the wider ranking benchmark (#15)

Each case takes a random subset of a training set from ../shared/data (nothing is
committed), moves a share of the images to a wrong class folder, runs the whole `dupes run`
pass on the PNG folders, and scores every detector against the planted truth:

- dupes at each vote threshold, with the default ratio p(suggested) / p(given) >= 2 of the
  mean held-out probabilities, and with votes alone (the original method); the default
  detector is >= 8 votes of 10 with the ratio,
- argmax of the averaged out-of-sample probabilities != given label,
- cleanlab's `find_label_issues` with its defaults, on the same averaged probabilities,
- every ranking score (held-out loss, self-confidence, normalized margin, held-out AUM,
  forgetting, the combined rank), cut at cleanlab's own estimate of the number of issues
  (`num_label_issues`, k in the table), plus the average precision of the whole ranking.

Noise kinds: `sym` moves an image to a uniformly chosen other class; `asym` moves it to its
class's confusable partner (PAIRS below: a fixed, realistic class-pair mistake); `human`
(CIFAR-10 only) gives each image the label a CIFAR-10N annotator gave it (`aggre`: 9% wrong,
`random1`: 17%). `:N` sets a case's images (few per class: weak models).
Prints a table per case and writes benchmarks/results/detection.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
DATASETS = {"mnist": "mnist_train.npz", "fmnist": "fashion_mnist_train.npz",
            "cifar": "cifar10_train.npz"}
HUMAN = "cifar10_train_cifar10n_labels.npz"  # CIFAR-10N: real human label noise
# class -> the class its images are mistaken for (asymmetric noise)
PAIRS = {
    "mnist": {0: 6, 1: 7, 2: 7, 3: 8, 4: 9, 5: 6, 6: 5, 7: 1, 8: 3, 9: 4},
    # T-shirt<->Shirt, Pullover<->Coat, Sandal<->Sneaker, Boot->Sneaker, Trouser<->Dress, Bag->Pullover
    "fmnist": {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 5, 9: 7, 1: 3, 3: 1, 8: 2},
    # Patrini et al.'s truck->automobile, bird->airplane, deer->horse, cat<->dog, and a
    # partner for every other class
    "cifar": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3, 0: 8, 8: 0, 1: 9, 6: 3, 7: 4},
}
# The CPU settings of benchmarks/train_speed.py (measured best for a 2-core budget) with 12
# epochs instead of 6 (MNIST 10% noise: 97.3% accuracy against the true labels instead of
# 96.7%), and held-out losses recorded every 3rd epoch for the training-dynamics scores.
SETTINGS = ["--width", "16", "--epochs", "12", "--batch-size", "128", "--lr", "0.2",
            "--progressive", "0.5", "--no-flip", "--translate", "1", "--epoch-losses", "3"]
ALL_CASES = [f"{d}-{k}-{r}" for d in ("mnist", "fmnist") for k in ("sym", "asym")
             for r in (10, 20)]
# The wider ranking benchmark (issue #15): CIFAR-10 subsets with planted and with real human
# noise (CIFAR-10N's `aggre` and `random1` label sets), and weak models (few images per
# class: DATASET-KIND-PERCENT:N). These run with the defaults a pass chooses for the data
# (only the held-out losses recorded every 3rd epoch, for the dynamics scores).
WIDER_CASES = ["cifar-sym-10", "cifar-asym-10", "cifar-human-aggre", "cifar-human-random1",
               "mnist-sym-10:1000", "cifar-sym-10:2000"]
DEFAULTS = ["--epoch-losses", "3"]


def noisy_labels(labels: np.ndarray, *, rate: float, kind: str, dataset: str,
                 n_classes: int, seed: int) -> np.ndarray:
    """A copy of `labels` with exactly round(rate * n) of them changed."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    flip = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    if kind == "sym":
        shift = rng.integers(1, n_classes, size=len(flip))  # never the true class
        out[flip] = (labels[flip] + shift) % n_classes
    elif kind == "asym":
        pair = PAIRS[dataset]
        out[flip] = [pair[int(c)] for c in labels[flip]]
    else:
        raise ValueError(f"noise kind {kind!r}: valid kinds are 'sym', 'asym'")
    return out


def case_size(case: str, n: int) -> int:
    """The images of a case: its own `:N`, else --n."""
    return int(case.partition(":")[2] or n)


def prepare_case(case: str, work: Path, *, n: int, seed: int) -> Path:
    """Write the case's PNG folders (noisy labels) and truth.csv; returns the case folder."""
    dataset, kind, rate = case.partition(":")[0].split("-")
    n = case_size(case, n)
    folder = work / case.replace(":", "-n")
    if (folder / "truth.csv").exists():
        return folder
    d = np.load(DATA / DATASETS[dataset])
    classes = [str(c) for c in d["classes"]]
    pick = np.sort(np.random.default_rng(seed).choice(len(d["labels"]), size=n, replace=False))
    true = d["labels"][pick].astype(np.int64)
    if kind == "human":  # the labels CIFAR-10N's annotators gave
        key = {"aggre": "aggre_label", "random1": "random_label1", "worse": "worse_label"}[rate]
        given = np.load(DATA / HUMAN)[key][pick]
    else:
        given = noisy_labels(true, rate=int(rate) / 100, kind=kind, dataset=dataset,
                             n_classes=len(classes), seed=seed + 1)
    rows = []
    folders = [c.replace("/", "-") for c in classes]  # "T-shirt/top" is one class, not two
    for i, (img, t, g) in enumerate(zip(d["images"][pick], true, given)):
        rel = f"{folders[g]}/{pick[i]:05d}.png"
        (folder / "data" / folders[g]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / "data" / rel)
        rows.append((rel, classes[t], classes[g]))
    truth = pd.DataFrame(rows, columns=["relpath", "true_class", "given_class"])
    truth.to_csv(folder / "truth.csv", index=False)
    return folder


def run_case(folder: Path, log, settings: list[str] = SETTINGS) -> float:
    """`dupes run` on the case (resumed if an earlier attempt was interrupted)."""
    run = folder / "run"
    if (run / "summary.json").exists():
        return json.loads((run / "summary.json").read_text())["wall_s"]
    cmd = ([sys.executable, "-m", "orchestrator.cli.main", "run", "--resume", str(run)]
           if (run / "config.json").exists() else
           [sys.executable, "-m", "orchestrator.cli.main", "run", str(folder / "data"),
            "--out", str(run), *settings])
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise SystemExit(f"{folder.name}: dupes run failed (exit {res.returncode}); see the log")
    return time.perf_counter() - t0


def prf(flagged: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((flagged & truth).sum())
    p = tp / max(int(flagged.sum()), 1)
    r = tp / max(int(truth.sum()), 1)
    return {"flagged": int(flagged.sum()), "precision": p, "recall": r,
            "f1": 2 * p * r / max(p + r, 1e-12)}


def average_precision(score: np.ndarray, truth: np.ndarray) -> float:
    """Area under the precision-recall curve of a ranking (higher score = more suspect)."""
    order = np.argsort(-score, kind="stable")
    hits = truth[order].astype(np.float64)
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at * hits).sum() / max(hits.sum(), 1))


def evaluate(run: Path, truth_csv: Path) -> list[dict]:
    """Precision, recall and F1 of every detector on one finished run, against truth_csv
    (relpath, true_class, given_class)."""
    from analysis.rule import DupeRule
    from analysis.thresholds import parse_threshold
    from analysis.votes import select_dupes
    from orchestrator.run import partitions
    from orchestrator.run.directory import Run

    default_ratio = DupeRule().min_ratio

    analysis, _ = Run.open(run).analysis(min_ratio=0.0)
    votes = analysis.votes
    truth_df = pd.read_csv(truth_csv, dtype=str)  # all images, or only the wrong ones
    wrong = truth_df.loc[truth_df["true_class"] != truth_df["given_class"], "relpath"]
    truth = votes["relpath"].isin(set(wrong)).to_numpy()
    labels = votes["label"].to_numpy().astype(np.int64)
    probs = partitions.read_prediction_columns(run, mean_probs=True)["mean_probs"]
    rows = []
    for t in ("10", ">=9", ">=8", ">=7", ">=6", ">=5"):
        for ratio in (default_ratio, 0.0, 3.0):
            if ratio == 3.0 and t != ">=8":
                continue
            flagged = np.zeros(len(votes), bool)
            flagged[select_dupes(votes, parse_threshold(t), min_ratio=ratio)["sample_id"]
                    .to_numpy()] = True
            name = f"dupes {t}" + (f", ratio >= {ratio:g}" if ratio else ", votes alone")
            rows.append({"detector": name, **prf(flagged, truth),
                         "default": t == ">=8" and ratio == default_ratio})
    for cut in (0.1, 0.2):
        rows.append({"detector": f"mean p(given) <= {cut:g}, no votes",
                     **prf(votes["mean_prob_given"].to_numpy() <= cut, truth)})
    rows.append({"detector": "argmax(mean probs) != given",
                 **prf(probs.argmax(1) != labels, truth)})
    rows.append({"detector": "cleanlab find_label_issues",
                 **prf(votes["cl_issue"].to_numpy(), truth)})
    k = int(analysis.num_issues or truth.sum())
    for name in ("top_wrong_votes", "mean_loss", "self_confidence", "normalized_margin", "aum",
                 "forgetting", "combined"):
        if name not in votes:
            continue
        suspect = votes[name].to_numpy(np.float64)
        if name in ("self_confidence", "normalized_margin", "aum"):
            suspect = -suspect  # low quality = suspect
        suspect = np.nan_to_num(suspect, nan=-np.inf)
        flagged = np.zeros(len(votes), bool)
        flagged[np.argsort(-suspect, kind="stable")[:k]] = True
        rows.append({"detector": f"top-k {name}", **prf(flagged, truth), "k": k,
                     "average_precision": average_precision(suspect, truth)})
    from analysis.scores import combined_score
    scores = votes.rename(columns={"top_wrong_votes": "votes"})
    for mix in MIXES:  # candidates for the combined score: mean percentile ranks
        suspect = np.nan_to_num(combined_score(scores, inputs=mix), nan=-np.inf)
        flagged = np.zeros(len(votes), bool)
        flagged[np.argsort(-suspect, kind="stable")[:k]] = True
        rows.append({"detector": "top-k mix " + "+".join(mix), **prf(flagged, truth), "k": k,
                     "average_precision": average_precision(suspect, truth)})
    return rows


MIXES = [("normalized_margin", "self_confidence"), ("normalized_margin", "mean_loss"),
         ("normalized_margin", "aum"), ("self_confidence", "aum"),
         ("normalized_margin", "self_confidence", "aum")]


def markdown(results: dict) -> str:
    """F1 of the main detectors per case, then every detector's F1 and AP."""
    cases = list(results["cases"])
    lines = ["| detector | " + " | ".join(cases) + " |", "|---" * (len(cases) + 1) + "|"]
    names = [r["detector"] for r in results["cases"][cases[0]]["detectors"]]
    for name in names:
        cells = []
        for c in cases:
            row = next(r for r in results["cases"][c]["detectors"] if r["detector"] == name)
            cell = f"{row['f1']:.3f}"
            if "average_precision" in row:
                cell += f" / {row['average_precision']:.3f}"
            cells.append(f"**{cell}**" if row.get("default") else cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    acc = " | ".join(f"{results['cases'][c]['heldout_accuracy_mean']:.3f}" for c in cases)
    wall = " | ".join(f"{results['cases'][c]['wall_s']:.0f}" for c in cases)
    lines += [f"| held-out accuracy (vs noisy labels) | {acc} |", f"| pass wall (s) | {wall} |"]
    return "\n".join(lines)


def ranking_markdown(results: dict) -> str:
    """Average precision of every ranking score per case, with its mean and worst case: what
    the default order of the dupes (`--rank`, the `combined` score) is chosen by."""
    cases = list(results["cases"])
    names = list(dict.fromkeys(r["detector"] for c in cases for r in
                               results["cases"][c]["detectors"] if "average_precision" in r))
    lines = ["| ranking | " + " | ".join(cases) + " | mean | worst |",
             "|---" * (len(cases) + 3) + "|"]
    for name in names:
        aps = [next((r["average_precision"] for r in results["cases"][c]["detectors"]
                     if r["detector"] == name), float("nan")) for c in cases]
        lines.append(f"| {name.removeprefix('top-k ')} | "
                     + " | ".join("" if a != a else f"{a:.3f}" for a in aps)
                     + f" | {np.nanmean(aps):.3f} | {np.nanmin(aps):.3f} |")
    acc = " | ".join(f"{results['cases'][c]['heldout_accuracy_mean']:.3f}" for c in cases)
    lines.append(f"| held-out accuracy (vs given labels) | {acc} | | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", nargs="+", default=ALL_CASES,
                   help=f"cases as DATASET-KIND-PERCENT[:N] (default: {' '.join(ALL_CASES)}; "
                        f"the wider ranking benchmark adds {' '.join(WIDER_CASES)})")
    p.add_argument("--n", type=int, default=10000, help="images per case (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="subset and noise seed (default 0)")
    p.add_argument("--work", type=Path, default=None,
                   help="where the cases' data and runs go (default /tmp/dupes-detection/sSEED)")
    p.add_argument("--defaults", action="store_true",
                   help="run every case with the defaults a pass sizes to the data (only "
                        "--epoch-losses 3), saved as CASE@defaults")
    p.add_argument("--train-only", action="store_true", help="run the passes, score nothing")
    p.add_argument("--evaluate-only", action="store_true", help="score finished runs only")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "detection.json")
    p.add_argument("--markdown", action="store_true",
                   help="print the saved results as Markdown tables (for BENCHMARKS.md) and exit")
    args = p.parse_args()
    if args.markdown:
        saved = json.loads(args.out.read_text())
        print(markdown(saved) + "\n\n" + ranking_markdown(saved))
        return
    console = Console(width=130)
    args.work = args.work or Path(f"/tmp/dupes-detection/s{args.seed}"
                                  + ("-defaults" if args.defaults else ""))
    args.work.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"cases": {}}
    for case in args.cases:
        folder = prepare_case(case, args.work, n=args.n, seed=args.seed)
        settings = DEFAULTS if args.defaults or case in WIDER_CASES else SETTINGS
        if not args.evaluate_only:
            with open(folder / "run.log", "a") as log:
                wall = run_case(folder, log, settings)
            console.print(f"{case}: pass done in {wall:.0f} s", highlight=False)
        if args.train_only:
            continue
        rows = evaluate(folder / "run", folder / "truth.csv")
        summary = json.loads((folder / "run" / "summary.json").read_text())
        key = case if args.seed == 0 else f"{case}@seed{args.seed}"
        if args.defaults and case not in WIDER_CASES:
            key += "@defaults"
        results["cases"][key] = {
            "n": case_size(case, args.n), "seed": args.seed, "wall_s": summary["wall_s"],
            "settings": settings,
            "heldout_accuracy_mean": summary["heldout_accuracy_mean"], "detectors": rows}
        table = Table(title=f"{case}: {case_size(case, args.n)} images, held-out accuracy "
                            f"{summary['heldout_accuracy_mean']:.3f} (vs noisy labels)")
        for col in ("detector", "flagged", "precision", "recall", "F1", "AP"):
            table.add_column(col, justify="left" if col == "detector" else "right")
        for r in rows:
            table.add_row(r["detector"] + (" (default)" if r.get("default") else ""),
                          str(r["flagged"]), f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                          f"{r['f1']:.3f}", f"{r['average_precision']:.3f}"
                          if "average_precision" in r else "")
        console.print(table)
    results.update(machine=f"{platform.node()}, {os.cpu_count()} CPU cores, no GPU",
                   settings=SETTINGS, updated=time.strftime("%Y-%m-%d %H:%M"))
    if not args.train_only:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
