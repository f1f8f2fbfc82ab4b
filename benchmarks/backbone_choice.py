"""Which frozen backbone, and which head L2: the offline EfficientNet-Lite backbones alone and
side by side, on the photos case, with the product's own head (issue #24).

    .venv/bin/python benchmarks/models.py --work /tmp/bm --cases photos   # the case's run
    .venv/bin/python benchmarks/backbone_choice.py --work /tmp/bm         # ~5 min on 2 cores
    .venv/bin/python benchmarks/backbone_choice.py --work /tmp/bm --subsets 200 500 1000 2000 \
        --candidates efficientnet_lite0+efficientnet_lite2 --l2 100 300 1000   # L2 by size
    .venv/bin/python benchmarks/backbone_choice.py --work /tmp/bm --l2 1000 --flip \
        --candidates efficientnet_lite0+efficientnet_lite2    # mirrored too, features averaged
    .venv/bin/python benchmarks/backbone_choice.py --work /tmp/bm --l2 1000 --size 224 \
        --candidates efficientnet_lite2                       # another size
    .venv/bin/python benchmarks/backbone_choice.py --work /tmp/bm --l2 1000 --stages \
        --candidates efficientnet_lite0+efficientnet_lite2    # earlier stages' features too

Embeds the photos case's image cache (the 64-px squashed cache of its `dupes run`, as a pass
embeds it) with each backbone at one size, once (kept in --work), then for every candidate
(one backbone, or several joined by "+": their features concatenated, as
`trainers.backbones.EnsembleExtractor` does) and every L2 strength, trains the product's head
(`trainers.heads.train_head`) on swap splits of the run's images: 10 repeats of two halves.
Reports the mean held-out accuracy against the given and the true labels and the average
precision of self-confidence (from the mean held-out probabilities) against the planted
errors, the precision and recall of the dupe set a weak pass would choose from them (the top N
by self-confidence, N = confident learning's uncalibrated count), and the embedding speed. Prints a table, writes benchmarks/results/backbone_choice.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models import average_precision  # benchmarks/ is on sys.path when a script runs
from record import append_run
from rounds import truth_of

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "backbone_choice.json"
CANDIDATES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
              "efficientnet_lite0+efficientnet_lite1", "efficientnet_lite0+efficientnet_lite2",
              "efficientnet_lite1+efficientnet_lite2"]


def main() -> None:
    from analysis.scores import label_quality
    from orchestrator.run.directory import Run
    from trainers.backbones import embed, feature_extractor, parts_of
    from trainers.heads import train_head
    from trainers.hyp import Hyp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="benchmarks/models.py's --work, "
                    "holding the photos case's run (photos/run-auto)")
    ap.add_argument("--case", default="photos/run-auto", help="the run, under --work")
    ap.add_argument("--candidates", nargs="+", default=CANDIDATES)
    ap.add_argument("--size", type=int, default=192, help="px the backbones see")
    ap.add_argument("--l2", type=float, nargs="+", default=[300.0, 1000.0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--head-prune", action="store_true",
                    help="prune each head's training half as a pass does (--head-prune, the "
                    "default of a pass since it was measured); off: one fit per head, as the "
                    "tables of BENCHMARKS.md before it were measured")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flip", action="store_true",
                    help="also embed every image mirrored and average the two features (a "
                         "test-time augmentation the pass does not do; 2x the embedding)")
    ap.add_argument("--stages", action="store_true",
                    help="EfficientNet-Lite only: beside the final features, the pooled "
                         "output of the last block of each of the last 3 stages (the "
                         "pass's --embed-stages; the same forward pass)")
    ap.add_argument("--subsets", type=int, nargs="+", default=[],
                    help="instead: the L2 by dataset size: for each N, 6 random draws of N "
                         "images, a head on one half of each predicting the other")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = args.work / args.case
    run = Run.open(run_dir)
    index, classes = run.index(), run.classes()
    n = len(index)
    images = run.images().gather(np.arange(n))
    truth = truth_of(run_dir.parent)
    given = index["label"].to_numpy().astype(np.int64)
    true = np.array([classes.index(truth[Path(rel).stem]) for rel in index["relpath"]])
    wrong = given != true

    features, speed = {}, {}
    for name in sorted({p for c in args.candidates for p in parts_of(c)}):
        path = run_dir.parent / f"features-{name}-{args.size}px.npy"
        ext, _ = feature_extractor(name, size=args.size)
        embed(ext, images[:32])  # warm-up
        t0 = time.perf_counter()
        if path.exists():
            embed(ext, images[:256])
            speed[name] = 256 / (time.perf_counter() - t0)
            features[name] = np.load(path)
        else:
            features[name] = embed(ext, images)
            speed[name] = n / (time.perf_counter() - t0)
            np.save(path, features[name])
        if args.stages:  # cached beside the plain features
            staged = path.with_name(path.stem + "-stages.npy")
            if not staged.exists():
                np.save(staged, stage_features(name, args.size, images))
            features[name] = np.concatenate([features[name], np.load(staged)], 1)
        if args.flip:  # cached beside the plain features; the speed stays the plain one's
            flipped = path.with_name(path.stem + "-flip.npy")
            if not flipped.exists():
                np.save(flipped, embed(ext, np.ascontiguousarray(images[:, :, ::-1])))
            features[name] = ((features[name].astype(np.float32)
                               + np.load(flipped).astype(np.float32)) / 2)
        print(f"{name} at {args.size} px: {speed[name]:,.1f} images/s on {args.threads} "
              "thread(s)", flush=True)

    if args.subsets:
        by_size(args, features, given, classes, parts_of, train_head, Hyp)
        return
    rows = []
    for cand in args.candidates:
        x = np.concatenate([features[p] for p in parts_of(cand)], 1)
        for l2 in args.l2:
            hyp = replace(Hyp(mode="frozen", head_prune=args.head_prune), head_l2=l2)
            rng = np.random.default_rng(0)
            probs, seen = np.zeros((n, len(classes))), np.zeros(n)
            acc_given, acc_true = [], []
            for rep in range(args.repeats):
                order = rng.permutation(n)
                a, b = order[:n // 2], order[n // 2:]
                for tr, ev in ((a, b), (b, a)):
                    out = train_head(hyp, x, given, tr, ev, seed=rep, num_classes=len(classes))
                    probs[ev] += out.probs
                    seen[ev] += 1
                    acc_given.append(float((out.pred == given[ev]).mean()))
                    acc_true.append(float((out.pred == true[ev]).mean()))
            mean = probs / seen[:, None]
            sc = mean[np.arange(n), given]
            ap_sc = average_precision(-sc, wrong)
            count = label_quality(given, mean)[3]
            hit = int(wrong[np.argsort(sc, kind="stable")[:count]].sum())
            # images/s of an ensemble: one image through every part
            rate = 1 / sum(1 / speed[p] for p in parts_of(cand))
            rows.append({"backbone": cand, "l2": l2, "flip": args.flip, "stages": args.stages, "dim": int(x.shape[1]),
                         "heldout_given": float(np.mean(acc_given)),
                         "heldout_true": float(np.mean(acc_true)), "ap": ap_sc,
                         "cl_count": count, "precision": hit / max(1, count),
                         "recall": hit / int(wrong.sum()),
                         "images_per_s": rate})
            r = rows[-1]
            print(f"| {cand} | {l2:g} | {r['heldout_given']:.3f} / {r['heldout_true']:.3f} | "
                  f"{ap_sc:.3f} | {count} | {r['precision']:.3f} / {r['recall']:.3f} | "
                  f"{rate:,.1f} |", flush=True)
    print(f"| backbone | head L2 | held-out acc (given / true) | AP (self-confidence) | "
          f"CL count | its P / R | images/s at {args.size} px ({args.threads} threads) |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backbone']} | {r['l2']:g} | {r['heldout_given']:.3f} / "
              f"{r['heldout_true']:.3f} | {r['ap']:.3f} | {r['cl_count']} | "
              f"{r['precision']:.3f} / {r['recall']:.3f} | {r['images_per_s']:,.1f} |")
    append_run(OUT, case=args.case, size=args.size, repeats=args.repeats, threads=args.threads,
               flip=args.flip, stages=args.stages, results=rows)


def stage_features(name: str, size: int, images: np.ndarray) -> np.ndarray:
    """The stage features alone: what the pass's extractor (`--embed-stages`) puts after a
    backbone's final ones."""
    from trainers.backbones import SPECS, embed, feature_extractor
    ext, _ = feature_extractor(name, size=size, stages=True)
    return embed(ext, images)[:, SPECS[name].dim:]


