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
# The measured default of the combined ranking (benchmarks/detection.py, BENCHMARKS.md
# "Rankings"): no score is best everywhere, so the one with the best worst case. On 12 cases
# of planted noise with strong models (MNIST, Fashion-MNIST) the normalized margin ranked
# best (mean average precision 0.919, worst 0.776, self-confidence 0.867 and 0.599); on
# real human noise and weak models (CIFAR-10N, CIFAR-10 and MNIST subsets) it fell to 0.303
# where self-confidence kept 0.415 (published benchmarks agree: margin is worse on
# Food-101N). Self-confidence's worst case is the best of all scores and mixes measured.
# Without cleanlab's scores (no mean probabilities) the ranking falls back to
# FALLBACK_INPUTS.
COMBINED_INPUTS = ("self_confidence",)
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


def _scorers() -> dict:
    from cleanlab.rank import (get_confidence_weighted_entropy_for_each_label,
                               get_normalized_margin_for_each_label,
                               get_self_confidence_for_each_label)
    return {"self_confidence": get_self_confidence_for_each_label,
            "normalized_margin": get_normalized_margin_for_each_label,
            "confidence_weighted_entropy": get_confidence_weighted_entropy_for_each_label}


def label_quality(labels: np.ndarray, mean_probs: np.ndarray, *,
                  methods: tuple[str, ...] = SCORE_METHODS, issues: bool = True,
                  filter_by: str = "prune_by_noise_rate"
                  ) -> tuple[pd.DataFrame, np.ndarray, int, int]:
    """cleanlab's label-quality scores, confident-learning flags and two estimates of the
    number of wrong labels, from one validation of `mean_probs` (samples x classes): the
    calibrated one (`num_label_issues(estimation_method="off_diagonal_calibrated")`, the
    noise estimate the report shows) and the uncalibrated off-diagonal count (cleanlab
    2.9's default method, "off_diagonal"), the size of the dupe set under weak models (see
    `run_analysis.select`).

    Scores run from 0 (surely wrong) to 1 (surely right); rows of NaN (never predicted) get
    NaN scores and are never flagged. cleanlab's per-method scorers and `find_label_issues`
    are given the validated arrays and one confident joint, computed once: its public entry
    points would each validate the 1M x 100 array again and recount the joint (measured:
    5.6 s against 1.9 s at 1M x 100, same results). `find_label_issues` runs in this process
    (n_jobs=1): its worker pool was slower on 2 cores and would fork a process holding GBs.
    """
    bad = sorted(set(methods) - set(SCORE_METHODS))
    if bad:
        raise ValueError(f"unknown score methods {bad}: valid methods are {list(SCORE_METHODS)}")
    if filter_by not in FILTERS:
        raise ValueError(f"unknown filter_by {filter_by!r}: valid choices are {list(FILTERS)}")
    labels, mean_probs = _check(labels, mean_probs)
    ok = _usable(labels, mean_probs)
    scores = {m: np.full(len(labels), np.nan) for m in methods}
    flags, estimate, confident = np.zeros(len(labels), bool), 0, 0
    if not ok.any():
        return pd.DataFrame(scores), flags, estimate, confident
    y, p = _rows(labels, mean_probs, ok)
    scorers = _scorers()
    for method in methods:
        scores[method][ok] = scorers[method](y, p)
    # cleanlab needs every class among the labels; with fewer, its estimate is meaningless
    if issues and ok.sum() >= 2 and len(np.unique(y)) == mean_probs.shape[1]:
        from cleanlab.count import compute_confident_joint, estimate_joint
        from cleanlab.filter import find_label_issues

        # calibration rescales the joint's counts, not which images are off its diagonal:
        # one pass gives both
        joint, off = compute_confident_joint(y, p, calibrate=True,
                                             return_indices_of_off_diagonals=True)
        flags[ok] = find_label_issues(y, p, filter_by=filter_by, confident_joint=joint,
                                      n_jobs=1)
        # as cleanlab's num_label_issues (off_diagonal_calibrated), on the same joint
        estimate = int(np.rint((1.0 - estimate_joint(y, p, confident_joint=joint).trace())
                               * len(y)))
        confident = len(off_diagonal_rows(y, p, off))
    return pd.DataFrame(scores), flags, estimate, confident


def off_diagonal_rows(y: np.ndarray, p: np.ndarray, off: np.ndarray) -> np.ndarray:
    """The rows cleanlab's num_label_issues(estimation_method="off_diagonal") counts, from
    the confident joint's off-diagonal indices `off`: those whose prediction, the given label
    nudged up by cleanlab's float tolerance, is still another class. cleanlab copies all
    N x C probabilities for that test (4 GB at 10M x 100); only the off-diagonal rows are
    copied here."""
    from cleanlab.internal.constants import FLOATING_POINT_COMPARISON
    off = np.asarray(off, np.int64)
    q = np.array(p[off], copy=True)
    q[np.arange(len(off)), y[off]] += FLOATING_POINT_COMPARISON
    return off[q.argmax(1) != y[off]]


def label_quality_scores(labels: np.ndarray, mean_probs: np.ndarray, *,
                         methods: tuple[str, ...] = SCORE_METHODS) -> pd.DataFrame:
    """The scores of `label_quality` alone."""
    return label_quality(labels, mean_probs, methods=methods, issues=False)[0]


def label_issues(labels: np.ndarray, mean_probs: np.ndarray, *,
                 filter_by: str = "prune_by_noise_rate") -> tuple[np.ndarray, int]:
    """The flags and estimated number of wrong labels of `label_quality` alone."""
    return label_quality(labels, mean_probs, methods=(), filter_by=filter_by)[1:3]


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
