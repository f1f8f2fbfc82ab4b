"""Models that see (issue #24): whole `dupes run` passes, frozen features against the small CNN
from scratch, on planted and on real human label noise.

    .venv/bin/python benchmarks/models.py                       # every case below, ~40 min
    .venv/bin/python benchmarks/models.py --cases photos:frozen # one case in one mode

Cases (nothing from ../shared/data is committed; each is written to a temp folder):
- photos: the first 2,000 CIFAR-10 test images as JPEGs of 32-200 px, 5% planted in a wrong
  class folder (benchmarks/plan_estimate.py's photos case);
- c10n-aggre, c10n-worst: the first 10,000 CIFAR-10 training images under CIFAR-10N's
  "aggregate" (majority of three annotators) and "worst" human labels;
- digits, mnist, fmnist: the demo's digits (1,797), and the first 2,000 MNIST and
  Fashion-MNIST training images, 5% planted (symmetric);
- fmnist-pair (benchmarks/rounds.py's, not in the default list): the first 10,000
  Fashion-MNIST training images, 10% moved to their confusable partner class.

A case runs as `dupes run DATA --mode M` with no other flag (`auto` when M is left out) and is
scored against the true labels: the mean held-out accuracy (against the given labels, as the
report shows it, and against the true ones), the average precision of the default ranking
(`combined`), and the planted precision and recall of the dupe set the default rule chose
(and which rule that was). Prints a table and writes benchmarks/results/models.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from record import append_run  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "models.json"
CASES = ["photos:frozen", "photos:scratch", "c10n-aggre:frozen", "c10n-worst:frozen",
         "digits:frozen", "digits:scratch", "mnist:frozen", "mnist:scratch", "fmnist:frozen",
         "fmnist:scratch"]


def write(folder: Path, images: np.ndarray, given: np.ndarray, classes: list[str],
          ext: str = "png", sizes: np.ndarray | None = None) -> list[str]:
    rels = []
    for i, (img, label) in enumerate(zip(images, given)):
        rel = f"{classes[label]}/{i:05d}.{ext}"
        (folder / classes[label]).mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(img)
        if sizes is not None:
            im = im.resize((int(sizes[i][0]), int(sizes[i][1])), Image.BICUBIC)
        im.save(folder / rel, **({"quality": 90} if ext == "jpg" else {}))
        rels.append(rel)
    return rels


def planted(labels: np.ndarray, rate: float, n_classes: int, rng) -> np.ndarray:
    out = labels.copy()
    flip = rng.choice(len(labels), int(round(rate * len(labels))), replace=False)
    out[flip] = (labels[flip] + rng.integers(1, n_classes, len(flip))) % n_classes
    return out


def make_case(name: str, folder: Path) -> dict:
    """Writes the case's images into `folder`; returns {relpath: (given, true)}."""
    rng = np.random.default_rng(0)
    if name == "photos":
        d = dict(np.load(DATA / "cifar10_test.npz"))
        images, true = d["images"][:2000], d["labels"][:2000]
        classes = [str(c) for c in d["classes"]]
        given = true.copy()  # as plan_estimate.write_photos plants them
        pick = rng.choice(2000, 100, replace=False)
        given[pick] = (given[pick] + rng.integers(1, 10, 100)) % 10
        sizes = [rng.integers(32, 201, 2) for _ in range(2000)]
        rels = write(folder, images, given, classes, "jpg", sizes)
    elif name.startswith("c10n-"):
        d = dict(np.load(DATA / "cifar10_train.npz"))
        human = np.load(DATA / "cifar10_train_cifar10n_labels.npz")
        key = {"aggre": "aggre_label", "worst": "worse_label",
               "random1": "random_label1"}[name.split("-")[1]]
        images, true = d["images"][:10000], d["labels"][:10000]
        given = human[key][:10000].astype(np.int64)
        classes = [str(c) for c in d["classes"]]
        rels = write(folder, images, given, classes)
    elif name == "digits":
        from sklearn.datasets import load_digits
        dd = load_digits()
        images = np.round(dd.images * (255 / 16)).astype(np.uint8)
        true, classes = dd.target, [str(c) for c in range(10)]
        given = planted(true, 0.05, 10, rng)
        rels = write(folder, images, given, classes)
    elif name == "fmnist-pair":  # issue #25's case: 10% of the first 10,000 moved to the
        # confusable partner class (benchmarks/detection.py's pairs: shirt<->T-shirt, ...)
        from detection import noisy_labels
        d = dict(np.load(DATA / "fashion_mnist_train.npz"))
        images, true = d["images"][:10000], d["labels"][:10000].astype(np.int64)
        classes = [str(c).replace("/", "-") for c in d["classes"]]  # T-shirt/top: one folder
        given = noisy_labels(true, rate=0.10, kind="asym", dataset="fmnist", n_classes=10,
                             seed=1)
        rels = write(folder, images, given, classes)
    else:
        d = dict(np.load(DATA / {"mnist": "mnist_train.npz",
                                 "fmnist": "fashion_mnist_train.npz"}[name]))
        images, true = d["images"][:2000], d["labels"][:2000]
        classes = [str(c).replace("/", "-") for c in d["classes"]]  # T-shirt/top: one folder
        given = planted(true, 0.05, 10, rng)
        rels = write(folder, images, given, classes)
    return {r: (int(g), int(t)) for r, g, t in zip(rels, given, true)}


