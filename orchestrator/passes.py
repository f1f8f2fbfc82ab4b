"""One dupes pass end to end, and re-analysis of a finished run from disk."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from analysis.report import report
from analysis.run_analysis import Analysis, analyze, dupes_export_table
from analysis.thresholds import parse_threshold
from orchestrator import rundir
from orchestrator.config import RunConfig
from orchestrator.storage import RemoteRun, StorageError


def load_analysis(run_dir: Path, threshold: str | None = None, *, ledger: Path | None = None,
                  ignore_confirmed: bool | None = None, min_ratio: float | None = None
                  ) -> tuple[Analysis, dict]:
    """Analyse a run from its files alone (no Ray): the basis of `dupes report`.

    Images in the ledger of confirmed labels are marked (`confirmed`), or left out of the
    dupes with `ignore_confirmed`; both default to the run's own settings.
    """
    from orchestrator.ledger import confirmed_mask, ledger_path, read_ledger

    run_dir = Path(run_dir)
    cfg = RunConfig.from_dict(rundir.read_json(run_dir / "config.json"))
    index = pd.read_parquet(run_dir / "index.parquet")
    classes = rundir.read_json(run_dir / "classes.json")["classes"]
    preds = rundir.read_prediction_columns(run_dir, mean_probs=True)
    seconds, train_acc = {}, {}
    for p in sorted((run_dir / "trainings").glob("r*_f*.json")):
        m = rundir.read_json(p)
        seconds[(m["repeat"], m["fold"])] = m.get("seconds", 0.0)
        train_acc[(m["repeat"], m["fold"])] = m.get("train_accuracy", np.nan)
    ledger = read_ledger(ledger_path(run_dir, cfg.ledger, ledger, cfg.storage))
    confirmed = confirmed_mask(index["sha1"].to_numpy(), index["class_name"].to_numpy(), ledger)
    ignore = cfg.ignore_confirmed if ignore_confirmed is None else ignore_confirmed
    return analyze(index, preds, classes, threshold=threshold or cfg.threshold,
                   confirmed=confirmed, ignore_confirmed=ignore,
                   dynamics=load_dynamics(run_dir, index["label"].to_numpy()),
                   train_accuracy=train_acc,
                   min_ratio=cfg.min_ratio if min_ratio is None
                   else min_ratio), seconds


def load_dynamics(run_dir: Path, labels: np.ndarray) -> pd.DataFrame | None:
    """Training-dynamics scores from RUN/epochs/, streamed one training at a time, or None
    when the run recorded none."""
    from analysis.dynamics import DynamicsSums

    batches = rundir.epoch_batches(run_dir, columns=["sample_id", "epoch", "margin", "pred"])
    if batches is None:
        return None
    sums = DynamicsSums(labels, num_samples=len(labels))
    for (r, f), table in batches:
        col = {n: table[n].to_numpy() for n in table.column_names}
        sums.add(col["sample_id"], np.full(len(col["epoch"]), r * 256 + f), col["epoch"],
                 col["margin"], col["pred"])
    return sums.scores()


def write_outputs(run_dir: Path, analysis: Analysis) -> None:
    rundir.write_parquet(run_dir / "votes.parquet", analysis.votes)
    table = dupes_export_table(analysis.dupes)
    rundir.write_parquet(run_dir / "dupes.parquet", table)
    rundir.write_csv(run_dir / "dupes.csv", table)


def run_pass(cfg: RunConfig, console: Console, *, t_start: float | None = None) -> dict:
    """Scan, split, train what is missing, analyse; returns the summary (also summary.json)."""
    from orchestrator.driver import all_trainings, prepare, run_trainings
    from trainers.hyp import Hyp

    t_start = t_start or time.perf_counter()
    Hyp.from_dict(cfg.hyp)  # a bad hyperparameter fails here, not in 20 workers
    run = cfg.run_path
    run.mkdir(parents=True, exist_ok=True)
    rundir.write_json(run / "config.json", cfg.to_dict())
    remote = RemoteRun(cfg.storage, run) if cfg.storage else None
    if remote is not None:
        stale = remote.clear_partial()
        if stale:
            console.print(f"removed {stale} object(s) of an interrupted upload from {remote.uri}")
        remote.upload("config.json")
    prep = prepare(cfg, console)
    thr = parse_threshold(cfg.threshold)
    if thr.low > cfg.repeats:
        console.print(f"[yellow]warning:[/] threshold {thr} needs more votes than the "
                      f"{cfg.repeats} held-out predictions each image gets: no image can be a "
                      "dupe; lower --threshold or raise --repeats")
    stale = rundir.clear_partial_writes(run)
    if stale:
        console.print(f"removed {stale} partial prediction write(s) of an interrupted attempt")
    planned = all_trainings(cfg.repeats)
    done = rundir.completed_trainings(run)
    passed = (run / "sanity.json").exists() and rundir.read_json(run / "sanity.json")["ok"]
    if cfg.sanity and not done and not passed:  # a failed check is run again, not skipped
        if not run_sanity(prep.images, prep.index["label"].to_numpy(), prep.classes, cfg.hyp,
                          console, out=run / "sanity.json"):
            raise SanityError(f"the sanity check failed (see above and {run / 'sanity.json'}); "
                              "fix the cause, or pass --no-sanity to train anyway")
    todo = [i for i in planned if i not in done]
    if remote is not None:  # the scan, splits and cache: a resume on another machine needs them
        remote.push()
    outcome: dict = {"failures": {}, "slots": 0, "timings": {}}
    if todo:
        if done:
            console.print(f"resuming: {len(done)} of {len(planned)} trainings already done")
        outcome = run_trainings(cfg, prep, todo, console)
    else:
        console.print(f"all {len(planned)} trainings already done")
    t_analysis = time.perf_counter()
    analysis, seconds = load_analysis(run, cfg.threshold)
    write_outputs(run, analysis)
    analysis_s = time.perf_counter() - t_analysis
    console.print(report(analysis, seconds=seconds))
    try:  # pictures are a convenience: a failure here must not lose a finished pass
        from orchestrator.visual import write_html
        page, sheets = write_html(analysis, run)
        console.print(f"HTML report: {page} (contact sheets in {page.parent / 'sheets'})",
                      highlight=False)
    except Exception as e:  # noqa: BLE001
        console.print(f"[yellow]warning:[/] the HTML report was not written: {e}; "
                      f"`dupes report {run} --html` tries again")

    completed = rundir.completed_trainings(run)
    failures = outcome["failures"]
    failure_rows = [{"repeat": r, "fold": f, "error": e} for (r, f), e in failures.items()]
    rundir.write_json(run / "failures.json", failure_rows)
    summary = {
        "data_dir": str(cfg.data_dir), "run_dir": str(run),
        "n_samples": int(len(prep.index)), "n_classes": len(prep.classes),
        "n_trainings": len(completed), "n_trainings_planned": len(planned),
        "n_trainings_failed": len(failure_rows),
        "n_prediction_rows": int(analysis.n_prediction_rows),
        "n_dupes": int(len(analysis.dupes)), "threshold": str(analysis.threshold),
        "dupes_per_threshold": analysis.per_threshold,
        "heldout_accuracy_mean": float(analysis.accuracy["accuracy"].mean()),
        "compute_s": float(sum(seconds.values())),
        "slots": int(outcome["slots"]),
        "timings": {**prep.timings, **outcome["timings"], "analysis_s": analysis_s},
        "wall_s": time.perf_counter() - t_start,
    }
    if failure_rows:
        missing = [i for i in planned if i not in completed]
        console.print(f"[red]{len(failure_rows)} training(s) failed[/] (see {run}/failures.json); "
                      f"{len(missing)} of {len(planned)} have no predictions. The analysis above "
                      f"uses the {len(completed)} that finished; `dupes run --resume {run}` "
                      "retrains only the missing ones.")
        for row in failure_rows[:3]:
            console.print(f"  r{row['repeat']} f{row['fold']}: "
                          f"{row['error'].strip().splitlines()[-1][:300]}", highlight=False)
    return summary


class SanityError(RuntimeError):
    """The preflight check failed: 20 trainings would be wasted."""


def run_sanity(images, labels, classes, hyp: dict, console: Console, *,
               out: Path | None = None) -> bool:
    """Run the preflight checks in this process and print the verdict; True if it passed."""
    import dataclasses

    import torch

    from analysis.report import sanity_table
    from trainers.hyp import Hyp
    from trainers.sanity import sanity

    t0 = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    verdict = sanity(np.asarray(images), np.asarray(labels), classes, Hyp.from_dict(hyp),
                     device=device)
    console.print(sanity_table(verdict.checks))
    if out is not None:
        rundir.write_json(out, {"ok": verdict.ok, "seconds": time.perf_counter() - t0,
                                "checks": [dataclasses.asdict(c) for c in verdict.checks]})
    return verdict.ok


def save_summary(run_dir: Path, summary: dict, *, storage: str | None = None) -> None:
    """summary.json; for a bucket run, then everything the bucket still lacks (the summary
    last: its presence says the pass is over)."""
    rundir.write_json(Path(run_dir) / "summary.json", summary)
    if storage:
        try:
            RemoteRun(storage, Path(run_dir)).push()
        except Exception as e:  # noqa: BLE001 - any pyarrow/network error: say how to retry
            raise StorageError(f"the pass finished, but uploading it to {storage} failed: {e}. "
                               f"Every result is in the local mirror {run_dir}; "
                               f"`dupes run --resume {storage}` uploads what is missing") from e
