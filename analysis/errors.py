"""Error analysis of a run: where the held-out models disagree with the given labels.

A confusion matrix over all held-out predictions (given label x predicted class), per-class
error rates, the most-confused class pairs, and per training the gap between training and
held-out accuracy (a large gap: the models memorise; both low: they underfit).
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def confusion_matrix(label: np.ndarray, pred: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Counts of held-out predictions, rows = given label, columns = predicted class."""
    label, pred = np.asarray(label, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    if label.shape != pred.shape or label.ndim != 1:
        raise ValueError(f"label and pred must be 1-D of equal length, got {label.shape} "
                         f"and {pred.shape}")
    if len(label) and (min(label.min(), pred.min()) < 0
                       or max(label.max(), pred.max()) >= num_classes):
        raise ValueError(f"classes must lie in [0, {num_classes})")
    return np.bincount(label * num_classes + pred,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_errors(confusion: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Per given class: held-out predictions, error rate (predicted != given), the class it
    is most often taken for, and the precision of predictions of that class."""
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] != len(classes):
        raise ValueError(f"confusion must be {len(classes)} x {len(classes)}, got "
                         f"{confusion.shape}")
    n = confusion.sum(1)
    right = np.diag(confusion)
    off = confusion - np.diag(right)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = 1 - right / n
        precision = right / confusion.sum(0)
    names = np.asarray(classes, dtype=object)
    return pd.DataFrame({"class": names, "n": n, "error_rate": error,
                         "most_taken_for": np.where(off.max(1) > 0, names[off.argmax(1)], ""),
                         "share_of_errors": np.where(n - right > 0, off.max(1) /
                                                     np.maximum(n - right, 1), 0.0),
                         "precision": precision}).sort_values(
        "error_rate", ascending=False, kind="stable").reset_index(drop=True)


def confused_pairs(confusion: np.ndarray, classes: list[str], *, top: int = 10) -> pd.DataFrame:
    """The (given, predicted) pairs with the most held-out predictions, off the diagonal."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    confusion = np.asarray(confusion)
    off = confusion - np.diag(np.diag(confusion))
    flat = np.argsort(-off, axis=None, kind="stable")[:top]
    given, pred = np.unravel_index(flat, off.shape)
    keep = off[given, pred] > 0
    n = confusion.sum(1)
    return pd.DataFrame({"given": np.asarray(classes, dtype=object)[given[keep]],
                         "predicted": np.asarray(classes, dtype=object)[pred[keep]],
                         "count": off[given, pred][keep],
                         "share_of_given": off[given, pred][keep] / np.maximum(n[given[keep]], 1)})


def fit_table(accuracy: pd.DataFrame, train_accuracy: dict) -> pd.DataFrame:
    """Per training: training accuracy (augmented half, last epoch), held-out accuracy and
    the gap. `accuracy` has repeat, fold, accuracy; `train_accuracy` maps (repeat, fold) to
    the training accuracy (missing ones are NaN)."""
    df = accuracy[["repeat", "fold", "accuracy"]].rename(columns={"accuracy": "heldout_accuracy"})
    df = df.assign(train_accuracy=[train_accuracy.get((int(r), int(f)), np.nan)
                                   for r, f in zip(df["repeat"], df["fold"])])
    return df.assign(gap=df["train_accuracy"] - df["heldout_accuracy"]).reset_index(drop=True)