def average_precision(score: np.ndarray, truth: np.ndarray) -> float:
    order = np.argsort(-score, kind="stable")
    hits = truth[order].astype(np.float64)
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at * hits).sum() / max(hits.sum(), 1))


def review_order(analysis, suspect: np.ndarray, wrong: np.ndarray) -> dict:
    """Precision at 50 and 100 and average precision of the review order: the dupe list as
    the product orders it (after), and the same list votes-first as before; the images
    that are not dupes follow in both by the ranking."""
    ids = analysis.dupes["sample_id"].to_numpy()
    listed = analysis.dupes.assign(_s=suspect[ids])
    before = listed.sort_values(["top_wrong_votes", "_s"], ascending=False,
                                kind="stable")["sample_id"].to_numpy()
    rest = np.argsort(-suspect, kind="stable")
    rest = rest[~np.isin(rest, ids)]
    out = {}
    for name, order in (("before", before), ("after", ids)):
        hits = wrong[np.concatenate([order, rest])].astype(np.float64)
        prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        out[f"review_{name}"] = {"p50": float(hits[:50].mean()), "p100": float(hits[:100].mean()),
                                 "ap": float((prec * hits).sum() / max(hits.sum(), 1))}
    return out


def verdict(analysis) -> dict:
    """The weak-model warning: the old rule (held-out accuracy under half way from chance
    to 1) and the product's (`analysis.quality`), each as the warnings' first words."""
    from analysis.quality import quality_warnings
    chance = float(analysis.votes["given_class"].value_counts(normalize=True).max())
    acc = float(np.average(analysis.accuracy["accuracy"], weights=analysis.accuracy["n"]))
    now = [w.split(":")[0] for w in quality_warnings(analysis)]
    return {"before": "weak" if acc < chance + 0.5 * (1 - chance) else "-",
            "after": "; ".join(now) or "-", "agreement": analysis.agreement}


