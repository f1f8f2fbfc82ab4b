"""Confident learning's per-image test, without cleanlab, for a stream of predictions: which
held-out predictions say an image is confidently mislabelled.

cleanlab's confident joint needs every probability of a set of predictions at once (its
per-class thresholds are means over the set). Here the thresholds of one training's held-out
predictions are computed where they are made (the worker, from the table it returns), so the
test of each prediction row needs only its row and its training's thresholds: the analysis
streams the predictions once and counts, per image, the trainings that flag it.
"""
from __future__ import annotations

import numpy as np

# cleanlab's float tolerance of the threshold test and of the label's own probability
# (cleanlab.internal.constants.FLOATING_POINT_COMPARISON)
TOLERANCE = 1e-6


def confident_thresholds(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Per class, the mean probability of it over the images labelled it (cleanlab's
    `get_confident_thresholds`); inf for a class nobody is labelled, which is never claimed."""
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be rows x classes with one row per label, got "
                         f"{probs.shape} for {len(labels)} labels")
    sums = np.zeros(num_classes)
    np.add.at(sums, labels, probs[np.arange(len(labels)), labels])
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def thresholds_json(thresholds: np.ndarray) -> list:
    """Thresholds as JSON takes them: a class nobody is labelled (inf) as null."""
    return [float(t) if np.isfinite(t) else None for t in thresholds]


def thresholds_from_json(values: list) -> np.ndarray:
    return np.array([np.inf if v is None else float(v) for v in values], np.float64)


def recorded_thresholds(metrics: dict) -> dict:
    """Each training's thresholds from its metrics (`cl_thresholds`, {(repeat, fold): metrics}
    as a run keeps them); trainings recorded without them are left out, and a reader then
    flags no row."""
    return {item: thresholds_from_json(m["cl_thresholds"])
            for item, m in metrics.items() if m.get("cl_thresholds")}


def off_diagonal(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Rows off the confident joint's diagonal (cleanlab's rules, ties included): a row at or
    above one class's threshold is counted for that class, above several for its most probable
    class; off the diagonal when that class is not its label. `thresholds` is per class."""
    labels = np.asarray(labels, np.int64)
    above = probs >= np.asarray(thresholds) - TOLERANCE
    n_above = above.sum(1)
    claimed = np.where(n_above > 1, probs.argmax(1), above.argmax(1))
    return (n_above > 0) & (claimed != labels)


def confidently_wrong(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray
                      ) -> np.ndarray:
    """The rows confident learning's count takes (the analysis's `num_confident`, cleanlab's
    `num_label_issues(estimation_method="off_diagonal")`): off the diagonal, and another class
    more probable than the label (its probability nudged up by the tolerance)."""
    labels = np.asarray(labels, np.int64)
    own = probs[np.arange(len(labels)), labels]
    # the second test first: it takes one pass over the probabilities, and only the rows it
    # keeps (the wrong predictions) need the threshold test's several
    rows = np.flatnonzero(probs.max(1) > own + TOLERANCE)
    out = np.zeros(len(labels), bool)
    out[rows] = off_diagonal(labels[rows], probs[rows], thresholds)
    return out


def flags_by_training(labels: np.ndarray, probs: np.ndarray, repeat: np.ndarray,
                      fold: np.ndarray, thresholds: dict) -> np.ndarray | None:
    """`confidently_wrong` of prediction rows of several trainings, each row against its own
    training's thresholds (`thresholds[(repeat, fold)]`, per class); None when a row's
    training has none (a run recorded before they were). One training's rows at a time: a
    batch holds few trainings, and per-row thresholds would be another rows x classes."""
    labels = np.asarray(labels, np.int64)
    out = np.zeros(len(labels), bool)
    for item, rows in _trainings(repeat, fold):
        if item not in thresholds:
            return None
        out[rows] = confidently_wrong(labels[rows], probs[rows], thresholds[item])
    return out


def thresholds_by_training(labels: np.ndarray, probs: np.ndarray, repeat: np.ndarray,
                           fold: np.ndarray, num_classes: int) -> dict:
    """Each training's thresholds from its own rows (what the worker records, for a table
    held whole)."""
    return {item: confident_thresholds(labels[rows], probs[rows], num_classes)
            for item, rows in _trainings(repeat, fold)}


def _trainings(repeat: np.ndarray, fold: np.ndarray):
    """Each training among prediction rows, (repeat, fold), and its rows' positions."""
    keys = np.asarray(repeat, np.int64) * 2 + np.asarray(fold, np.int64)  # folds are 0 and 1
    for k in np.unique(keys):
        yield (int(k) // 2, int(k) % 2), np.flatnonzero(keys == k)
