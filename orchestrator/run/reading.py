"""A finished run read back from its files alone (no Ray, no torch): the analysis behind
`dupes report`, `review export` and the end of a pass, and the top losses. `Run.analysis` and
`Run.top_losses` are the way in; these take the `Run` (duck-typed, so this module needs
nothing of it)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.confident import recorded_thresholds
from analysis.dynamics import DynamicsSums
from analysis.losses import loss_stats, top_losses
from analysis.rule import DupeRule, implied
from analysis.run_analysis import Analysis, analyze, dupes_export_table
from orchestrator.run import rundir
from orchestrator.run.ledger import confirmed_mask, read_ledger


def load_analysis(run, *, ledger: Path | str | None = None,
                  **rule: object) -> tuple[Analysis, dict]:
    """Analyse a run from its files; returns the analysis and each training's seconds.

    The dupe rule is the run's own, with any of its fields (`threshold`, `min_ratio`,
    `ignore_confirmed`, `select`, `rank`) overridden by keyword (a threshold or ratio
    without `select` means the votes). Images in the ledger of confirmed
    labels are marked (`confirmed`), or left out of the dupes with `ignore_confirmed`.
    """
    cfg = run.config()
    index = run.index()
    metrics = run.training_metrics()
    seconds = {k: m.get("seconds", 0.0) for k, m in metrics.items()}
    train_acc = {k: m.get("train_accuracy", np.nan) for k, m in metrics.items()}
    confirmed = confirmed_mask(index["sha1"].to_numpy(), index["class_name"].to_numpy(),
                               read_ledger(run.ledger(ledger)))
    # the metrics read above: each training's thresholds are in them
    columns = run.prediction_columns(mean_probs=True, thresholds=recorded_thresholds(metrics))
    analysis = analyze(index, columns, run.classes(),
                       rule=dataclasses.replace(cfg.rule, **implied(rule)),
                       confirmed=confirmed,
                       dynamics=load_dynamics(run, index["label"].to_numpy()),
                       train_accuracy=train_acc, neighbours=load_neighbours(run, cfg, index))
    mode = cfg.hyp.mode if cfg.hyp.mode != "auto" else ("frozen" if cfg.embedding else None)
    return dataclasses.replace(analysis, mode=mode), seconds


def load_neighbours(run, cfg, index: pd.DataFrame) -> np.ndarray | None:
    """The neighbour score of a frozen-mode run (its embeddings), or None."""
    if not cfg.embedding:
        return None
    from analysis.neighbours import neighbour_agreement
    from orchestrator.run.embeddings import EmbedSpec, embedding_store, stored_features
    spec = EmbedSpec(**cfg.embedding)
    if not set(run.shard_names()) <= embedding_store(run, spec).names():
        return None  # embedded only in part (an interrupted pass)
    features = stored_features(run, spec, local=True)[1].gather(np.arange(len(index)))
    return neighbour_agreement(features, index["label"].to_numpy(),
                               sha1=index["sha1"].to_numpy())


def load_dynamics(run, labels: np.ndarray) -> pd.DataFrame | None:
    """Training-dynamics scores from RUN/epochs/, streamed one training at a time, or None
    when the run recorded none."""
    batches = run.epoch_batches(columns=["sample_id", "epoch", "margin", "pred"])
    if batches is None:
        return None
    sums = DynamicsSums(labels, num_samples=len(labels))
    for (r, f), table in batches:
        col = {n: table[n].to_numpy() for n in table.column_names}
        sums.add(col["sample_id"], np.full(len(col["epoch"]), r * 256 + f), col["epoch"],
                 col["margin"], col["pred"])
    return sums.scores()


def load_top_losses(run, *, k: int, per_class: bool) -> pd.DataFrame:
    """The images with the highest mean held-out loss, overall or the k worst of every given
    class, with their votes, p(given), and AUM and forgetting when epochs were recorded."""
    cols = run.prediction_columns()
    index = run.index()
    votes = analyze(index, cols, run.classes(), scores=False, rule=DupeRule(min_ratio=0),
                    dynamics=load_dynamics(run, index["label"].to_numpy())).votes
    stats = loss_stats(cols["sample_id"], cols["loss"], num_samples=len(index))
    by = index["label"].to_numpy() if per_class else None
    return top_losses(stats, k=k, by=by).merge(votes.drop(columns=["mean_loss", "n_evals"]),
                                               on="sample_id", how="left")


def write_analysis(run_dir: Path, analysis: Analysis) -> None:
    """votes.parquet, and the dupes as dupes.parquet and dupes.csv."""
    rundir.write_parquet(run_dir / "votes.parquet", analysis.votes)
    table = dupes_export_table(analysis.dupes)
    rundir.write_parquet(run_dir / "dupes.parquet", table)
    rundir.write_csv(run_dir / "dupes.csv", table)
