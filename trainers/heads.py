"""One training of the frozen-feature pass: a head (logistic regression, or one hidden layer)
on a backbone's embeddings of one half, predicting the other half. Seconds, not minutes: the
backbone ran once per image, before any head (the embedding pass)."""
from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from analysis.confident import confident_thresholds, confidently_wrong
from trainers.hyp import Hyp
from trainers.train import HeldOut

# rows a streamed head holds at a time: 16k x 3,864 float32 = 250 MB for the default features
# (read as float16, then standardised: ~3x that at the peak), still a large matmul per chunk
CHUNK_ROWS = 1 << 14


def make_head(dim: int, num_classes: int, hidden: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(dim, num_classes)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes))


# a class keeps at least half of its training images through the prune, and one of fewer
# images than this loses none: a rare class's few images are what a quarter's head predicts
# worst, and a head that never saw a class flags every image of it
PRUNE_MIN_CLASS = 4


def train_head(hyp: Hyp, features, labels: np.ndarray, train_idx: np.ndarray,
               eval_idx: np.ndarray, *, seed: int, num_classes: int | None = None,
               device: torch.device | str = "cpu", streamed: bool = False,
               chunk_rows: int = CHUNK_ROWS) -> HeldOut:
    """Train a head on `features[train_idx]` (N x D, any float dtype: an array, a
    memory-mapped one, or `ShardedFeatures`) and predict `eval_idx`: the same `HeldOut` as a
    full training. The features are standardised with the training half's statistics.
    Without a hidden layer the head is a logistic regression fit to convergence (L-BFGS),
    else an MLP trained with AdamW.

    With `hyp.head_prune` the training half is cleaned first (`prune_mask`): the head is
    fit without the images a cross-fit on the half flags, and `left_out` says how many.

    Resident (the default), the training half is held on `device` as float32. `streamed`
    holds `chunk_rows` rows at a time instead, read again from `features` for every pass of
    the optimiser: memory stays flat in the dataset's size (a half of 5M images of the
    default 3,864 features would be 77 GB resident), the same objective at the cost of the
    reads."""
    t0 = time.perf_counter()
    c = int(num_classes if num_classes is not None else labels.max() + 1)
    train_idx = np.sort(np.asarray(train_idx, np.int64))
    left_out = None
    if hyp.head_prune:
        drop = prune_mask(hyp, features, labels, train_idx, seed=seed, num_classes=c,
                          device=device, streamed=streamed, chunk_rows=chunk_rows)
        train_idx, left_out = train_idx[~drop], int(drop.sum())
    out = _fit_predict(hyp, features, labels, train_idx, eval_idx, seed=seed, num_classes=c,
                       device=device, streamed=streamed, chunk_rows=chunk_rows)
    out.seconds, out.left_out = time.perf_counter() - t0, left_out
    return out


