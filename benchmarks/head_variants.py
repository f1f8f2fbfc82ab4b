"""Levers on the heads of a finished frozen pass, scored against the truth (issue #24): does
any of them move the dupe set's precision where weak models overcount?

    .venv/bin/python benchmarks/models.py --work /tmp/bm --cases photos c10n-aggre   # passes
    .venv/bin/python benchmarks/head_variants.py --work /tmp/bm \
        --passes photos/run-auto c10n-aggre/run-auto          # ~3 min on 2 cores

Reads each pass's own embedding shards (the features its heads were trained on), trains the
product's head (`trainers.heads.train_head`) on 10 repeats of swap splits of its images, and
scores the mean held-out probabilities as a weak pass does: average precision of
self-confidence against the true labels, and the top N by self-confidence with N = confident
learning's uncalibrated count (precision, recall). The variants:

- base: the product's head before --head-prune (standardised features, L2 from the
  pass's config, one fit)
- sqrt / l2-norm: each block of features (a backbone's final or stage features) square-rooted,
  or scaled to unit length, before the head (common fixes for pooled ReLU features)
- L2 x0.3 / x3: a weaker or stronger L2
- pruned: heads trained again without the images the first round's confident learning
  flagged (cleanlab's CleanLearning idea), predicting every held-out image
- pruned inside: the same idea inside each training (`--head-prune`, a pass's default since
  it was measured here): a cross-fit on the training half flags what its head leaves out
- sharpened: the held-out probabilities temperature-scaled to the T that minimises their
  loss against the given labels (fit on the held-out predictions), before the count

Prints a table and writes benchmarks/results/head_variants.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models import average_precision  # benchmarks/ is on sys.path when a script runs
from record import append_run
from rounds import truth_of

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "head_variants.json"
VARIANTS = ("base", "sqrt", "l2-norm", "L2 x0.3", "L2 x3", "pruned", "pruned inside",
            "sharpened")


def blocks_of(spec) -> list[int]:
    """Widths of the feature blocks, in the store's order: per backbone its final features,
    then its stage features (trainers.backbones.FeatureExtractor)."""
    from trainers.backbones import SPECS, parts_of
    out = []
    for part in parts_of(spec.backbone):
        out.append(SPECS[part].dim)
        if spec.stages:
            out.extend(SPECS[part].stages)
    return out


def per_block(x: np.ndarray, widths: list[int], how: str) -> np.ndarray:
    parts = np.split(x, np.cumsum(widths)[:-1], axis=1)
    if how == "sqrt":
        parts = [np.sqrt(np.maximum(p, 0)) for p in parts]
    elif how == "l2-norm":
        parts = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in parts]
    return np.concatenate(parts, 1)


def heads(hyp, x, given, num_classes, *, exclude=None, repeats=10):
    """Mean held-out probabilities of 10 repeats of swap-split heads."""
    from trainers.heads import train_head
    n = len(given)
    rng = np.random.default_rng(0)
    probs, seen = np.zeros((n, num_classes)), np.zeros(n)
    for rep in range(repeats):
        order = rng.permutation(n)
        a, b = order[:n // 2], order[n // 2:]
        for tr, ev in ((a, b), (b, a)):
            if exclude is not None:
                tr = tr[~exclude[tr]]
            out = train_head(hyp, x, given, tr, ev, seed=rep, num_classes=num_classes)
            probs[ev] += out.probs
            seen[ev] += 1
    return probs / seen[:, None]


def sharpen(mean: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, float]:
    from scipy.optimize import minimize_scalar
    logp = np.log(np.clip(mean, 1e-12, 1))

    def scaled(t):
        z = logp / t
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def loss(t):
        return -np.log(np.clip(scaled(t)[np.arange(len(given)), given], 1e-12, 1)).mean()

    t = float(minimize_scalar(loss, bounds=(0.2, 5.0), method="bounded").x)
    return scaled(t), t


def score(mean, given, wrong) -> dict:
    from cleanlab.count import compute_confident_joint

    from analysis.scores import label_quality, off_diagonal_rows
    n = len(given)
    sc = mean[np.arange(n), given]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        count = label_quality(given, mean)[3]
        _, off = compute_confident_joint(given, mean, calibrate=False,
                                         return_indices_of_off_diagonals=True)
    flagged = np.zeros(n, bool)
    flagged[off_diagonal_rows(given, mean, off)] = True
    hit = int(wrong[np.argsort(sc, kind="stable")[:count]].sum())
    p, r = hit / max(1, count), hit / max(1, int(wrong.sum()))
    return {"accuracy": float((mean.argmax(1) == given).mean()),
            "ap": average_precision(-sc, wrong), "count": int(count), "precision": p,
            "recall": r, "f1": 2 * p * r / (p + r) if hit else 0.0, "flagged": flagged}


def one_pass(run_dir: Path) -> list[dict]:
    from orchestrator.run.directory import Run
    from orchestrator.run.embeddings import EmbedSpec, stored_features
    from trainers.hyp import Hyp
    run = Run.open(run_dir)
    index, classes = run.index(), run.classes()
    truth = truth_of(run_dir.parent)
    given = index["label"].to_numpy().astype(np.int64)
    true = np.array([classes.index(truth[Path(rel).stem]) for rel in index["relpath"]])
    wrong = given != true
    cfg = run.config()
    spec = EmbedSpec(**cfg.embedding)
    # row i is sample i, as the pass's heads read them
    x = stored_features(run, spec, local=True)[1].gather(np.arange(len(given)))
    x = np.asarray(x, np.float32)
    widths = blocks_of(spec)
    assert sum(widths) == x.shape[1], (widths, x.shape)
    hyp = replace(Hyp(mode="frozen", head_prune=False), head_l2=cfg.hyp.head_l2)
    k = len(classes)
    base_mean = heads(hyp, x, given, k)
    base = score(base_mean, given, wrong)
    rows = []
    for variant in VARIANTS:
        t = None
        if variant in ("sqrt", "l2-norm"):
            mean = heads(hyp, per_block(x, widths, variant), given, k)
        elif variant.startswith("L2"):
            factor = float(variant.split("x")[1])
            mean = heads(replace(hyp, head_l2=hyp.head_l2 * factor), x, given, k)
        elif variant == "pruned":
            mean = heads(hyp, x, given, k, exclude=base["flagged"])
        elif variant == "pruned inside":
            mean = heads(replace(hyp, head_prune=True), x, given, k)
        elif variant == "sharpened":
            mean, t = sharpen(base_mean, given)
        else:
            mean = base_mean
        got = score(mean, given, wrong)
        row = {"pass": str(run_dir.relative_to(run_dir.parent.parent)), "variant": variant,
               **{key: v for key, v in got.items() if key != "flagged"}}
        if t is not None:
            row["temperature"] = t
        rows.append(row)
        print(f"| {row['pass']} | {variant} | {row['accuracy']:.3f} | {row['ap']:.3f} | "
              f"{row['count']:,} | {row['precision']:.3f} / {row['recall']:.3f} | "
              f"{row['f1']:.3f} |", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="benchmarks/models.py's --work")
    ap.add_argument("--passes", nargs="+", default=["photos/run-auto"],
                    help="frozen passes under --work (CASE/run-NAME, with the case's truth)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| pass | variant | held-out acc (mean probs) | AP | CL count | its P / R | F1 |\n"
          "|---|---|---|---|---|---|---|", flush=True)
    rows = [r for p in args.passes for r in one_pass(args.work / p)]
    append_run(OUT, threads=args.threads, results=rows)
    print(json.dumps({"written": str(OUT)}))


if __name__ == "__main__":
    main()
