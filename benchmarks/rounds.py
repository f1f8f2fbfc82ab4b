"""Close the loop (issue #25): do the corrections make a better model, round by round?

    .venv/bin/python benchmarks/rounds.py --work /tmp/bm   # every case at 5%: ~1 h on 2 cores
                                                           # when benchmarks/models.py left the
                                                           # CIFAR-10N cases' round 1
    .venv/bin/python benchmarks/rounds.py --work /tmp/bm --cases c10n-aggre --budgets 0.02 0.05

The whole loop as a user runs it, with a simulated technician who knows the truth:
- round 1: `dupes run` on the noisy data (the run of benchmarks/models.py in the same --work
  is reused: the same command), `dupes review export`, then the technician decides at most
  B images (B = a share of the dataset) in the product's own review order through the
  triage server's decision endpoint (the HTTP calls the review page makes): relabel to the
  true class, keep the label where it was right; then `dupes apply`;
- round 2: `dupes run` on the corrected copy (it finds its round and ledger itself), the same
  review of B images, `dupes apply`;
- the final classifier on the noisy labels, after round 1, after round 2 and on the true
  labels (the ceiling), trained on the whole dataset with three seeds and tested on a clean
  test set, in the mode the product chose for the data:
  - frozen (the CIFAR-10N photos): the frozen-feature head (a logistic regression on the
    EfficientNet-Lite0 features of the round-1 run), tested on the 10,000 CIFAR-10 test
    images. The head is convex and fit to convergence, so its three seeds agree within
    0.001: the spread a user would see comes from the labels;
  - scratch (Fashion-MNIST's small gray images): the project's trainer (`trainers.train`,
    the round-1 run's settings) on all images, tested on the 10,000 Fashion-MNIST test images.

Cases: the first 10,000 CIFAR-10 training images under CIFAR-10N's "aggregate" (9.1% wrong)
and "worst" (41.0% wrong) human labels; the first 10,000 Fashion-MNIST training images with
10% moved to their confusable partner class (fmnist-pair, benchmarks/models.py). Prints a
table, writes benchmarks/results/rounds.json.
"""
from __future__ import annotations

import argparse
import hashlib
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
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "rounds.json"
CASES = ["c10n-aggre", "c10n-worst", "fmnist-pair"]
ROUND1 = {"c10n-aggre": "frozen", "c10n-worst": "frozen", "fmnist-pair": ""}  # "": auto
TESTS = {"c10n": "cifar10_test.npz", "fmnist": "fashion_mnist_test.npz"}
SEEDS = (0, 1, 2)


def dupes(*argv, log: Path) -> None:
    with open(log, "a") as f:
        res = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *map(str, argv)],
                             cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode not in (0, 1):
        raise SystemExit(f"dupes {' '.join(map(str, argv))} exited {res.returncode}; see {log}")


def technician(review: Path, truth: dict[str, str], budget: int, ledger: Path) -> dict:
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
            true = truth[Path(it["relpath"]).stem]
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


def labels_of(data: Path) -> dict[str, str]:
    """file stem -> the class folder it is in (the given label of that dataset version)."""
    return {p.stem: p.relative_to(data).parts[0] for p in data.rglob("*.png")}


def truth_of(folder: Path) -> dict[str, str]:
    """file stem -> its true class folder. truth.json holds the source's class numbers;
    every class is the given label of some image, whose folder names that number."""
    truth = json.loads((folder / "truth.json").read_text())
    name_of = {g: Path(rel).parts[0] for rel, (g, _) in truth.items()}
    return {Path(rel).stem: name_of[t] for rel, (_, t) in truth.items()}


def wrong_share(given: dict[str, str], truth: dict[str, str]) -> float:
    return float(np.mean([given[s] != truth[s] for s in given]))


_TEST_FEATURES: dict[str, np.ndarray] = {}  # embedding the test set takes minutes


