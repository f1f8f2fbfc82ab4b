"""The bundled demo dataset: scikit-learn's handwritten digits as PNG class folders, with
planted label noise whose truth is kept beside the data, so a run can be scored."""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from analysis.review_plan import manifest_summary
from analysis.votes import precision_recall
from orchestrator.config import new_config
from orchestrator.demo_data import DEMO_HYP, DemoSettings, write_digits
from orchestrator.errors import RunError
from orchestrator.pipeline.passes import run_pass
from orchestrator.review.apply import apply_manifest
from orchestrator.review.files import export_review, import_review, manifest_tables
from orchestrator.run.directory import Run
from orchestrator.run.records import Summary


def score_round(summary: Summary, run: Run, planted: pd.DataFrame) -> Summary:
    """The planted noise's precision and recall of a round's dupes, added to its summary."""
    dupes = run.dupes(columns=["relpath", "confirmed"])
    precision, recall = precision_recall(dupes["relpath"].to_numpy(),
                                         planted["relpath"].to_numpy())
    summary.extra.update(planted_precision=precision, planted_recall=recall,
                         n_planted=len(planted),
                         n_dupes_unconfirmed=int((~dupes["confirmed"]).sum()))
    return summary


def simulate_technician(review: Path, exported: pd.DataFrame, planted: pd.DataFrame) -> None:
    """Review like a technician who knows the truth: delete false alarms (confirm), leave
    correct suggestions in place (relabel), move wrong suggestions to the true class."""
    truth = dict(zip(planted["relpath"], planted["true_class"]))
    for row in exported.itertuples():
        path = review / row.review_path
        true = truth.get(row.relpath)
        if true is None:
            path.unlink()
        elif true != row.suggested_class:
            shutil.move(path, review / true / path.name)


def run_demo(demo: DemoSettings, args, console: Console) -> Summary:
    """Write the digits with planted noise, run the pass (and with `review_simulate` the
    review loop and a second round); returns the first round's summary (with round 2's
    failures counted, so that the exit code covers both)."""
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
    summary.wall_s = time.perf_counter() - t0
    run.save_summary(summary)
    s = summary.extra
    console.print(f"[bold]planted noise: {len(planted)} images; dupes {summary.threshold}: "
                  f"{summary.n_dupes}; precision {s['planted_precision']:.3f}, recall "
                  f"{s['planted_recall']:.3f}[/]  wall {summary.wall_s:.1f} s, "
                  f"{summary.n_trainings} trainings, {summary.n_prediction_rows:,} "
                  "predictions", highlight=False)
    console.print(f"run directory: {run}")
    if demo.review_simulate and not summary.n_trainings_failed:
        summary.extra["review"], summary2 = review_round(out, run, cfg, planted, console)
        summary.wall_s = time.perf_counter() - t0
        run.save_summary(summary)
        summary.n_trainings_failed = summary2.n_trainings_failed
    return summary


def review_round(out: Path, run: Run, cfg, planted: pd.DataFrame, console: Console
                 ) -> tuple[dict, Summary]:
    """Round 1's review by the simulated technician, the corrected copy, and round 2 on it."""
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
    run2.save_summary(summary2)
    second = summary2.to_dict()
    console.print(rounds_table([{"round": 1, **run.summary().to_dict()},
                                {"round": 2, **second}]))
    return {"manifest": str(review / "manifest.csv"),
            "actions": manifest_summary(manifest)[0].to_dict(),
            "round2": {k: second[k] for k in (
                "n_samples", "n_dupes", "n_dupes_unconfirmed", "heldout_accuracy_mean",
                "n_planted", "planted_precision", "planted_recall", "run_dir")}}, summary2


def rounds_table(rounds: list[dict]) -> Table:
    """Before and after a review: dupes, held-out accuracy and planted errors per round."""
    table = Table(title="review rounds", header_style="bold")
    cols = [("round", "round"), ("images", "n_samples"), ("dupes", "n_dupes"),
            ("new dupes", "n_dupes_unconfirmed"), ("held-out acc", "heldout_accuracy_mean"),
            ("planted errors left", "n_planted"), ("precision", "planted_precision"),
            ("recall", "planted_recall")]
    for title, _ in cols:
        table.add_column(title, justify="right")
    for r in rounds:
        cells = []
        for _, key in cols:
            v = r.get(key, "")
            cells.append(f"{v:.4f}" if isinstance(v, float) else str(v))
        table.add_row(*cells)
    return table
