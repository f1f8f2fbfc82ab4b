"""The plan of a pass, shown before any training: what each training will be (the model that
`auto` resolved to, size, epochs, batch, augmentation), how many run at once, and how long the
whole pass will take, from a short training measured where the trainings run (the probe,
a Ray task with one training's resources: `passes.make_pass_plan`). With a
`--budget`, the epochs are chosen here to fit it, or the pass stops before spending it.

The estimate: every training trains E epochs on its half (N/2 images) and predicts the other
half once, plus once per recorded epoch (`--epoch-losses`); the trainings run in waves of
`slots` at a time; and a fixed cost is added for Ray Train's launch and the analysis.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from analysis.report import format_duration
from trainers.hyp import Hyp

# What a pass costs besides its trainings' compute: Ray Train's launch (9-10 s measured,
# BENCHMARKS.md) and teardown, each training's hand-out and Ray Data write, the analysis, the
# HTML report and contact sheets. And trainings side by side take longer than the probe's
# training alone: they share the node's caches and memory bandwidth with each other and with
# the driver. In benchmarks/plan_estimate.py (14 passes on two machines, an AMD EPYC and an
# Intel Xeon, 2 cores each) what followed the plan was fit by about 1.1 x the probe's time
# per training plus 22 s: errors -19% to +10%, where one constant of 30 s gave -23% to +31%
# (the digits on the faster machine: 44 s estimated, 34 s actual); 4 passes run with it
# after: +8%, +5%, +1%, -6% (`plan_estimate.py --fit` refits and re-scores them all).
FIXED_S = 22.0
SIDE_BY_SIDE = 1.1  # a training's time when others run beside it, relative to the probe's
MIN_EPOCHS, MAX_EPOCHS = 2, 60  # what --budget may choose


class BudgetError(ValueError):
    """A --budget that no setting can meet; the message says what would."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from `90s`, `10m`, `2h`, `1h30m` or a plain number of seconds."""
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", t)
        if not parts or "".join(n + u for n, u in parts) != t:
            raise ValueError(f"not a duration: {text!r}; write e.g. 90s, 10m, 2h or 1h30m")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be > 0, got {text!r}")
    return seconds


@dataclass(frozen=True)
class Probe:
    """One slot's speed, measured: a short training with the pass's settings and threads; and,
    when the flips are left to the data, whether mirroring keeps the labels."""

    train_rate: float     # training images per second (one training)
    predict_rate: float   # held-out images per second (with TTA when the pass uses it)
    seconds: float        # what the probe cost
    images: int           # training images it used
    mirror: dict | None = None  # trainers.sanity.Mirror as a dict, when measured


def probe_images(image_size: int) -> int:
    """Training images of the probe: enough for a second of work on small images, few on
    large ones (a ResNet on a CPU trains tens of 128-px images a second); never more with N."""
    return 1024 if image_size <= 32 else 512 if image_size <= 64 else 128