def score(run: Path, truth: dict) -> dict:
    from analysis.votes import RANKINGS
    from orchestrator.run.directory import Run
    analysis, _ = Run.open(run).analysis()
    votes = analysis.votes
    rel = votes["relpath"].to_numpy()
    wrong = np.array([truth[r][0] != truth[r][1] for r in rel])
    true = np.array([truth[r][1] for r in rel])
    rank = analysis.rule.rank
    suspect = votes[rank].to_numpy(np.float64)
    suspect = np.nan_to_num(suspect if RANKINGS[rank] else -suspect, nan=-np.inf)
    flagged = votes["sample_id"].isin(set(analysis.dupes["sample_id"])).to_numpy()
    tp = int((flagged & wrong).sum())
    # the case's class numbers are its source's; the scan numbers sorted folder names
    to_scan = dict(zip((truth[r][0] for r in rel), votes["label"].to_numpy().tolist()))
    true_scan = np.array([to_scan.get(t, -1) for t in true])
    preds = Run.open(run).prediction_columns()
    acc_true = float((preds["pred"] == true_scan[preds["sample_id"]]).mean())
    summary = json.loads((run / "summary.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    extra = {}
    for name in ("neighbours", "normalized_margin"):  # other rankings, for the record
        if name in votes:
            other = np.nan_to_num(-votes[name].to_numpy(np.float64), nan=-np.inf)
            extra[f"ap_{name}"] = average_precision(other, wrong)
    # one repeat's AP (its held-out loss), to set passes of 10 repeats beside one of 1
    first = preds["repeat"] == preds["repeat"].min()
    loss0 = np.full(len(votes), -np.inf)
    pos = dict(zip(votes["sample_id"].to_numpy().tolist(), range(len(votes))))
    loss0[[pos[s] for s in preds["sample_id"][first].tolist()]] = preds["loss"][first]
    extra["ap_one_repeat"] = average_precision(loss0, wrong)
    review = review_order(analysis, suspect, wrong)
    return {"n": len(votes), "wrong": int(wrong.sum()), "mode": cfg["hyp"]["mode"], **extra,
            **review, "verdict": verdict(analysis),
            "heldout_accuracy": float(analysis.accuracy["accuracy"].mean()),
            "heldout_accuracy_true": acc_true,
            "ap": average_precision(suspect, wrong), "rank": rank,
            "rule": analysis.set_name, "dupes": int(flagged.sum()),
            # confident learning's counts: calibrated (the report's noise estimate) and not
            # (the ranking's count under weak models)
            "cl_calibrated": analysis.num_issues, "cl_count": analysis.num_confident,
            "precision": tp / max(1, int(flagged.sum())), "recall": tp / max(1, int(wrong.sum())),
            "wall_s": summary.get("wall_s"), "timings": summary.get("timings", {})}


def run_case(case: str, work: Path, *, score_only: bool = False) -> dict:
    name, _, rest = case.partition(":")
    mode, _, extra = rest.partition(":")  # CASE:MODE:--flag=value,--flag2=value
    flags = [a for f in extra.split(",") if f for a in f.split("=", 1)]
    folder = work / name
    if not (folder / "truth.json").exists():
        truth = make_case(name, folder / "data")
        (folder / "truth.json").write_text(json.dumps(truth))
    truth = {k: tuple(v) for k, v in json.loads((folder / "truth.json").read_text()).items()}
    tag = (mode or "auto") + "".join(f.replace("--", "-") for f in flags)
    run = folder / f"run-{tag}"
    cmd = ([sys.executable, "-m", "orchestrator.cli.main", "run", "--resume", str(run)]
           if (run / "config.json").exists() else  # an interrupted attempt: resumed
           [sys.executable, "-m", "orchestrator.cli.main", "run", str(folder / "data"),
            "--out", str(run), *(["--mode", mode] if mode else []), *flags])
    t0 = time.perf_counter()
    if not score_only:
        with open(folder / f"log-{tag}.txt", "w") as log:
            res = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if res.returncode not in (0, 1):
            raise SystemExit(f"{case}: dupes run exited {res.returncode}; see {log.name}")
    return {"case": case, "command_wall_s": time.perf_counter() - t0, **score(run, truth)}


def table(rows: list[dict]) -> str:
    head = ("| case | mode | images (wrong) | wall | held-out acc (given / true) | AP "
            "(combined) | dupe rule | dupes | precision | recall |\n|---|---|---|---|---|---|"
            "---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['case'].split(':')[0]}{' ' + r['case'].split(':', 2)[2] if r['case'].count(':') > 1 else ''} | {r['mode']} | {r['n']:,} ({r['wrong']:,}) "
                     f"| {r['wall_s']:.0f} s | {r['heldout_accuracy']:.3f} / "
                     f"{r['heldout_accuracy_true']:.3f} | {r['ap']:.3f} | {r['rule']} | "
                     f"{r['dupes']:,} | {r['precision']:.3f} | {r['recall']:.3f} |")
    return "\n".join(lines)


def review_table(rows: list[dict]) -> str:
    """Review order and the weak-model warning, before and after (BENCHMARKS.md)."""
    lines = ["| case | mode | wrong | held-out acc | agreement | dupes precision | warning "
             "before | warning after | P@50 before / after | P@100 before / after | AP before "
             "/ after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "review_before" not in r:
            continue
        b, a, v = r["review_before"], r["review_after"], r["verdict"]
        lines.append(f"| {r['case'].split(':')[0]} | {r['mode']} | {r['wrong'] / r['n']:.0%} | "
                     f"{r['heldout_accuracy']:.3f} | "
                     # one repeat: no agreement between repeats to measure
                     f"{'n/a' if v['agreement'] is None else format(v['agreement'], '.2f')} | "
                     f"{r['precision']:.2f} | {v['before']} | {v['after']} | "
                     f"{b['p50']:.2f} / {a['p50']:.2f} | {b['p100']:.2f} / {a['p100']:.2f} | "
                     f"{b['ap']:.3f} / {a['ap']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=CASES, help="CASE:MODE[:--flag=value,...] "
                    "(mode: frozen, scratch, finetune; none: auto)")
    ap.add_argument("--work", default=None, help="folder for the cases' data and runs "
                    "(default: a temp folder, removed at the end)")
    ap.add_argument("--score-only", action="store_true", help="score the finished runs in "
                    "--work again (no passes run; nothing is written)")
    args = ap.parse_args()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="dupes-models-")
    work = Path(args.work or tmp.name)
    rows = []
    for case in args.cases:
        rows.append(run_case(case, work, score_only=args.score_only))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    print(review_table(rows))
    if args.score_only:
        print(json.dumps(rows, indent=1))
        return
    append_run(OUT, results=rows)
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
