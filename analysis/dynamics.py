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
    Samples never recorded get NaN and 0. For inputs larger than memory, feed the
    trainings one by one to `DynamicsSums` instead.
    """
    sums = DynamicsSums(label, num_samples=num_samples)
    sums.add(sample_id, training, epoch, margin, pred)
    return sums.scores()


class DynamicsSums:
    """Running sums of the training-dynamics scores, one batch of rows at a time.

    A batch must hold whole trainings (every recorded epoch of each of its trainings), as a
    partition of RUN/epochs/ does: forgetting compares consecutive epochs of one training.
    """

    def __init__(self, label: np.ndarray, *, num_samples: int):
        self.label = np.asarray(label, dtype=np.int64)
        if len(self.label) != num_samples:
            raise ValueError(f"label needs one entry per sample ({num_samples}), got "
                             f"{len(self.label)}")
        self.num_samples = num_samples
        self.margin_sum = np.zeros(num_samples)
        self.n = np.zeros(num_samples, np.int64)
        self.forgetting = np.zeros(num_samples, np.int64)

    def add(self, sample_id, training, epoch, margin, pred) -> None:
        sample_id = np.asarray(sample_id, dtype=np.int64)
        cols = [np.asarray(a) for a in (training, epoch, margin, pred)]
        if any(c.shape != sample_id.shape for c in cols) or sample_id.ndim != 1:
            raise ValueError("sample_id, training, epoch, margin and pred must be 1-D of equal "
                             f"length, got {[sample_id.shape] + [c.shape for c in cols]}")
        training, epoch, margin, pred = cols
        k = self.num_samples
        if len(sample_id) and (sample_id.min() < 0 or sample_id.max() >= k):
            raise ValueError(f"sample_id must lie in [0, {k}), got "
                             f"[{sample_id.min()}, {sample_id.max()}]")
        self.n += np.bincount(sample_id, minlength=k)
        self.margin_sum += np.bincount(sample_id, weights=margin.astype(np.float64),
                                       minlength=k)
        order = np.lexsort((epoch, sample_id, training))
        s, t = sample_id[order], training[order]
        correct = pred[order] == self.label[s]
        same_run = (s[1:] == s[:-1]) & (t[1:] == t[:-1])
        forgot = same_run & correct[:-1] & ~correct[1:]
        self.forgetting += np.bincount(s[1:][forgot], minlength=k)

    def scores(self) -> pd.DataFrame:
        with np.errstate(invalid="ignore", divide="ignore"):
            aum = self.margin_sum / self.n
        return pd.DataFrame({"aum": aum, "forgetting": self.forgetting.copy(),
                             "epoch_evals": self.n.copy()})