def probe(images, labels: np.ndarray, hyp: Hyp, *, threads: int, device: str = "cpu",
          seed: int = 0, mirror: bool = False) -> Probe:
    """Train 3 epochs on half of `images` (a sample: twice `probe_images`) and predict the
    other half, with `threads` torch threads (what one training gets); epochs 2 and 3 are
    timed (the first pays for warm-up). With `mirror`, `trainers.sanity.mirror_check` runs
    too, on the same sample."""
    import torch

    from trainers.sanity import mirror_check
    from trainers.train import train

    labels = np.asarray(labels)
    pick = np.random.default_rng(seed).permutation(len(labels))
    half = max(1, len(pick) // 2)
    tr, ev = np.sort(pick[:half]), np.sort(pick[half:] if len(pick) > half else pick[:half])
    marks: list[float] = []
    h = replace(hyp, epochs=3, progressive=0.0, tta=False, tta_shift=0)  # one view a rate
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        t0 = time.perf_counter()
        train(h, images, labels, tr, ev, seed=seed, device=device,
              on_epoch=lambda info: marks.append(time.perf_counter()))
        end = time.perf_counter()
        mirrored = asdict(mirror_check(images, labels, seed=seed, device=device)) \
            if mirror else None
    finally:
        torch.set_num_threads(old)
    epoch_s = max((marks[2] - marks[0]) / 2, 1e-6)
    predict_s = max(end - marks[2], 1e-6)
    return Probe(train_rate=len(tr) / epoch_s, predict_rate=len(ev) / predict_s,
                 seconds=time.perf_counter() - t0, images=len(tr), mirror=mirrored)


# The small CNN's defaults on CPUs, chosen from single trainings on MNIST's 10k test images
# (5,000 trained, 5,000 predicted, 1 thread; BENCHMARKS.md "Defaults sized to the data"):
# width 16 is as accurate as 24 or 32 at half their time or less; lr 0.2 (0.05 before) and
# label smoothing 0.1 buy +0.5 pt at equal time; progressive resizing from half size is
# 1.8x faster for -0.2 pt. Accuracy stops rising at about 60k training images seen (12
# epochs of 5,000), so the epochs follow the size of the training half. Shifts of 1 px
# against 2 (3 seeds each): MNIST 0.984 / 0.985, Fashion-MNIST 0.861 / 0.854, CIFAR-10
# 0.624 / 0.623 (1 seed); predicting also the image moved 1 px two ways (tta_shift) adds
# 0.04-0.6 pt (mean 0.25) for ~5% more time. airbench's whitening layer (4 seeds each):
# MNIST 0.987 / 0.987 without, Fashion-MNIST 0.875 / 0.864, CIFAR-10 0.643 / 0.624, for
# 3-4% less time on gray images and 14% more on colour; at 8 px it breaks the net (below).
SEEN_PER_TRAINING = 60_000   # training images one training sees (epochs x half)
SIZED_EPOCHS = (4, 20)       # ... in this many epochs at least and at most
WHITEN_MIN_SIZE = 24         # px: the whitening layer from this size (measured at 8, 28, 32)
CPU_SMALLCNN = dict(width=16, lr=0.2, batch_size=128, label_smoothing=0.1)


def sized_defaults(hyp: Hyp, *, given, n_images: int, image_size: int, channels: int,
                   gpu: bool) -> tuple[Hyp, dict]:
    """The hyperparameters no flag, --config file or demo set (`given` names those that
    were), chosen from the data and the machine; returns them with {name: "value: why"}.
    The flips are chosen later, by the probe's mirror check."""
    from trainers.models import resolve_model

    model = resolve_model(hyp.model, image_size)
    if gpu or model != "smallcnn":
        return hyp, {}  # measured on CPUs only: the defaults stay where nothing was measured
    half = max(1, n_images // 2)
    epochs = int(np.clip(round(SEEN_PER_TRAINING / half), *SIZED_EPOCHS))
    rule = {**CPU_SMALLCNN, "epochs": epochs,
            "progressive": 0.5 if image_size >= 24 else 0.0,
            "translate": 1 if image_size <= 32 else 2, "tta_shift": 1,
            "whiten": image_size >= WHITEN_MIN_SIZE}
    why = {"epochs": f"about {SEEN_PER_TRAINING:,} images seen per training "
                     f"({half:,} per epoch), within {SIZED_EPOCHS[0]}-{SIZED_EPOCHS[1]}",
           "progressive": "from half size" if image_size >= 24 else "off below 24 px",
           "translate": f"{image_size} px images" + (
               ": 1 px was as good as 2 on MNIST and CIFAR-10, +0.65 pt on Fashion-MNIST"
               if image_size <= 32 else ""),
           "tta_shift": "1 px up-left and down-right: +0.25 pt held-out accuracy on average "
                        "(MNIST, Fashion-MNIST, CIFAR-10) for about 5% more time",
           "whiten": "airbench's whitening layer: +1.1 pt held-out accuracy on Fashion-MNIST, "
                     "+1.8 pt on CIFAR-10, equal on MNIST" if image_size >= WHITEN_MIN_SIZE
                     else f"{image_size} px images, under {WHITEN_MIN_SIZE}: it trims a pixel, "
                          "and 8-px digits fell to 0.1-0.7 held-out accuracy with it"}
    free = {k: v for k, v in rule.items() if k not in set(given)}
    chosen = {k: f"{('on' if v else 'off') if isinstance(v, bool) else v}: "
                 f"{why.get(k, 'the small CNN on CPUs')}" for k, v in free.items()}
    return replace(hyp, **free), chosen


def progressive_factor(progressive: float) -> float:
    """Time of a progressive-resizing training relative to a full-size one: the first 75% of
    epochs ramp from `progressive` x size up, and compute follows the pixels."""
    if progressive <= 0 or progressive >= 1:
        return 1.0
    ramp = np.linspace(progressive, 1.0, 16) ** 2
    return 0.75 * float(ramp.mean()) + 0.25


def training_seconds(hyp: Hyp, n_images: int, rates: Probe, epoch_losses: int) -> float:
    """One training: E epochs on its half, and the held-out half predicted at the end (once
    per test-time view) and at every recorded epoch (one view)."""
    half = n_images / 2
    recorded = (hyp.epochs - 1) // epoch_losses if epoch_losses > 0 else 0
    return (hyp.epochs * half / rates.train_rate * progressive_factor(hyp.progressive)
            + (hyp.tta_views() + recorded) * half / rates.predict_rate)


def pass_training_seconds(hyp: Hyp, n_images: int, rates: Probe, epoch_losses: int,
                          slots: int) -> float:
    """One training in the pass: `training_seconds`, slower when others run beside it."""
    alone = training_seconds(hyp, n_images, rates, epoch_losses)
    return alone * (SIDE_BY_SIDE if slots > 1 else 1.0)


def sanity_seconds(hyp: Hyp, n_images: int, image_size: int, rates: Probe) -> float:
    """The preflight check's two short trainings (trainers/sanity.py), at the probe's speed."""
    from trainers.sanity import OVERFIT_BATCH, OVERFIT_EPOCHS, learnability_size

    n, epochs = learnability_size(n_images, image_size, hyp)
    half = n // 2
    return (OVERFIT_EPOCHS * min(OVERFIT_BATCH, n_images) + epochs * half) / rates.train_rate \
        + (n - half) / rates.predict_rate


@dataclass(frozen=True)
class Plan:
    """What the pass will do and how long it should take."""

    n_images: int
    n_classes: int
    image_size: int
    channels: int
    aspect: str
    model: str            # resolved: never "auto"
    epochs: int
    batch_size: int
    width: int
    flip: bool
    translate: int
    data_mode: str
    trainings: int        # still to run
    slots: int
    training_s: float     # one training, estimated
    sanity_s: float       # the preflight check still to run, estimated (0 if none)
    estimate_s: float     # the rest of the pass: sanity check, trainings, fixed cost
    probe: dict           # Probe as a dict
    budget_s: float | None = None
    budget_note: str = ""
    chosen: dict | None = None  # {hyperparameter: "value: why"} of what no flag set
    whiten: bool = False        # the small CNN's whitening layer

    def to_dict(self) -> dict:
        return asdict(self)


def make_plan(hyp: Hyp, *, n_images: int, n_classes: int, image_size: int, channels: int,
              aspect: str, data_mode: str, trainings: int, slots: int, rates: Probe,
              epoch_losses: int, budget_s: float | None = None, spent_s: float = 0.0,
              sanity: bool = False, chosen: dict | None = None) -> tuple[Plan, Hyp]:
    """The plan and the hyperparameters it settles (the resolved model; with a budget, the
    epochs that fit in what is left of it after `spent_s` and the sanity check, if one is to
    run). BudgetError if none fit."""
    from trainers.models import resolve_model

    hyp = replace(hyp, model=resolve_model(hyp.model, image_size))
    waves = math.ceil(trainings / max(1, slots))
    check_s = sanity_seconds(hyp, n_images, image_size, rates) if sanity else 0.0
    note = ""
    if budget_s is not None:
        hyp, note = fit_budget(hyp, budget_s - spent_s - check_s - FIXED_S, waves=waves,
                               slots=slots, n_images=n_images, rates=rates,
                               epoch_losses=epoch_losses, budget_s=budget_s)
        chosen = {**(chosen or {}), "epochs": f"{hyp.epochs}: {note}"}
        check_s = sanity_seconds(hyp, n_images, image_size, rates) if sanity else 0.0
    one = pass_training_seconds(hyp, n_images, rates, epoch_losses, slots)
    plan = Plan(n_images, n_classes, image_size, channels, aspect, hyp.model, hyp.epochs,
                hyp.batch_size, hyp.width, hyp.flip, hyp.translate, data_mode, trainings, slots,
                one, check_s, check_s + waves * one + FIXED_S, asdict(rates), budget_s, note,
                dict(chosen or {}), hyp.whiten)
    return plan, hyp


def fit_budget(hyp: Hyp, left_s: float, *, waves: int, slots: int, n_images: int,
               rates: Probe, epoch_losses: int, budget_s: float) -> tuple[Hyp, str]:
    """The most epochs (MIN_EPOCHS to MAX_EPOCHS) whose trainings fit in `left_s` seconds."""
    def wall(epochs: int) -> float:
        return waves * pass_training_seconds(replace(hyp, epochs=epochs), n_images, rates,
                                             epoch_losses, slots)

    fits = [e for e in range(MIN_EPOCHS, MAX_EPOCHS + 1) if wall(e) <= left_s]
    if not fits:
        need = wall(MIN_EPOCHS) + (budget_s - left_s)
        raise BudgetError(
            f"--budget {format_duration(budget_s)} cannot be met: {MIN_EPOCHS} epochs of every "
            f"training alone take about {format_duration(wall(MIN_EPOCHS))} here "
            f"({waves} wave(s) of trainings at {rates.train_rate:,.0f} training images/s "
            f"each). Give --budget {format_duration(need * 1.1)} or more, or fewer --repeats, "
            "a smaller --image-size or a smaller --width")
    epochs = max(fits)
    return replace(hyp, epochs=epochs), (f"{epochs} epochs fit the budget of "
                                         f"{format_duration(budget_s)}")
