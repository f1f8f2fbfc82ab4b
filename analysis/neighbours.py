"""The neighbour score: how many of an image's nearest neighbours in a backbone's embedding
space share its label (cleanlab Datalab's kNN label check, SimiFeat's idea). No training at
all: a second opinion beside the heads' votes, from the features alone.

The image itself and its exact duplicates (same file content, same sha1) are never its own
neighbours: a duplicate carries the same label by construction and would vouch for it.
Search is exact (cosine, blockwise matrix products) up to EXACT_MAX images, and through a
faiss inverted-file index above that when faiss is installed.
"""
from __future__ import annotations

import numpy as np

# Exact search costs N^2 x D: 50,000 images of 1,280 dims are 3.2e12 multiply-adds, about a
# minute on 2 CPU cores (BENCHMARKS.md "Neighbour score"); beyond it an approximate index
EXACT_MAX = 50_000
BLOCK = 2048  # query rows per matrix product: 2,048 x 50,000 float32 scores = 400 MB


def _normalise(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _groups(sha1: np.ndarray | None, n: int) -> np.ndarray:
    """A group id per row: rows with the same sha1 share one (exact duplicates)."""
    if sha1 is None:
        return np.arange(n)
    _, inverse = np.unique(np.asarray(sha1).astype(str), return_inverse=True)
    return inverse.astype(np.int64)


def nearest(features: np.ndarray, *, k: int, sha1: np.ndarray | None = None,
            exact_max: int = EXACT_MAX) -> np.ndarray:
    """Indices (N x k) of each row's k nearest rows by cosine similarity, never the row
    itself nor a row with its sha1. Exact up to `exact_max` rows, else faiss's IVF index
    (exact when faiss is missing)."""
    x = _normalise(features)
    n = len(x)
    group = _groups(sha1, n)
    dup = int(np.bincount(group).max()) if n else 1  # the most rows one content has
    want = min(n - 1, k + dup - 1)
    if want <= 0:
        return np.zeros((n, 0), np.int64)
    if n > exact_max:
        try:
            candidates = _faiss_search(x, want + 1)
        except ImportError:
            candidates = _exact_search(x, want + 1)
    else:
        candidates = _exact_search(x, want + 1)
    out = np.full((n, k), -1, np.int64)
    for i in range(n):  # drop self and duplicates, keep the k closest left
        row = candidates[i]
        row = row[(row >= 0) & (group[row] != group[i])][:k]
        out[i, :len(row)] = row
    return out


def _exact_search(x: np.ndarray, m: int) -> np.ndarray:
    out = np.empty((len(x), m), np.int64)
    for s in range(0, len(x), BLOCK):
        sim = x[s:s + BLOCK] @ x.T
        part = np.argpartition(-sim, m - 1, axis=1)[:, :m]
        order = np.argsort(-np.take_along_axis(sim, part, 1), axis=1, kind="stable")
        out[s:s + BLOCK] = np.take_along_axis(part, order, 1)
    return out


def _faiss_search(x: np.ndarray, m: int) -> np.ndarray:
    import faiss
    d = x.shape[1]
    lists = int(np.clip(4 * np.sqrt(len(x)), 64, 65536))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(x[rng.choice(len(x), min(len(x), 64 * lists), replace=False)])
    index.add(x)
    index.nprobe = 16
    _, found = index.search(x, m)
    return found.astype(np.int64)


def neighbour_agreement(features: np.ndarray, labels: np.ndarray, *, k: int = 10,
                        sha1: np.ndarray | None = None,
                        exact_max: int = EXACT_MAX) -> np.ndarray:
    """The share (0-1) of each image's `k` nearest neighbours that carry its label, the image
    itself and its exact duplicates (`sha1`) excluded; low = suspect. NaN for an image with
    no neighbour."""
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"features must be N x D with one row per label, got "
                         f"{features.shape} for {len(labels)} labels")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if sha1 is not None and len(sha1) != len(labels):
        raise ValueError(f"sha1 has {len(sha1)} rows for {len(labels)} labels")
    idx = nearest(features, k=k, sha1=sha1, exact_max=exact_max)
    valid = idx >= 0
    same = (labels[np.maximum(idx, 0)] == labels[:, None]) & valid
    count = valid.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, same.sum(1) / count, np.nan).astype(np.float32)
