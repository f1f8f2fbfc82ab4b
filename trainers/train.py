"""One training of the dupes pass: train on one half of a swap split, predict the other half.

The whole dataset lives on the device as uint8 and is converted per batch; augmentation runs
on the device too (airbench style), so a training never touches files or a DataLoader.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainers.augment import batch_flip, batch_translate
from trainers.hyp import Hyp
from trainers.models import make_model, resolve_model


@dataclass
class HeldOut:
    """Held-out predictions for `eval_idx`, plus what the training cost."""

    probs: np.ndarray      # float32, n_eval x C
    loss: np.ndarray       # float32, per-sample cross-entropy against the given label
    pred: np.ndarray       # int16
    train_accuracy: float  # on the (augmented) training half, last epoch
    seconds: float         # wall time of the training and the prediction


def _to_float(x_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x_u8.float() / 255.0 - mean) / std


def train(hyp: Hyp, images: np.ndarray | torch.Tensor, labels: np.ndarray,
          train_idx: np.ndarray, eval_idx: np.ndarray, *, seed: int,
          device: str | torch.device = "cpu",
          on_epoch: Callable[[int, float], None] | None = None) -> HeldOut:
    """Train a fresh model on `images[train_idx]` and predict `images[eval_idx]`.

    `images` is uint8 N x H x W x C (numpy, or a tensor already on `device`); `labels` are the
    given labels. `on_epoch(epoch, mean_train_loss)` is called after every epoch.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)

    x_all = images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
    x_all = x_all.to(device).permute(0, 3, 1, 2)  # NHWC uint8 -> NCHW view
    y_all = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)
    tr = torch.as_tensor(np.asarray(train_idx, dtype=np.int64), device=device)
    ev = torch.as_tensor(np.asarray(eval_idx, dtype=np.int64), device=device)
    n_classes = int(y_all.max().item()) + 1
    c, size = x_all.shape[1], x_all.shape[2]

    # Normalise with the training half's own statistics: the held-out half stays unseen.
    x_tr = x_all[tr].float() / 255.0
    mean = x_tr.mean(dim=(0, 2, 3), keepdim=True)
    std = x_tr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
    del x_tr

    model = make_model(hyp.model, in_channels=c, num_classes=n_classes, image_size=size,
                       width=hyp.width).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": hyp.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=hyp.lr, momentum=hyp.momentum, nesterov=True)
    steps_per_epoch = max(1, -(-len(tr) // hyp.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hyp.lr, pct_start=0.25,
                                                total_steps=hyp.epochs * steps_per_epoch)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    correct = seen = 0
    for epoch in range(hyp.epochs):
        model.train()
        order = tr[torch.randperm(len(tr), device=device, generator=gen)]
        total, correct, seen = torch.zeros((), device=device), 0, 0
        for i in range(steps_per_epoch):
            idx = order[i * hyp.batch_size:(i + 1) * hyp.batch_size]
            if len(idx) < 2 and steps_per_epoch > 1:
                continue  # a 1-image batch breaks BatchNorm statistics
            x = _to_float(x_all[idx], mean, std)
            if hyp.flip:
                x = batch_flip(x, gen)
            x = batch_translate(x, min(hyp.translate, size - 1), gen)
            y = y_all[idx]
            with torch.autocast(**amp):
                out = model(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=hyp.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * len(idx)
            correct += int((out.argmax(1) == y).sum())
            seen += len(idx)
        if on_epoch is not None:
            on_epoch(epoch, float(total) / max(seen, 1))

    model.eval()
    probs, losses = [], []
    with torch.no_grad(), torch.autocast(**amp):
        for i in range(0, len(ev), hyp.eval_batch_size):
            idx = ev[i:i + hyp.eval_batch_size]
            logits = model(_to_float(x_all[idx], mean, std)).float()
            probs.append(torch.softmax(logits, 1))
            losses.append(F.cross_entropy(logits, y_all[idx], reduction="none"))
    p = torch.cat(probs).cpu().numpy().astype(np.float32)
    return HeldOut(probs=p, loss=torch.cat(losses).cpu().numpy().astype(np.float32),
                   pred=p.argmax(1).astype(np.int16), train_accuracy=correct / max(seen, 1),
                   seconds=time.perf_counter() - t0)


__all__ = ["Hyp", "HeldOut", "train", "resolve_model"]
