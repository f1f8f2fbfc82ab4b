"""A pass's place in rounds of review: the round it is (from the corrected copy's provenance),
the ledger that copy was reviewed with, and the comparison with the round before."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console, Group

from analysis.rounds import Review, RoundStats, compare_table, next_round, review_of, round_stats
from analysis.run_analysis import Analysis
from orchestrator.config import RunConfig
from orchestrator.run.directory import Run
from orchestrator.run.history import run_round


def place_in_rounds(run: Run, cfg: RunConfig, console: Console) -> RunConfig:
    """A fresh run records its round (history.json); on a corrected copy without --ledger it
    takes the ledger the copy was reviewed with, so confirmed images are not asked again."""
    if run.has_history():
        return cfg
    history = run_round(cfg.data_dir)
    run.save_history(history)
    after = history.get("after") or {}
    if after:
        console.print(f"round {history['round']}: {cfg.data_dir} is the corrected copy made "
                      f"from the review of {after.get('run') or 'an earlier run'}",
                      highlight=False)
    if cfg.ledger is None and after.get("ledger"):
        console.print(f"ledger: {after['ledger']} (the one round {history['round'] - 1} was "
                      "reviewed with; --ledger chooses another)", highlight=False)
        cfg = dataclasses.replace(cfg, ledger=after["ledger"])
    return cfg


def rounds_of(runs: list[Run], *, last: Analysis | None = None
              ) -> tuple[list[RoundStats], list[Review | None]]:
    """Each run's numbers, and the review that led from each run to the next (read from the
    next run's provenance; None where it cannot be read). `last`: the last run's analysis
    when the caller has it (a pass that just analysed itself)."""
    stats, reviews = [], []
    for k, run in enumerate(runs):
        analysis = last if last is not None and k == len(runs) - 1 else run.analysis()[0]
        stats.append(round_stats(analysis, name="/".join(Path(str(run.location)).parts[-2:]),
                                 round=int(run.history().get("round", k + 1))))
        if k:
            reviews.append(_review_into(runs[k]))
    reviews.append(None)
    return stats, reviews


def _review_into(run: Run) -> Review | None:
    from orchestrator.review.apply import read_manifest
    manifest = (run.history().get("after") or {}).get("manifest")
    if not manifest:
        return None
    try:
        table = read_manifest(Path(manifest))
    except Exception:  # moved or deleted: the table says "-"
        return None
    try:  # the review's listed order, beside its manifest
        from orchestrator.review.files import META_DIR, read_exported
        exported = read_exported(Path(manifest).parent) \
            if (Path(manifest).parent / META_DIR).is_dir() else None
    except Exception:
        exported = None
    return review_of(table, exported)


def previous_run(run: Run) -> Run | None:
    """The run whose review made this run's data, when it can still be opened."""
    prev = (run.history().get("after") or {}).get("run")
    try:
        return Run.open(prev) if prev else None
    except Exception:
        return None


def rounds_report(runs: list[Run], *, last: Analysis | None = None) -> Group:
    """The comparison table and the next-round advice for runs in round order."""
    stats, reviews = rounds_of(runs, last=last)
    return Group(compare_table(stats, reviews), next_round(stats, reviews))
