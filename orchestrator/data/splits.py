"""Swap splits: every class cut 50:50, once per repeat.

Fold 0 of a class gets the extra image when the class count is odd (as side A did in the
original method). Training (repeat r, fold f) trains on the other fold and predicts fold f,
so every image is held out exactly once per repeat.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SPLIT_MODES = ("fresh", "fixed")


def split_seed(seed: int, repeat: int) -> np.random.SeedSequence:
    """The split randomness of one repeat: derived from (seed, repeat), independent of training."""
    return np.random.SeedSequence([int(seed), int(repeat), 0x5EED])


def make_splits(labels: np.ndarray, *, repeats: int = 10, seed: int = 0,
                mode: str = "fresh") -> pd.DataFrame:
    """Assign every sample a fold (0 or 1) in every repeat.

    Parameters
    ----------
    labels : 1-D int array, the class of sample `i` at position `i`.
    repeats : number of repeats R; there are 2R trainings.
    seed : the split seed; repeat r shuffles with a seed derived from `(seed, r)`.
    mode : "fresh" (a new split per repeat) or "fixed" (repeat 0's split every time, as in
        the original method, where only training randomness differs between repeats).

    Returns
    -------
    DataFrame `sample_id:int64, repeat:int16, fold:int8`, R rows per sample.
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"invalid split mode {mode!r}: valid choices are {SPLIT_MODES}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    labels = np.asarray(labels)
    counts = np.bincount(labels) if len(labels) else np.array([], dtype=int)
    small = [int(c) for c in np.flatnonzero((counts > 0) & (counts < 2))]
    if small:
        raise ValueError(f"classes {small} have fewer than 2 samples and cannot be split 50:50")
    n = len(labels)
    folds = np.empty((repeats, n), dtype=np.int8)
    for r in range(repeats):
        if mode == "fixed" and r > 0:
            folds[r] = folds[0]
            continue
        rng = np.random.default_rng(split_seed(seed, r))
        folds[r] = _split_once(labels, rng)
    return pd.DataFrame({
        "sample_id": np.tile(np.arange(n, dtype=np.int64), repeats),
        "repeat": np.repeat(np.arange(repeats, dtype=np.int16), n),
        "fold": folds.reshape(-1),
    })


def _split_once(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    fold = np.empty(len(labels), dtype=np.int8)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        half = (len(idx) + 1) // 2  # fold 0 gets the extra image of an odd class
        fold[idx[:half]] = 0
        fold[idx[half:]] = 1
    return fold
