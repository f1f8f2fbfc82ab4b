"""Votes: how many held-out runs predicted the *same* wrong class for an image.

The dupes method (WHOI, 2019) trains 20 models on swapped 50:50 halves, so every image gets
10 out-of-sample predictions. An image that is consistently predicted as one other class is
probably labelled wrong. Votes spread over different wrong classes are not pooled: "3 and 3
and 4" is confusion, not a relabel suggestion.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.columns import COLUMNS
from analysis.thresholds import Threshold

VOTE_COLUMNS = [
    "sample_id", "label", "n_evals", "top_wrong_class", "top_wrong_votes", "n_wrong",
    "mean_loss", "mean_prob_given",
]


def count_votes(
    sample_id: np.ndarray,
    label: np.ndarray,
    pred: np.ndarray,
    loss: np.ndarray,
    prob_given: np.ndarray,
    *,
    num_samples: int | None = None,
) -> pd.DataFrame:
    """Per-sample vote table from long-format held-out predictions (one row per evaluation).

    Parameters
    ----------
    sample_id, label, pred, loss, prob_given : 1-D arrays of equal length
        One row per (sample, training) evaluation. `prob_given` is the predicted probability
        of the *given* label.
    num_samples : int, optional
        Number of samples in the dataset; samples with no evaluation get `n_evals == 0`.
        Default: `max(sample_id) + 1`.

    Returns
    -------
    pd.DataFrame with one row per sample and columns `VOTE_COLUMNS`. `top_wrong_class` is
    the wrong class predicted most often (-1 if never wrong; ties go to the lower class
    index), `top_wrong_votes` how often it was predicted, `n_wrong` all wrong predictions.
    """
    arrays = [np.asarray(a) for a in (sample_id, label, pred, loss, prob_given)]
    n = len(arrays[0])
    if any(a.ndim != 1 or len(a) != n for a in arrays):
        raise ValueError(
            "sample_id, label, pred, loss and prob_given must be 1-D arrays of equal length, "
            f"got shapes {[a.shape for a in arrays]}"
        )
    sample_id, label, pred, loss, prob_given = arrays
    if n and sample_id.min() < 0:
        raise ValueError("sample_id must be non-negative")
    if num_samples is None:
        num_samples = int(sample_id.max()) + 1 if n else 0
    elif n and sample_id.max() >= num_samples:
        raise ValueError(f"sample_id {int(sample_id.max())} >= num_samples {num_samples}")
    return _count_votes(sample_id.astype(np.int64), label.astype(np.int64),
                        pred.astype(np.int64), loss, prob_given, num_samples)


def _count_votes(sid, label, pred, loss, prob_given, num_samples) -> pd.DataFrame:
    n_evals = np.bincount(sid, minlength=num_samples)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_loss = np.bincount(sid, weights=loss, minlength=num_samples) / n_evals
        mean_prob = np.bincount(sid, weights=prob_given, minlength=num_samples) / n_evals

    given = np.full(num_samples, -1, dtype=np.int64)
    given[sid] = label  # the given label is a property of the sample, the same in every row

    wrong = pred != label
    n_wrong = np.bincount(sid[wrong], minlength=num_samples)
    # One key per (sample, wrong class): counting keys counts votes for that exact class.
    num_classes = int(max(label.max(initial=0), pred.max(initial=0))) + 1
    keys, votes = np.unique(sid[wrong] * num_classes + pred[wrong], return_counts=True)
    key_sample, key_class = keys // num_classes, keys % num_classes
    # Sort by sample, then votes descending, then class ascending: the first row of each
    # sample is its top wrong class, with ties resolved to the lower class index.
    order = np.lexsort((key_class, -votes, key_sample))
    key_sample, key_class, votes = key_sample[order], key_class[order], votes[order]
    first = np.ones(len(key_sample), dtype=bool)
    first[1:] = key_sample[1:] != key_sample[:-1]

    top_class = np.full(num_samples, -1, dtype=np.int64)
    top_votes = np.zeros(num_samples, dtype=np.int64)
    top_class[key_sample[first]] = key_class[first]
    top_votes[key_sample[first]] = votes[first]
    return pd.DataFrame({
        "sample_id": np.arange(num_samples, dtype=np.int64),
        "label": given.astype(np.int16),
        "n_evals": n_evals.astype(np.int16),
        "top_wrong_class": top_class.astype(np.int16),
        "top_wrong_votes": top_votes.astype(np.int16),
        "n_wrong": n_wrong.astype(np.int16),
        "mean_loss": mean_loss.astype(np.float32),
        "mean_prob_given": mean_prob.astype(np.float32),
    })


def _check_min_ratio(min_ratio: float) -> None:
    if not min_ratio >= 0:
        raise ValueError(f"min_ratio must be >= 0 (0 = votes alone), got {min_ratio}")


def dupe_mask(votes: pd.DataFrame, threshold: Threshold, *, min_ratio: float) -> np.ndarray:
    """Which rows are dupes: enough votes for one wrong class, and that class's mean held-out
    probability at least `min_ratio` times the given label's (0 = votes alone).

    Votes count arg-maxes: on classes that look alike (shirt / T-shirt), models that each
    give the label 45% and the other class 55% all vote against the label, although they are
    nearly undecided. The ratio keeps those out; being relative, it still keeps the images of
    a class pair that is often swapped, whose given label the models learn to give 20-30%.
    benchmarks/detection.py measures both. The default lives in `analysis.rule.DupeRule`;
    here it must be given, so no caller falls back to another one silently.
    """
    _check_min_ratio(min_ratio)
    need = ["top_wrong_votes"] + (["mean_prob_given", "mean_prob_suggested"] if min_ratio else [])
    missing = [c for c in need if c not in votes.columns]
    if missing:
        raise ValueError(f"vote table lacks columns {missing}: build it with analyze() from "
                         "predictions with probabilities, or pass min_ratio=0 (votes alone)")
    hit = threshold.mask(votes["top_wrong_votes"].to_numpy())
    if min_ratio:
        hit &= (votes["mean_prob_suggested"].to_numpy()
                >= min_ratio * votes["mean_prob_given"].to_numpy())
    return hit


# What may order the dupes after their votes (`--rank`); for each, whether a high value is
# suspect (loss, the combined rank) or a low one (cleanlab's quality scores, the margin):
# the registry's columns marked `rank`, the default first.
RANKINGS = {"combined": True, **{c.name: bool(c.suspect_high) for c in COLUMNS if c.rank}}


def select_dupes(votes: pd.DataFrame, threshold: Threshold, *, min_ratio: float,
                 rank: str = "combined") -> pd.DataFrame:
    """Rows of a vote table that are dupes (see `dupe_mask`), the most suspect by `rank`
    first (one of RANKINGS; a table without that column, or with it all NaN, falls back to
    the highest mean loss), more votes breaking ties.

    Votes select, the score orders: sorted by votes first, the list's precision was flat
    across 8, 9 and 10 votes, so a technician met errors later. Measured on 13 passes
    (BENCHMARKS.md "Review order"): the score first had the higher average precision in 11
    and an equal one in 2."""
    if rank not in RANKINGS:
        raise ValueError(f"unknown rank {rank!r}: valid choices are {sorted(RANKINGS)}")
    if "mean_loss" not in votes.columns:
        raise ValueError("vote table lacks columns ['mean_loss']; build it with count_votes()")
    hit = votes[dupe_mask(votes, threshold, min_ratio=min_ratio)]
    if rank not in hit or hit[rank].isna().all():
        rank = "mean_loss"
    suspect = hit[rank] if RANKINGS[rank] else -hit[rank]
    order = (hit.assign(_suspect=suspect.fillna(-np.inf))
             .sort_values(["_suspect", "top_wrong_votes"], ascending=[False, False],
                          kind="stable"))
    return order.drop(columns="_suspect")


def rank_dupes(votes: pd.DataFrame, *, count: int, rank: str = "combined") -> pd.DataFrame:
    """The `count` most suspect rows by `rank` (one of RANKINGS) among those some model
    predicted wrong (they have a suggested class), most suspect first: the dupe set when the
    models are too weak for votes, `count` being an estimate of the wrong labels (confident
    learning's)."""
    if rank not in RANKINGS:
        raise ValueError(f"unknown rank {rank!r}: valid choices are {sorted(RANKINGS)}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    hit = votes[votes["top_wrong_class"].to_numpy() >= 0]
    if rank not in hit or hit[rank].isna().all():
        rank = "mean_loss"
    suspect = hit[rank] if RANKINGS[rank] else -hit[rank]
    order = hit.assign(_suspect=suspect.fillna(-np.inf)).sort_values(
        ["_suspect", "top_wrong_votes"], ascending=[False, False], kind="stable")
    return order.head(count).drop(columns="_suspect")


def dupes_per_threshold(votes: pd.DataFrame, thresholds: list[Threshold], *,
                        min_ratio: float) -> dict[str, int]:
    """Number of dupes at each threshold, keyed by the threshold's canonical text."""
    return {str(t): int(dupe_mask(votes, t, min_ratio=min_ratio).sum())
            for t in thresholds}


def most_confused(dupes: pd.DataFrame, *, top: int = 10) -> pd.DataFrame:
    """(given, suggested) class pairs among dupes, most frequent first."""
    if dupes.empty:
        return pd.DataFrame({"label": [], "top_wrong_class": [], "count": []})
    pairs = dupes.groupby(["label", "top_wrong_class"]).size().rename("count").reset_index()
    return pairs.sort_values(["count", "label", "top_wrong_class"],
                             ascending=[False, True, True]).head(top).reset_index(drop=True)


def heldout_accuracy(repeat: np.ndarray, fold: np.ndarray, label: np.ndarray,
                     pred: np.ndarray) -> pd.DataFrame:
    """Held-out accuracy of every training (repeat, fold) against the *given* labels."""
    df = pd.DataFrame({"repeat": repeat, "fold": fold, "correct": np.asarray(label) == pred})
    out = df.groupby(["repeat", "fold"])["correct"].agg(["size", "mean"]).reset_index()
    return out.rename(columns={"size": "n", "mean": "accuracy"})


def precision_recall(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Precision and recall of flagged sample ids against truly mislabeled sample ids."""
    flagged, truth = set(np.asarray(flagged).tolist()), set(np.asarray(truth).tolist())
    hits = len(flagged & truth)
    precision = hits / len(flagged) if flagged else float("nan")
    recall = hits / len(truth) if truth else float("nan")
    return precision, recall