class Final:
    """A case's final classifier: trained on all its images under one version of the labels
    (three seeds), tested on the clean test set; accuracies kept in the case's folder by the
    labels they were trained on, so the noisy and true versions train once for all budgets."""

    def __init__(self, case: str, run1: Path, folder: Path):
        from orchestrator.run.directory import Run
        run = Run.open(run1)
        self.hyp, self.classes = run.config().hyp, run.classes()
        self.cache = folder / "final.json"
        rels = run.index()["relpath"].tolist()
        self.stems = [Path(r).stem for r in rels]
        d = dict(np.load(DATA / TESTS[case.split("-")[0]]))
        names = [str(c).replace("/", "-") for c in d["classes"]]  # as the case's folders
        self.test_y = np.array([self.classes.index(names[i]) for i in d["labels"]])
        if self.hyp.mode == "frozen":
            from orchestrator.run.embeddings import EmbedSpec, stored_features
            from trainers.backbones import embed, feature_extractor
            spec = EmbedSpec(**run.config().embedding)
            self.x = stored_features(run, spec, local=True)[1].gather(
                np.arange(len(rels))).astype(np.float32)
            key = json.dumps(run.config().embedding, sort_keys=True)
            if key not in _TEST_FEATURES:
                ext, _ = feature_extractor(spec.backbone, size=spec.size)
                _TEST_FEATURES[key] = embed(ext, d["images"])
            self.test_x = _TEST_FEATURES[key]
        else:  # the images themselves: the same in every version of the labels
            from PIL import Image
            self.x = np.stack([np.asarray(Image.open(folder / "data" / r)) for r in rels])
            self.test_x = d["images"]
            if self.x.ndim == 3:  # gray: one channel, as the pass's cache holds them
                self.x, self.test_x = self.x[..., None], self.test_x[..., None]

    def accuracies(self, given: dict[str, str]) -> list[float]:
        keep = np.array([s in given for s in self.stems])
        y = np.array([self.classes.index(given[s]) for s, k in zip(self.stems, keep) if k])
        key = f"{self.hyp.mode}:{hashlib.sha1(y.tobytes() + keep.tobytes()).hexdigest()}"
        done = json.loads(self.cache.read_text()) if self.cache.exists() else {}
        if key not in done:
            x = np.concatenate([self.x[keep], self.test_x])
            labels = np.concatenate([y, self.test_y])
            tr, ev = np.arange(len(y)), np.arange(len(y), len(x))
            done[key] = [float((self._fit(x, labels, tr, ev, s) == self.test_y).mean())
                         for s in SEEDS]
            self.cache.write_text(json.dumps(done))
        return done[key]

    def _fit(self, x, labels, tr, ev, seed: int) -> np.ndarray:
        if self.hyp.mode == "frozen":
            from trainers.heads import train_head
            return train_head(self.hyp, x, labels, tr, ev, seed=seed,
                              num_classes=len(self.classes)).pred
        from trainers.train import train
        return train(self.hyp, x, labels, tr, ev, seed=seed).pred


def run_case(case: str, work: Path, budget_share: float) -> dict:
    from orchestrator.run.directory import Run
    from models import run_case as models_case
    folder = work / case
    mode = ROUND1[case]
    models_case(f"{case}:{mode}" if mode else case, work)  # round 1: reused when there
    run1 = folder / f"run-{mode or 'auto'}"
    truth = truth_of(folder)
    tag = f"b{budget_share:g}"
    loop = folder / f"rounds-{tag}"
    loop.mkdir(exist_ok=True)
    log = loop / "log.txt"
    budget = int(round(budget_share * len(truth)))
    ledger = loop / "ledger.csv"
    row = {"case": case, "budget": budget, "budget_share": budget_share, "n": len(truth),
           "mode": Run.open(run1).config().hyp.mode}
    versions = {"noisy": folder / "data"}
    runs = [run1]
    t0 = time.perf_counter()
    for k in (1, 2):
        review = loop / f"review{k}"
        if not (loop / f"data-r{k}").exists():
            if not review.exists():
                dupes("review", "export", runs[-1], "--out", review, "--ledger", ledger, log=log)
            row[f"decisions_r{k}"] = technician(review, truth, budget, ledger)
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
        row[f"wrong_{name}"] = wrong_share(labels_of(data), truth)
    t0 = time.perf_counter()
    final = Final(case, run1, folder)
    for name, data in [*versions.items(), ("true", None)]:
        accs = final.accuracies(truth if data is None else labels_of(data))
        row[f"test_{name}"] = {"mean": float(np.mean(accs)), "spread": float(np.ptp(accs)),
                               "seeds": accs}
    row["final_wall_s"] = time.perf_counter() - t0
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
            f"| {r['case']} ({r.get('mode', 'frozen')}) | {r['budget']:,} "
            f"({r['budget_share']:.0%}) | "
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
    rows = []
    for case in args.cases:
        for b in args.budgets:
            rows.append(run_case(case, args.work, b))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    append_run(OUT, results=rows)


if __name__ == "__main__":
    main()
