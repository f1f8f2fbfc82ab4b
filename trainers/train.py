"""One training of the dupes pass: train on one half of a swap split, predict the other half.

The images come from a `Feed` (trainers/data.py): the whole dataset resident on the device as
uint8, or streamed from the image cache's shards a window at a time; either way batches are
converted and augmented on the device (airbench style), and a training never touches a
DataLoader. The
training can report held-out metrics every epoch and hand out its state, so Ray Tune can
stop it early (ASHA) or restart it from another trial's state with new hyperparameters (PBT).
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainers.augment import batch_flip, batch_resized_crop, batch_translate, shift
from trainers.data import ResidentFeed, ShardedImages, StreamFeed, make_feed
from trainers.backbones import LITE0, SPECS, spec_of
from trainers.hyp import Hyp, is_timm
from trainers.models import (IMAGENET_MEAN, IMAGENET_STD, SMALL_IMAGE_MAX, head_parameters,
                             make_model, resolve_model)


@dataclass
class HeldOut:
    """Held-out predictions for `eval_idx`, plus what the training cost."""

    probs: np.ndarray      # float32, n_eval x C
    loss: np.ndarray       # float32, per-sample cross-entropy against the given label
    pred: np.ndarray       # int16
    train_accuracy: float  # on the (augmented) training half, last epoch
    seconds: float         # wall time of the training and the prediction
    epochs: "EpochRecord | None" = None  # with record_epochs: held-out metrics per epoch
    left_out: int | None = None  # a pruned head: training images it was fit without


@dataclass
class EpochRecord:
    """Held-out metrics of the recorded epochs (rows) for every held-out image (columns): the
    raw material of training-dynamics scores. The last row is the final, reported prediction."""

    loss: np.ndarray       # float32, E x n: cross-entropy against the given label
    margin: np.ndarray     # float32, E x n: p(given) - max p(other), in [-1, 1]
    pred: np.ndarray       # int16, E x n
    epoch: np.ndarray      # the 1-based epoch of each row


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
    heldout_losses: np.ndarray | None = None  # per held-out image (eval_idx order), if measured


def lr_at(step: int, total: int, peak: float, warmup: float = 0.25) -> float:
    """One-cycle learning rate: linear from peak/25 up to peak over the first `warmup` of the
    steps, then linear down to 0. Stateless, so a resumed or perturbed training (PBT) only
    needs the step count and the new peak."""
    up = max(1, int(total * warmup))
    if step < up:
        return peak * (0.04 + 0.96 * step / up)
    return peak * max(0.0, (total - step) / max(1, total - up))


def as_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 images as a tensor on `device`, without copying a read-only array first: the
    object store and a memory-mapped cache hand those out, and a training only reads them."""
    if torch.is_tensor(images):
        return images.to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable tensor": never written
        return torch.from_numpy(np.ascontiguousarray(images)).to(device)


def bf16_autocast(device: torch.device) -> bool:
    """bf16 autocast on GPUs, and on CPUs with native bf16 (AVX512-BF16): 1.1-2.0x the
    training images/s of the small CNN on one thread, equal held-out accuracy on MNIST
    (benchmarks/cpu_kernels.py). Without native support bf16 is emulated and slower, so fp32
    stays."""
    if device.type == "cuda":
        return True
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private; may go away
    return device.type == "cpu" and bool(native and native())


# the whitening layer's patch covariance is taken over this many pixels of the training half
# (at most: 2,551 images of 28 px, 488 of 64 px): its 4 or 12 dimensions settle long before
WHITEN_PIXELS = 2_000_000
CPU_EVAL_BATCH = 128  # held-out batches on a CPU: larger ones fall out of its caches


def _to_float(x_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x_u8.float() / 255.0 - mean) / std


