"""One training of the dupes pass: train on one half of a swap split, predict the other half.

The whole dataset lives on the device as uint8 and is converted per batch; augmentation runs
on the device too (airbench style), so a training never touches files or a DataLoader. The
training can report held-out metrics every epoch and hand out its state, so Ray Tune can
stop it early (ASHA) or restart it from another trial's state with new hyperparameters (PBT).
"""
from __future__ import annotations

import copy
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


@dataclass
class EpochInfo:
    """What `on_epoch` sees after each epoch."""

    epoch: int                     # epochs done, 1-based
    epochs: int
    train_loss: float
    train_accuracy: float
    heldout_loss: float | None     # None unless eval_every_epoch
    heldout_accuracy: float | None
    state: Callable[[], dict]      # the full training state, for a checkpoint


def lr_at(step: int, total: int, peak: float, warmup: float = 0.25) -> float:
    """One-cycle learning rate: linear from peak/25 up to peak over the first `warmup` of the
    steps, then linear down to 0. Stateless, so a resumed or perturbed training (PBT) only
    needs the step count and the new peak."""
    up = max(1, int(total * warmup))
    if step < up:
        return peak * (0.04 + 0.96 * step / up)
    return peak * max(0.0, (total - step) / max(1, total - up))


def _to_float(x_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x_u8.float() / 255.0 - mean) / std


def _predict(model, x_all, y_all, idx, mean, std, batch, amp) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    probs, losses = [], []
    with torch.no_grad(), torch.autocast(**amp):
        for i in range(0, len(idx), batch):
            b = idx[i:i + batch]
            logits = model(_to_float(x_all[b], mean, std)).float()
            probs.append(torch.softmax(logits, 1))
            losses.append(F.cross_entropy(logits, y_all[b], reduction="none"))
    return torch.cat(probs), torch.cat(losses)


def train(hyp: Hyp, images: np.ndarray | torch.Tensor, labels: np.ndarray,
          train_idx: np.ndarray, eval_idx: np.ndarray, *, seed: int,
          device: str | torch.device = "cpu",
          on_epoch: Callable[[EpochInfo], None] | None = None,
          eval_every_epoch: bool = False, resume: dict | None = None) -> HeldOut:
    """Train a fresh model on `images[train_idx]` and predict `images[eval_idx]`.

    `images` is uint8 N x H x W x C (numpy, or a tensor already on `device`); `labels` are the
    given labels. `on_epoch(EpochInfo)` is called after every epoch; with `eval_every_epoch`
    it carries the held-out loss and accuracy too. `resume` is a state from
    `EpochInfo.state()`: training goes on from there, with `hyp`'s (possibly new) values.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    rng = np.random.default_rng(seed)  # mixup weights

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
    total_steps = hyp.epochs * steps_per_epoch
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        for group, wd in zip(opt.param_groups, (hyp.weight_decay, 0.0)):
            group["weight_decay"] = wd  # a perturbed weight decay applies from now on
        gen.set_state(resume["gen"].to(gen.get_state().device))
        rng.bit_generator.state = resume["rng"]
        start = int(resume["epoch"])

    def state(epoch: int) -> dict:
        # a snapshot: state_dict() tensors share storage with the live parameters
        return copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(),
                              "epoch": epoch, "gen": gen.get_state(),
                              "rng": rng.bit_generator.state})

    correct = seen = 0
    for epoch in range(start, hyp.epochs):
        model.train()
        order = tr[torch.randperm(len(tr), device=device, generator=gen)]
        total, correct, seen = torch.zeros((), device=device), 0, 0
        for i in range(steps_per_epoch):
            idx = order[i * hyp.batch_size:(i + 1) * hyp.batch_size]
            if len(idx) < 2 and steps_per_epoch > 1:
                continue  # a 1-image batch breaks BatchNorm statistics
            for group in opt.param_groups:
                group["lr"] = lr_at(epoch * steps_per_epoch + i, total_steps, hyp.lr)
            x = _to_float(x_all[idx], mean, std)
            if hyp.flip:
                x = batch_flip(x, gen)
            x = batch_translate(x, min(hyp.translate, size - 1), gen)
            y = y_all[idx]
            lam, y2 = 1.0, y
            if hyp.mixup > 0:
                lam = float(rng.beta(hyp.mixup, hyp.mixup))
                perm = torch.randperm(len(idx), device=device, generator=gen)
                x, y2 = lam * x + (1 - lam) * x[perm], y[perm]
            with torch.autocast(**amp):
                out = model(x)
                logits = out.float()
                loss = lam * F.cross_entropy(logits, y, label_smoothing=hyp.label_smoothing)
                if lam < 1.0:
                    loss = loss + (1 - lam) * F.cross_entropy(
                        logits, y2, label_smoothing=hyp.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
            correct += int((out.argmax(1) == y).sum())
            seen += len(idx)
        if on_epoch is not None:
            h_loss = h_acc = None
            if eval_every_epoch:
                p, l = _predict(model, x_all, y_all, ev, mean, std, hyp.eval_batch_size, amp)
                h_loss = float(l.mean())
                h_acc = float((p.argmax(1) == y_all[ev]).float().mean())
            on_epoch(EpochInfo(epoch + 1, hyp.epochs, float(total) / max(seen, 1),
                               correct / max(seen, 1), h_loss, h_acc,
                               lambda e=epoch + 1: state(e)))

    probs, losses = _predict(model, x_all, y_all, ev, mean, std, hyp.eval_batch_size, amp)
    p = probs.cpu().numpy().astype(np.float32)
    return HeldOut(probs=p, loss=losses.cpu().numpy().astype(np.float32),
                   pred=p.argmax(1).astype(np.int16), train_accuracy=correct / max(seen, 1),
                   seconds=time.perf_counter() - t0)


__all__ = ["Hyp", "HeldOut", "EpochInfo", "train", "lr_at", "resolve_model"]