def prune_mask(hyp: Hyp, features, labels: np.ndarray, train_idx: np.ndarray, *, seed: int,
               num_classes: int, device: torch.device | str = "cpu", streamed: bool = False,
               chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Which of `train_idx` to leave out of a head (a bool mask in its order): the half is
    split in two by class, a head on each part predicts the other, and confident learning
    flags the images another class claims and predicts in those out-of-sample predictions
    (`analysis.confident.confidently_wrong`, the analysis's count). Within a class the least
    confident of its flagged go first, at most half of the class, none of a class under
    PRUNE_MIN_CLASS images."""
    y = np.asarray(labels, np.int64)[train_idx]
    rng = np.random.default_rng([int(seed), 0x9E3])
    part = np.zeros(len(train_idx), bool)
    for k in np.unique(y):  # by class: each part sees every class the half has
        rows = rng.permutation(np.flatnonzero(y == k))
        part[rows[: len(rows) // 2]] = True
    probs = np.zeros((len(train_idx), num_classes), np.float32)
    plain = replace(hyp, head_prune=False)
    for fit, held in ((part, ~part), (~part, part)):
        if fit.any() and held.any():
            probs[held] = _fit_predict(plain, features, labels, train_idx[fit], train_idx[held],
                                       seed=seed, num_classes=num_classes, device=device,
                                       streamed=streamed, chunk_rows=chunk_rows).probs
    self_conf = probs[np.arange(len(y)), y]
    flagged = confidently_wrong(y, probs, confident_thresholds(y, probs, num_classes))
    drop = np.zeros(len(y), bool)
    for k in np.unique(y):
        members = np.flatnonzero(y == k)
        if len(members) < PRUNE_MIN_CLASS:
            continue
        cand = members[flagged[members]]
        cand = cand[np.argsort(self_conf[cand], kind="stable")][: len(members) // 2]
        drop[cand] = True
    return drop


def _fit_predict(hyp: Hyp, features, labels: np.ndarray, train_idx: np.ndarray,
                 eval_idx: np.ndarray, *, seed: int, num_classes: int,
                 device: torch.device | str, streamed: bool, chunk_rows: int) -> HeldOut:
    """One head on `train_idx` (sorted), its predictions of `eval_idx`."""
    t0 = time.perf_counter()
    device = torch.device(device)
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    c = num_classes
    eval_idx = np.asarray(eval_idx, np.int64)
    y_tr = torch.from_numpy(np.asarray(labels, np.int64)[train_idx]).to(device)
    if streamed:
        mean, std = _stream_stats(features, train_idx, chunk_rows, device)
        x_tr = None
    else:
        x_tr = torch.from_numpy(rows_of(features, train_idx)).to(device)
        mean, std = x_tr.mean(0), x_tr.std(0).clamp_min(1e-6)
        x_tr.sub_(mean).div_(std)  # in place: a second copy of the half was 2x its memory

    def read(idx: np.ndarray) -> torch.Tensor:  # rows idx of `features`, standardised
        return (torch.from_numpy(rows_of(features, idx)).to(device) - mean) / std

    def chunk(lo: int, hi: int) -> torch.Tensor:  # standardised training rows lo:hi
        return x_tr[lo:hi] if x_tr is not None else read(train_idx[lo:hi])

    head = make_head(len(mean), c, hyp.head_hidden).to(device)
    step = len(train_idx) if x_tr is not None else chunk_rows
    if hyp.head_hidden <= 0:
        _fit_logistic(head, chunk, y_tr, step=step, l2=hyp.head_l2,
                      smoothing=hyp.label_smoothing)
    else:
        def rows(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:  # a streamed batch
            idx = np.sort(idx)  # sequential reads; the batch's order does not matter
            return read(train_idx[idx]), y_tr[torch.from_numpy(idx).to(device)]

        _fit_mlp(head, x_tr, y_tr, hyp, gen, rows=rows)
    head.eval()
    probs = np.empty((len(eval_idx), c), np.float32)
    with torch.no_grad():
        pred_rows = min(8192, chunk_rows)
        for i in range(0, len(eval_idx), pred_rows):
            part = eval_idx[i:i + pred_rows]
            probs[i:i + len(part)] = torch.softmax(head(read(part)).float(), 1).cpu().numpy()
    given = np.asarray(labels)[eval_idx].astype(np.int64)
    loss = -np.log(np.clip(probs[np.arange(len(eval_idx)), given], 1e-12, None))
    # no training accuracy: a linear head on 1,280 features fits its half by design, and the
    # report's fit reading ("the models memorise, use more augmentation") would mislead
    return HeldOut(probs=probs, loss=loss.astype(np.float32),
                   pred=probs.argmax(1).astype(np.int16),
                   train_accuracy=float("nan"), seconds=time.perf_counter() - t0)


def rows_of(features, idx: np.ndarray) -> np.ndarray:
    """Rows `idx` of `features` as float32: `ShardedFeatures` gather by shard, arrays (and
    memory maps) index."""
    got = features.gather(idx) if hasattr(features, "gather") else features[idx]
    return np.asarray(got, np.float32)


def _stream_stats(features, idx: np.ndarray, chunk_rows: int, device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and (unbiased) standard deviation of rows `idx`, a chunk at a time, summed in
    float64 (a float32 sum of squares over millions of rows loses digits; float64 chunks are
    twice the float32 ones, so they are cut to 8,192 rows)."""
    total = sq = None
    step = min(chunk_rows, 8192)
    for lo in range(0, len(idx), step):
        part = rows_of(features, idx[lo:lo + step]).astype(np.float64)
        total = part.sum(0) if total is None else total + part.sum(0)
        sq = (part * part).sum(0) if sq is None else sq + (part * part).sum(0)
    n = len(idx)
    mean = total / n
    var = np.maximum(sq - n * mean * mean, 0.0) / max(1, n - 1)
    return (torch.from_numpy(mean.astype(np.float32)).to(device),
            torch.from_numpy(np.sqrt(var).astype(np.float32)).to(device).clamp_min(1e-6))


def _fit_logistic(head: nn.Linear, chunk, y: torch.Tensor, *, step: int, l2: float,
                  smoothing: float, iterations: int = 200) -> None:
    """Multinomial logistic regression to convergence (full-batch L-BFGS), sklearn's
    objective: mean loss + l2 / (2 n) |W|^2, so `l2` is sklearn's 1 / C. Deterministic: no
    learning rate or epochs to choose. The full batch is summed `step` rows at a time
    (`chunk(lo, hi)` gives them): one step when the half is resident."""
    n = len(y)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=iterations,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        total = head.weight.new_zeros(())
        for lo in range(0, n, step):
            part = F.cross_entropy(head(chunk(lo, lo + step)), y[lo:lo + step],
                                   label_smoothing=smoothing, reduction="sum") / n
            part.backward()
            total += part.detach()
        reg = l2 / (2 * n) * head.weight.pow(2).sum()
        reg.backward()
        return total + reg.detach()

    opt.step(closure)


def _fit_mlp(head: nn.Module, x: torch.Tensor | None, y: torch.Tensor, hyp: Hyp,
             gen: torch.Generator, *, rows) -> None:
    """A head with a hidden layer: AdamW in mini-batches, cosine from the peak to 0. `x` is
    the resident half, or None: `rows(idx)` then reads a mini-batch's (x, y)."""
    opt = torch.optim.AdamW(head.parameters(), lr=hyp.head_lr, weight_decay=hyp.head_decay)
    n, bs = len(y), min(hyp.head_batch, len(y))
    total = hyp.head_epochs * max(1, math.ceil(n / bs))
    step = 0
    head.train()
    for _ in range(hyp.head_epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            for group in opt.param_groups:
                group["lr"] = hyp.head_lr * 0.5 * (1 + math.cos(math.pi * step / total))
            xb, yb = (x[idx.to(x.device)], y[idx.to(y.device)]) if x is not None \
                else rows(idx.numpy())
            loss = F.cross_entropy(head(xb), yb, label_smoothing=hyp.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
