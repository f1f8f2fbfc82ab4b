"""The bundled demo dataset: scikit-learn's handwritten digits as PNG class folders, with
planted label noise whose truth is kept beside the data, so a run can be scored."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from rich.console import Console

from orchestrator.run import rundir
from orchestrator.config import opt
from orchestrator.run.directory import Run, RunError
from orchestrator.run.storage import parse_local_path
from trainers.hyp import Hyp


def write_digits(out: Path, *, noise: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Write the 1,797 digits to `out/<digit>/digit_NNNN.png`, moving a `noise` share of them
    into a wrong class folder. Returns (and writes to `out/../planted.csv`) the planted flips."""
    from sklearn.datasets import load_digits

    if not 0 <= noise < 1:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    labels = digits.target.astype(int)
    rng = np.random.default_rng(seed)
    n_flip = int(round(noise * len(labels)))
    flip = rng.choice(len(labels), size=n_flip, replace=False)
    given = labels.copy()
    # a uniformly random *other* class: offset 1..9 modulo 10
    given[flip] = (labels[flip] + rng.integers(1, 10, size=n_flip)) % 10
    out = Path(out)
    for c in range(10):
        (out / str(c)).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (img, g) in enumerate(zip(images, given)):
        rel = f"{g}/digit_{i:04d}.png"
        Image.fromarray(img, "L").save(out / rel)
        if g != labels[i]:
            rows.append({"relpath": rel, "true_class": str(labels[i]), "given_class": str(g)})
    planted = pd.DataFrame(rows, columns=["relpath", "true_class", "given_class"])
    rundir.write_csv(out.parent / "planted.csv", planted)
    return planted


# The digits are 8 px: shifts of 1 px. Flips are left to the pass's mirror check, which
# finds that a mirrored digit is another digit (or none) and turns them off.
DEMO_HYP = Hyp(translate=1)


@dataclass
class DemoSettings:
    out: Path | None = opt(None, "demo directory: data/, planted.csv and run/ go here; none: "
                           "runs/demo-<date-time>", parse=parse_local_path)
    noise: float = opt(0.05, "share of images moved to a wrong class folder", min=0)
    noise_seed: int = opt(0, "seed of the planted noise")
    review_simulate: bool = opt(False, "go on through the review loop: an automatic technician "
                                "who knows the planted truth reviews the dupes, the corrected "
                                "dataset is built, and a second round runs on it (about twice "
                                "the time)")


def score_round(summary: dict, run: Run, planted: pd.DataFrame) -> dict:
    """The planted noise's precision and recall of a round's dupes, added to its summary."""
    from analysis.votes import precision_recall

    dupes = pd.read_parquet(run.file("dupes.parquet"))
    precision, recall = precision_recall(dupes["relpath"].to_numpy(),
                                         planted["relpath"].to_numpy())
    summary.update(planted_precision=precision, planted_recall=recall, n_planted=len(planted),
                   n_dupes_unconfirmed=int((~dupes["confirmed"]).sum()))
    return summary


def simulate_technician(review: Path, exported: pd.DataFrame, planted: pd.DataFrame) -> None:
    """Review like a technician who knows the truth: delete false alarms (confirm), leave
    correct suggestions in place (relabel), move wrong suggestions to the true class."""
    import shutil

    truth = dict(zip(planted["relpath"], planted["true_class"]))
    for row in exported.itertuples():
        path = review / row.review_path
        true = truth.get(row.relpath)
        if true is None:
            path.unlink()
        elif true != row.suggested_class:
            shutil.move(path, review / true / path.name)


def run_demo(demo: DemoSettings, args, console: Console) -> dict:
    """Write the digits with planted noise, run the pass (and with `review_simulate` the
    review loop and a second round); returns the first round's summary."""
    from orchestrator.config import new_config
    from orchestrator.pipeline.passes import run_pass, save_summary

    t0 = time.perf_counter()
    out = demo.out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"demo directory {out} exists and is not empty: choose another --out")
    run = Run.create(out / "run")
    planted = write_digits(out / "data", noise=demo.noise, seed=demo.noise_seed)
    console.print(f"wrote 1,797 digit images to {out / 'data'}; planted {len(planted)} wrong "
                  f"labels (truth in {out / 'planted.csv'})", highlight=False)
    cfg = new_config(args, data_dir=str((out / "data").resolve()), run_dir=run.location,
                     hyp=DEMO_HYP)
    summary = score_round(run_pass(run, cfg, console, t_start=t0), run, planted)
    summary["wall_s"] = time.perf_counter() - t0
    save_summary(run, summary)
    console.print(f"[bold]planted noise: {len(planted)} images; dupes {summary['threshold']}: "
                  f"{summary['n_dupes']}; precision {summary['planted_precision']:.3f}, recall "
                  f"{summary['planted_recall']:.3f}[/]  wall {summary['wall_s']:.1f} s, "
                  f"{summary['n_trainings']} trainings, {summary['n_prediction_rows']:,} "
                  "predictions", highlight=False)
    console.print(f"run directory: {run}")
    if demo.review_simulate and not summary["n_trainings_failed"]:
        summary["review"], summary2 = review_round(out, run, cfg, planted, console)
        summary["wall_s"] = time.perf_counter() - t0
        save_summary(run, summary)
        summary["n_trainings_failed"] = summary2["n_trainings_failed"]
    return summary


def review_round(out: Path, run: Run, cfg, planted: pd.DataFrame, console: Console
                 ) -> tuple[dict, dict]:
    """Round 1's review by the simulated technician, the corrected copy, and round 2 on it."""
    from analysis.report import manifest_tables, rounds_table
    from analysis.review_plan import manifest_summary
    from orchestrator.pipeline.passes import run_pass, save_summary
    from orchestrator.review.files import apply_manifest, export_review, import_review

    console.rule("review round 1 (simulated technician)")
    review = out / "review"
    exported = export_review(run, review)
    simulate_technician(review, exported, planted)
    # the simulated technician leaves every planted error in place (accepting its
    # suggestion) on purpose: most of the review untouched is its decision
    manifest, problems = import_review(review, accept_untouched=True)
    assert not problems, problems  # the simulated technician only does valid actions
    console.print(manifest_tables(*manifest_summary(manifest)))
    apply_manifest(review / "manifest.csv", out / "data", out / "data-round2")
    fixed = set(manifest.loc[manifest["action"] == "relabel", "relpath"])
    left = planted[~planted["relpath"].isin(fixed)].reset_index(drop=True)

    console.rule("round 2 on the corrected dataset")
    run2 = Run.create(out / "run2")
    cfg2 = replace(cfg, data_dir=str((out / "data-round2").resolve()), run_dir=run2.location)
    summary2 = score_round(run_pass(run2, cfg2, console), run2, left)
    save_summary(run2, summary2)
    first = run.read_json("summary.json")
    console.print(rounds_table([{"round": 1, **first}, {"round": 2, **summary2}]))
    return {"manifest": str(review / "manifest.csv"),
            "actions": manifest_summary(manifest)[0].to_dict(),
            "round2": {k: summary2[k] for k in (
                "n_samples", "n_dupes", "n_dupes_unconfirmed", "heldout_accuracy_mean",
                "n_planted", "planted_precision", "planted_recall", "run_dir")}}, summary2
