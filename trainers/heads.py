"""One training of the frozen-feature pass: a head (logistic regression, or one hidden layer)
on a backbone's embeddings of one half, predicting the other half. Seconds, not minutes: the
backbone ran once per image, before any head (the embedding pass)."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.hyp import Hyp
from trainers.train import HeldOut


def make_head(dim: int, num_classes: int, hidden: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(dim, num_classes)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes))


def train_head(hyp: Hyp, features: np.ndarray, labels: np.ndarray, train_idx: np.ndarray,
               eval_idx: np.ndarray, *, seed: int, num_classes: int | None = None,
               device: torch.device | str = "cpu") -> HeldOut:
    """Train a head on `features[train_idx]` (N x D, any float dtype, memory-mapped is fine)
    and predict `eval_idx`: the same `HeldOut` as a full training. The features are
    standardised with the training half's statistics. Without a hidden layer the head is a
    logistic regression fit to convergence (L-BFGS), else an MLP trained with AdamW."""
    t0 = time.perf_counter()
    device = torch.device(device)
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    c = int(num_classes if num_classes is not None else labels.max() + 1)
    x_tr = torch.from_numpy(np.asarray(features[np.sort(train_idx)], np.float32)).to(device)
    y_all = torch.from_numpy(np.asarray(labels, np.int64))
    y_tr = y_all[np.sort(train_idx)].to(device)
    mean, std = x_tr.mean(0), x_tr.std(0).clamp_min(1e-6)
    x_tr = (x_tr - mean) / std
    head = make_head(x_tr.shape[1], c, hyp.head_hidden).to(device)
    if hyp.head_hidden <= 0:
        _fit_logistic(head, x_tr, y_tr, l2=hyp.head_l2, smoothing=hyp.label_smoothing)
    else:
        _fit_mlp(head, x_tr, y_tr, hyp, gen)
    head.eval()
    probs = np.empty((len(eval_idx), c), np.float32)
    with torch.no_grad():
        for i in range(0, len(eval_idx), 8192):
            part = eval_idx[i:i + 8192]
            x = torch.from_numpy(np.asarray(features[part], np.float32)).to(device)
            probs[i:i + len(part)] = torch.softmax(head((x - mean) / std).float(), 1).cpu().numpy()
    given = np.asarray(labels)[eval_idx].astype(np.int64)
    loss = -np.log(np.clip(probs[np.arange(len(eval_idx)), given], 1e-12, None))
    # no training accuracy: a linear head on 1,280 features fits its half by design, and the
    # report's fit reading ("the models memorise, use more augmentation") would mislead
    return HeldOut(probs=probs, loss=loss.astype(np.float32),
                   pred=probs.argmax(1).astype(np.int16),
                   train_accuracy=float("nan"), seconds=time.perf_counter() - t0)


def _fit_logistic(head: nn.Linear, x: torch.Tensor, y: torch.Tensor, *, l2: float,
                  smoothing: float, iterations: int = 200) -> None:
    """Multinomial logistic regression to convergence (full-batch L-BFGS), sklearn's
    objective: mean loss + l2 / (2 n) |W|^2, so `l2` is sklearn's 1 / C. Deterministic: no
    learning rate or epochs to choose."""
    n = len(x)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=iterations,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(x), y, label_smoothing=smoothing) \
            + l2 / (2 * n) * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)


def _fit_mlp(head: nn.Module, x: torch.Tensor, y: torch.Tensor, hyp: Hyp,
             gen: torch.Generator) -> None:
    """A head with a hidden layer: AdamW in mini-batches, cosine from the peak to 0."""
    opt = torch.optim.AdamW(head.parameters(), lr=hyp.head_lr, weight_decay=hyp.head_decay)
    n, bs = len(x), min(hyp.head_batch, len(x))
    total = hyp.head_epochs * max(1, math.ceil(n / bs))
    step = 0
    head.train()
    for _ in range(hyp.head_epochs):
        order = torch.randperm(n, generator=gen).to(x.device)
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            for group in opt.param_groups:
                group["lr"] = hyp.head_lr * 0.5 * (1 + math.cos(math.pi * step / total))
            logits = head(x[idx])
            loss = F.cross_entropy(logits, y[idx], label_smoothing=hyp.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
