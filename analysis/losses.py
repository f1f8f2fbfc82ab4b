"""Top losses: the images that cost the held-out models most, across all runs.

Unlike fastai's in-sample `plot_top_losses`, every loss here is out-of-sample: each image is
scored only by models that never saw it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def loss_stats(sample_id: np.ndarray, loss: np.ndarray, *, num_samples: int) -> pd.DataFrame:
    """Per sample: held-out evaluations, mean loss, max loss, and rank by mean loss (1 = worst;
    samples never evaluated get no rank)."""
    sample_id, loss = np.asarray(sample_id, dtype=np.int64), np.asarray(loss, dtype=np.float64)
    if sample_id.shape != loss.shape or sample_id.ndim != 1:
        raise ValueError(f"sample_id and loss must be 1-D of equal length, got "
                         f"{sample_id.shape} and {loss.shape}")
    n = np.bincount(sample_id, minlength=num_samples)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(sample_id, weights=loss, minlength=num_samples) / n
    max_loss = np.full(num_samples, -np.inf)
    np.maximum.at(max_loss, sample_id, loss)  # unbuffered: repeated ids all count
    max_loss[n == 0] = np.nan
    rank = np.full(num_samples, -1, dtype=np.int64)
    seen = np.flatnonzero(n > 0)
    rank[seen[np.argsort(-mean[seen], kind="stable")]] = np.arange(1, len(seen) + 1)
    return pd.DataFrame({"sample_id": np.arange(num_samples), "n_evals": n,
                         "mean_loss": mean, "max_loss": max_loss, "rank": rank})


def highest_losses(votes: pd.DataFrame, *, k: int) -> pd.DataFrame:
    """The k rows of a vote table with the highest mean held-out loss (never-evaluated
    samples left out): what the HTML report and the contact sheets show."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return votes[votes["n_evals"] > 0].sort_values("mean_loss", ascending=False).head(k)


def top_losses(stats: pd.DataFrame, *, k: int = 50, by: np.ndarray | None = None) -> pd.DataFrame:
    """The k samples with the highest mean held-out loss, overall or per group (`by`, e.g.
    the given label: the k worst of every class)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranked = stats[stats["rank"] > 0].sort_values("rank")
    if by is None:
        return ranked.head(k)
    ranked = ranked.assign(group=np.asarray(by)[ranked["sample_id"].to_numpy()])
    return ranked.groupby("group", sort=True, group_keys=False).head(k).sort_values(
        ["group", "rank"])
