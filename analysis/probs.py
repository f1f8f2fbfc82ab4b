"""Probability vectors of the held-out predictions: the `probs` column as an array, and the
per-sample mean of those vectors (what cleanlab-style scores and the dupe ratio take).

One implementation serves the whole table in memory and the streamed read of a run, batch by
batch, so the two can never disagree.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def probs_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list `probs` column as an n x C float32 array (no Python loop)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = arr.type.list_size if pa.types.is_fixed_size_list(arr.type) else None
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    if width is None:
        width = len(flat) // max(len(arr), 1)
    return flat.reshape(len(arr), width).astype(np.float32, copy=False)


class ProbSums:
    """Running per-sample sums of probability vectors; `mean()` divides by the counts.

    Memory is samples x classes, whatever the number of rows added; the array grows to the
    largest sample id seen, so the sample count need not be known in advance.
    """

    def __init__(self, num_samples: int = 0):
        self.sums: np.ndarray | None = None
        self.counts = np.zeros(0, np.int64)
        self.stamp = np.zeros(0, np.int64)
        self.rows = 0
        self.num_samples = num_samples

    def _grow(self, size: int, width: int) -> None:
        sums = np.zeros((size, width), np.float32)
        counts, stamp = np.zeros(size, np.int64), np.full(size, -1, np.int64)
        if self.sums is not None:
            n = len(self.sums)
            sums[:n], counts[:n], stamp[:n] = self.sums, self.counts, self.stamp
        self.sums, self.counts, self.stamp = sums, counts, stamp

    def add(self, sample_id: np.ndarray, probs: np.ndarray) -> None:
        sid = np.asarray(sample_id, np.int64)
        if not len(sid):
            return
        need = max(int(sid.max()) + 1, self.num_samples)
        if self.sums is None or need > len(self.sums):
            self._grow(max(need, 2 * (0 if self.sums is None else len(self.sums))),
                       probs.shape[1])
        # `+=` by index drops repeated indices; a batch of one training's rows has every
        # sample once. The stamp check proves that in O(rows), else np.add.at does it slowly.
        pos = np.arange(self.rows, self.rows + len(sid))
        self.stamp[sid] = pos
        if np.array_equal(self.stamp[sid], pos):
            self.sums[sid] += probs
            self.counts[sid] += 1
        else:
            np.add.at(self.sums, sid, probs)
            np.add.at(self.counts, sid, 1)
        self.rows += len(sid)

    def mean(self, num_samples: int | None = None) -> np.ndarray:
        """samples x classes; NaN rows for samples never predicted."""
        n = num_samples if num_samples is not None else max(
            self.num_samples, int(np.flatnonzero(self.counts).max(initial=-1)) + 1)
        if self.sums is None:
            return np.zeros((n, 0), np.float32)
        if n > len(self.sums):
            self._grow(n, self.sums.shape[1])
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums[:n] / self.counts[:n, None].astype(np.float32)


def mean_probs_of(table: pa.Table, *, num_samples: int) -> np.ndarray:
    """Per sample, the mean of its held-out probability vectors (NaN rows if never predicted)."""
    sums = ProbSums(num_samples)
    sums.add(table["sample_id"].to_numpy(), probs_matrix(table["probs"]))
    return sums.mean(num_samples)