def by_size(args, features, given, classes, parts_of, train_head, Hyp) -> None:
    """Held-out accuracy of one head per draw, by dataset size and L2 (the head's L2 default
    by the size of a training half, orchestrator/pipeline/settings.head_l2_for)."""
    rows = []
    print("| backbone | images (half) | " + " | ".join(f"L2 {v:g}" for v in args.l2)
          + " |\n|---|---|" + "---|" * len(args.l2))
    for cand in args.candidates:
        x = np.concatenate([features[p] for p in parts_of(cand)], 1)
        for n in args.subsets:
            accs = {}
            for l2 in args.l2:
                got = []
                for draw in range(6):
                    pick = np.random.default_rng(draw).choice(len(given), n, replace=False)
                    tr, ev = pick[:n // 2], pick[n // 2:]
                    out = train_head(replace(Hyp(mode="frozen", head_prune=args.head_prune),
                                             head_l2=l2), x, given, tr, ev,
                                     seed=draw, num_classes=len(classes))
                    got.append(float((out.pred == given[ev]).mean()))
                accs[l2] = float(np.mean(got))
            rows.append({"backbone": cand, "n": n, "heldout_given": accs})
            print(f"| {cand} | {n:,} ({n // 2:,}) | "
                  + " | ".join(f"{accs[v]:.3f}" for v in args.l2) + " |", flush=True)
    append_run(OUT, case=args.case, size=args.size, threads=args.threads, by_size=rows)


if __name__ == "__main__":
    main()
