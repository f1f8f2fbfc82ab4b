"""Training-dynamics scores from the held-out metrics recorded during training (RUN/epochs/).

Area under the margin (AUM; Pleiss et al., 2020) averages, over training, the margin between
the given label's probability and the largest other one; forgetting (Toneva et al., 2019)
counts how often an image that was predicted as its given label stops being so. Both were
defined on training images; here they are taken on the *held-out* half, so they measure how
steadily models that never saw an image disagree with its label while they learn.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

DYNAMICS_COLUMNS = ("aum", "forgetting", "epoch_evals")


def dynamics_scores(sample_id: np.ndarray, training: np.ndarray, epoch: np.ndarray,
                    margin: np.ndarray, pred: np.ndarray, label: np.ndarray, *,
                    num_samples: int) -> pd.DataFrame:
    """Per sample: `aum` (mean held-out margin over all recorded epochs of all trainings;
    negative = another class usually wins), `forgetting` (correct-to-wrong transitions
    between consecutive recorded epochs, summed over trainings) and `epoch_evals`.

    All inputs but `label` are 1-D with one row per (training, epoch, sample); `training`
    tells trainings apart (e.g. repeat * 2 + fold); `label` is the given label per sample.
    Samples never recorded get NaN and 0.
    """
    sample_id = np.asarray(sample_id, dtype=np.int64)
    cols = [np.asarray(a) for a in (training, epoch, margin, pred)]
    if any(c.shape != sample_id.shape for c in cols) or sample_id.ndim != 1:
        raise ValueError("sample_id, training, epoch, margin and pred must be 1-D of equal "
                         f"length, got {[sample_id.shape] + [c.shape for c in cols]}")
    training, epoch, margin, pred = cols
    label = np.asarray(label, dtype=np.int64)
    if len(sample_id) and (sample_id.min() < 0 or sample_id.max() >= num_samples):
        raise ValueError(f"sample_id must lie in [0, {num_samples}), got "
                         f"[{sample_id.min()}, {sample_id.max()}]")
    if len(label) != num_samples:
        raise ValueError(f"label needs one entry per sample ({num_samples}), got {len(label)}")
    n = np.bincount(sample_id, minlength=num_samples)
    with np.errstate(invalid="ignore", divide="ignore"):
        aum = np.bincount(sample_id, weights=margin.astype(np.float64),
                          minlength=num_samples) / n
    order = np.lexsort((epoch, sample_id, training))
    s, t = sample_id[order], training[order]
    correct = pred[order] == label[s]
    same_run = (s[1:] == s[:-1]) & (t[1:] == t[:-1])
    forgot = same_run & correct[:-1] & ~correct[1:]
    forgetting = np.bincount(s[1:][forgot], minlength=num_samples)
    return pd.DataFrame({"aum": aum, "forgetting": forgetting.astype(np.int64),
                         "epoch_evals": n.astype(np.int64)})
