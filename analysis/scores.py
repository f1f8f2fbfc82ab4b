"""Label-quality scores over the out-of-sample probabilities, and one combined ranking.

cleanlab computes the confident-learning scores (self-confidence, normalized margin,
confidence-weighted entropy) and flags (`find_label_issues`) from `pred_probs`; we feed it
the mean of each image's held-out probability vectors: 10 models that never saw the image,
averaged as an ensemble. What cleanlab lacks, and this module adds, is a ranking that also
uses the vote counts and the held-out loss (and the training dynamics, when recorded).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

SCORE_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given")
# The measured default of the combined ranking (benchmarks/detection.py, 8 cases of planted
# noise): of every mix of 1-3 of votes, loss, self-confidence, normalized margin and AUM,
# the normalized margin alone ranked best (mean average precision 0.921); adding the votes
# (0.914), AUM (0.911) or the loss (0.903) made it worse. Without cleanlab's scores (no mean
# probabilities) the ranking falls back to FALLBACK_INPUTS.
COMBINED_INPUTS = ("normalized_margin",)
FALLBACK_INPUTS = ("votes", "mean_loss", "aum")


def _check(labels: np.ndarray, mean_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    mean_probs = np.asarray(mean_probs, dtype=np.float32)
    if mean_probs.ndim != 2 or len(mean_probs) != len(labels):
        raise ValueError(f"mean_probs must be samples x classes with one row per label, got "
                         f"{mean_probs.shape} for {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= mean_probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {mean_probs.shape[1]}), got "
                         f"[{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64), mean_probs


def _usable(labels: np.ndarray, mean_probs: np.ndarray) -> np.ndarray:
    """Rows cleanlab can take: predicted at least once (no NaN row)."""
    return ~np.isnan(mean_probs).any(1) if len(labels) else np.zeros(0, bool)


def label_quality_scores(labels: np.ndarray, mean_probs: np.ndarray, *,
                         methods: tuple[str, ...] = SCORE_METHODS) -> pd.DataFrame:
    """cleanlab's label-quality scores (0 = surely wrong, 1 = surely right) per sample.

    `mean_probs` is samples x classes; rows of NaN (never predicted) get NaN scores.
    """
    from cleanlab.rank import get_label_quality_scores

    bad = sorted(set(methods) - set(SCORE_METHODS))
    if bad:
        raise ValueError(f"unknown score methods {bad}: valid methods are {list(SCORE_METHODS)}")
    labels, mean_probs = _check(labels, mean_probs)
    ok = _usable(labels, mean_probs)
    out = {}
    if ok.any():
        y, p = _rows(labels, mean_probs, ok)
    for method in methods:
        col = np.full(len(labels), np.nan)
        if ok.any():
            col[ok] = get_label_quality_scores(y, p, method=method)
        out[method] = col
    return pd.DataFrame(out)


def label_issues(labels: np.ndarray, mean_probs: np.ndarray, *,
                 filter_by: str = "prune_by_noise_rate") -> tuple[np.ndarray, int]:
    """cleanlab's confident-learning flags (`find_label_issues`) and its estimate of how many
    labels are wrong (`num_label_issues`). Unpredicted samples are never flagged."""
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues

    if filter_by not in FILTERS:
        raise ValueError(f"unknown filter_by {filter_by!r}: valid choices are {list(FILTERS)}")
    labels, mean_probs = _check(labels, mean_probs)
    ok = _usable(labels, mean_probs)
    flags = np.zeros(len(labels), bool)
    # cleanlab needs every class among the labels; with fewer, its estimate is meaningless
    if ok.sum() < 2 or len(np.unique(labels[ok])) < mean_probs.shape[1]:
        return flags, 0
    y, p = _rows(labels, mean_probs, ok)
    flags[ok] = find_label_issues(y, p, filter_by=filter_by)
    return flags, int(num_label_issues(y, p))


def _rows(labels: np.ndarray, p: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The usable rows, without copying 1M x 100 floats when all are usable, and summing to
    1 as cleanlab requires (a mean of softmaxes in float32 drifts by ~1e-7: left as is)."""
    if not ok.all():
        labels, p = labels[ok], p[ok]
    drift = np.abs(p.sum(1) - 1).max() if len(p) else 0.0
    if drift > 1e-4:
        p = p / p.sum(1, keepdims=True, dtype=np.float64).astype(np.float32)
    return labels, p


def combined_score(scores: pd.DataFrame, *, inputs: tuple[str, ...] | None = None
                   ) -> np.ndarray:
    """One ranking from several suspect signals: the mean of their percentile ranks.

    `scores` holds the columns named in `inputs` (any of votes, mean_loss, aum,
    self_confidence, normalized_margin, forgetting); columns that are absent or all NaN are
    skipped. The default is the measured best, COMBINED_INPUTS, or FALLBACK_INPUTS when
    `scores` has none of those. Returns values in [0, 1], higher = more suspect; NaN where
    no input is known.
    Percentile ranks make signals on different scales (vote counts, nats, margins) count
    equally, and a single extreme value cannot dominate.
    """
    if inputs is None:
        known = [c for c in COMBINED_INPUTS if c in scores and not scores[c].isna().all()]
        inputs = COMBINED_INPUTS if known else FALLBACK_INPUTS
    valid = {"votes", "mean_loss", "aum", "self_confidence", "normalized_margin",
             "confidence_weighted_entropy", "forgetting"}
    bad = sorted(set(inputs) - valid)
    if bad:
        raise ValueError(f"unknown inputs {bad}: valid inputs are {sorted(valid)}")
    ranks = []
    for name in inputs:
        if name not in scores or scores[name].isna().all():
            continue
        col = scores[name].to_numpy(np.float64)
        if name in ("aum", "self_confidence", "normalized_margin",
                    "confidence_weighted_entropy"):
            col = -col  # a low quality or margin is suspect
        ranks.append(pd.Series(col).rank(pct=True, method="average").to_numpy())
    if not ranks:
        return np.full(len(scores), np.nan)
    stacked = np.vstack(ranks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": all NaN
        return np.nanmean(stacked, axis=0)