def _predict(model, feed, y_all, idx, mean, std, batch, amp, *, tta: bool = False,
             tta_shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and cross-entropy against the given labels, in `idx` order. With
    `tta` the probabilities are the mean over the image and its mirror, with `tta_shift` also
    over the image moved that many px up-left and down-right; the loss is taken from that
    mean, so loss and probabilities always agree."""
    model.eval()
    if feed.device.type != "cuda":  # measured on 1 CPU thread: 5,000 images/s in batches
        batch = min(batch, CPU_EVAL_BATCH)  # of 128 at 28 px, 2,400 in batches of 1,024
    parts = []
    with torch.no_grad(), torch.autocast(**amp):
        for pos, xb in feed.ordered(idx, batch):
            x = _to_float(xb, mean, std)
            views = [x] + ([x.flip(3)] if tta else [])
            if tta_shift > 0:
                views += [shift(x, -tta_shift, -tta_shift), shift(x, tta_shift, tta_shift)]
            p = sum(torch.softmax(model(v).float(), 1) for v in views) / len(views)
            y = y_all[idx[pos]]
            parts.append((pos, p, -torch.log(p.gather(1, y[:, None]).squeeze(1).clamp_min(1e-12))))
    pos = torch.cat([q for q, _, _ in parts])
    probs = torch.empty((len(idx), parts[0][1].shape[1]), device=pos.device)
    losses = torch.empty(len(idx), device=pos.device)
    probs[pos] = torch.cat([p for _, p, _ in parts])
    losses[pos] = torch.cat([l for _, _, l in parts])
    return probs, losses


def _margin(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """p(given) - the largest other probability: negative when another class wins."""
    given = probs.gather(1, y[:, None]).squeeze(1)
    other = probs.scatter(1, y[:, None], -1.0).max(1).values
    return given - other


def train_size(epoch: int, epochs: int, size: int, progressive: float) -> int:
    """Progressive resizing: from `progressive` x size up to full size at 75% of training."""
    if progressive <= 0 or progressive >= 1:
        return size
    frac = progressive + (1 - progressive) * min(1.0, epoch / max(1.0, 0.75 * epochs))
    return max(8, min(size, int(round(size * frac / 4)) * 4))


def train(hyp: Hyp, images: np.ndarray | torch.Tensor | ShardedImages | ResidentFeed | StreamFeed,
          labels: np.ndarray, train_idx: np.ndarray, eval_idx: np.ndarray, *, seed: int,
          device: str | torch.device = "cpu",
          on_epoch: Callable[[EpochInfo], None] | None = None,
          eval_every_epoch: bool = False, record_every: int = 0,
          resume: dict | None = None) -> HeldOut:
    """Train a fresh model on `images[train_idx]` and predict `images[eval_idx]`.

    `images` is uint8 N x H x W x C (numpy, a tensor already on `device`, or the sharded
    cache, made resident here), or a feed made once by `make_feed` (a worker that trains many
    times keeps the cache on the device, or streams it); `labels` are the given labels.
    `on_epoch(EpochInfo)` is called after every epoch; with `eval_every_epoch` it carries the
    held-out loss and accuracy too. `resume` is a state from `EpochInfo.state()`: training
    goes on from there, with `hyp`'s (possibly new) values.
    With `record_every` k > 0 the held-out half is predicted after every k-th epoch and the
    last (without TTA, which would double the cost) and `HeldOut.epochs` holds the per-image
    loss, margin and class; each recorded epoch costs about a third of a training epoch.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    rng = np.random.default_rng(seed)  # mixup weights

    feed = images if isinstance(images, (ResidentFeed, StreamFeed)) else \
        make_feed(images, device)
    y_all = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)
    tr = torch.as_tensor(np.asarray(train_idx, dtype=np.int64), device=device)
    ev = torch.as_tensor(np.asarray(eval_idx, dtype=np.int64), device=device)
    n_classes = int(y_all.max().item()) + 1
    c, size = feed.shape[0], feed.shape[1]

    arch = resolve_model(hyp.model, size)
    transfer = arch != "smallcnn" and (hyp.pretrained or bool(hyp.weights)
                                       or arch == LITE0)
    if transfer:  # a pretrained backbone expects the statistics it was trained with
        stats = spec_of(arch) if arch in SPECS or is_timm(arch) else None
        mean = torch.tensor(stats.mean if stats else IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(stats.std if stats else IMAGENET_STD, device=device).view(1, 3, 1, 1)
        if c == 1:
            mean, std = mean.mean(1, keepdim=True), std.mean(1, keepdim=True)
    else:  # the training half's own statistics: the held-out half stays unseen
        mean, std = feed.stats(tr)

    net = make_model(arch, in_channels=c, num_classes=n_classes, image_size=size,
                     width=hyp.width, pretrained=hyp.pretrained, weights=hyp.weights,
                     stem_pool=hyp.stem_pool, whiten=hyp.whiten).to(device)
    if getattr(net, "whiten", None) is not None:  # frozen before the optimizer sees it
        n_white = max(8, WHITEN_PIXELS // (size * size))
        pick = tr[torch.randperm(len(tr), device=device, generator=gen)[:n_white]].sort().values
        net.init_whitening(torch.cat([_to_float(xb, mean, std)
                                      for _, xb in feed.ordered(pick, 1024)]))
    # channels-last convolutions: 1.2-1.3x the training images/s of the small CNN on one CPU
    # thread for colour images (benchmarks/cpu_kernels.py), and GPUs' fast path
    net = net.to(memory_format=torch.channels_last)
    head = {id(p) for p in head_parameters(net)} if transfer else set()
    groups = []
    for in_head in (True, False):
        scale = 1.0 if (in_head or not transfer) else hyp.backbone_lr
        params = [p for p in net.parameters() if (id(p) in head) == in_head and p.requires_grad]
        for decayed in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decayed]
            if chosen:
                groups.append({"params": chosen, "lr_scale": scale,
                               "weight_decay": hyp.weight_decay if decayed else 0.0})
    opt = torch.optim.SGD(groups, lr=hyp.lr, momentum=hyp.momentum, nesterov=True)
    model = torch.compile(net) if hyp.compile else net
    crop = hyp.crop_scale if size > SMALL_IMAGE_MAX else 0.0
    tta = hyp.tta_mirror()
    steps_per_epoch = max(1, -(-len(tr) // hyp.batch_size))
    total_steps = hyp.epochs * steps_per_epoch
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=bf16_autocast(device))

    start = 0
    if resume is not None:
        net.load_state_dict(resume["model"])
        built = [g["weight_decay"] for g in opt.param_groups]
        opt.load_state_dict(resume["opt"])
        for group, wd in zip(opt.param_groups, built):  # a perturbed weight decay applies now
            group["weight_decay"] = wd
        gen.set_state(resume["gen"].to(gen.get_state().device))
        rng.bit_generator.state = resume["rng"]
        start = int(resume["epoch"])

    def state(epoch: int) -> dict:
        # a snapshot: state_dict() tensors share storage with the live parameters
        return copy.deepcopy({"model": net.state_dict(), "opt": opt.state_dict(),
                              "epoch": epoch, "gen": gen.get_state(),
                              "rng": rng.bit_generator.state})

    rec: dict[str, list] = {"loss": [], "margin": [], "pred": [], "epoch": []}
    y_ev = y_all[ev]
    correct = seen = 0
    for epoch in range(start, hyp.epochs):
        model.train()
        s_epoch = train_size(epoch, hyp.epochs, size, hyp.progressive)
        total, correct, seen = torch.zeros((), device=device), 0, 0
        for i, (idx, xb) in enumerate(feed.epoch(tr, hyp.batch_size, gen)):
            lr = lr_at(epoch * steps_per_epoch + i, total_steps, hyp.lr)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"]
            x = _to_float(xb, mean, std)
            if hyp.flip:
                x = batch_flip(x, gen)
            if crop > 0:
                x = batch_resized_crop(x, crop, gen)
            else:
                x = batch_translate(x, min(hyp.translate, size - 1), gen)
            if s_epoch != size:
                x = F.interpolate(x, size=(s_epoch, s_epoch), mode="bilinear",
                                  align_corners=False, antialias=True)
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
        last = epoch == hyp.epochs - 1
        record = record_every > 0 and (epoch + 1) % record_every == 0 and not last
        h_loss = h_acc = h_losses = None
        if eval_every_epoch or record:
            # the last epoch's row is the final prediction below: no second pass for it
            p, l = _predict(model, feed, y_all, ev, mean, std, hyp.eval_batch_size, amp,
                            tta=tta and eval_every_epoch)
            h_loss, h_acc = float(l.mean()), float((p.argmax(1) == y_ev).float().mean())
            h_losses = l.cpu().numpy()
            if record:
                _record(rec, p, l, y_ev)
                rec["epoch"].append(epoch + 1)
        if on_epoch is not None:
            on_epoch(EpochInfo(epoch + 1, hyp.epochs, float(total) / max(seen, 1),
                               correct / max(seen, 1), h_loss, h_acc,
                               lambda e=epoch + 1: state(e), h_losses))

    probs, losses = _predict(model, feed, y_all, ev, mean, std, hyp.eval_batch_size, amp,
                             tta=tta, tta_shift=min(hyp.tta_shift, size - 1))
    epochs = None
    if record_every > 0:
        _record(rec, probs, losses, y_ev)
        rec["epoch"].append(hyp.epochs)
        epochs = EpochRecord(**{k: np.stack(v) for k, v in rec.items()})
    p = probs.cpu().numpy().astype(np.float32)
    return HeldOut(probs=p, loss=losses.cpu().numpy().astype(np.float32),
                   pred=p.argmax(1).astype(np.int16), train_accuracy=correct / max(seen, 1),
                   seconds=time.perf_counter() - t0, epochs=epochs)


def _record(rec: dict, probs: torch.Tensor, losses: torch.Tensor, y: torch.Tensor) -> None:
    rec["loss"].append(losses.float().cpu().numpy().astype(np.float32))
    rec["margin"].append(_margin(probs.float(), y).cpu().numpy().astype(np.float32))
    rec["pred"].append(probs.argmax(1).cpu().numpy().astype(np.int16))


__all__ = ["Hyp", "HeldOut", "EpochInfo", "EpochRecord", "train", "lr_at", "resolve_model"]
