"""The plan of a pass, shown before any training: what each training will be (the model that
`auto` resolved to, size, epochs, batch, augmentation), how many run at once, and how long the
whole pass will take, from a short training measured where the trainings run (the probe,
a Ray task with one training's resources: `pipeline.pass_plan.make_pass_plan`). With a
`--budget`, the epochs are chosen here to fit it, or the pass stops before spending it.

The estimate: every training trains E epochs on its half (N/2 images) and predicts the other
half once, plus once per recorded epoch (`--epoch-losses`); the trainings run in waves of
`slots` at a time; and a fixed cost is added for Ray Train's launch and the analysis.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from rich.table import Table

from analysis.report import format_duration, model_and_training
from orchestrator.errors import BudgetError
from orchestrator.pipeline.cluster import Slots
from trainers.hyp import Hyp
from trainers.models import resolve_model
from trainers.sanity import OVERFIT_BATCH, OVERFIT_EPOCHS, learnability_size, mirror_check
from trainers.train import train

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


def waves_of(trainings: int, slots: int) -> int:
    """Rounds of trainings side by side: `trainings` on `slots` at a time."""
    return math.ceil(trainings / max(1, slots))


def sanity_seconds(hyp: Hyp, n_images: int, image_size: int, rates: Probe) -> float:
    """The preflight check's two short trainings (trainers/sanity.py), at the probe's speed."""
    n, epochs = learnability_size(n_images, image_size, hyp)
    half = n // 2
    return (OVERFIT_EPOCHS * min(OVERFIT_BATCH, n_images) + epochs * half) / rates.train_rate \
        + (n - half) / rates.predict_rate


@dataclass(frozen=True)
class DataShape:
    """What the plan needs of the scanned data."""

    n_images: int
    n_classes: int
    image_size: int      # px, square
    channels: int
    aspect: str


@dataclass(frozen=True)
class Plan:
    """What the pass will do and how long it should take. Built by `make_plan`; `slots` is
    computed once (`cluster.plan_resources`) and used by the estimate and the launch alike."""

    data: DataShape
    hyp: Hyp              # settled: the model resolved (never "auto"), the budget's epochs
    slots: Slots
    data_mode: str
    trainings: int        # still to run
    training_s: float     # one training, estimated
    sanity_s: float       # the preflight check still to run, estimated (0 if none)
    estimate_s: float     # the rest of the pass: sanity check, trainings, fixed cost
    probe: Probe
    budget_s: float | None = None
    budget_note: str = ""
    chosen: dict = field(default_factory=dict)  # {hyperparameter: "value: why"} no flag set
    embed_s: float = 0.0        # frozen mode: the embedding pass still to run, estimated
    embedding: dict | None = None  # frozen mode: `pipeline.embed.EmbedSpec` as a dict

    @property
    def model(self) -> str:
        return self.hyp.model

    @property
    def epochs(self) -> int:
        return self.hyp.epochs

    def to_dict(self) -> dict:
        """plan.json: flat, as `plan_table` and the benchmarks read it."""
        h = self.hyp
        return {**asdict(self.data), "model": h.model, "epochs": h.epochs,
                "batch_size": h.batch_size, "lr": h.lr, "width": h.width, "flip": h.flip,
                "translate": h.translate, "whiten": h.whiten, "data_mode": self.data_mode,
                "trainings": self.trainings, "slots": self.slots.slots,
                "cpus_per_training": self.slots.cpus, "gpus_per_training": self.slots.gpus,
                "training_s": self.training_s, "sanity_s": self.sanity_s,
                "estimate_s": self.estimate_s, "probe": asdict(self.probe),
                "budget_s": self.budget_s, "budget_note": self.budget_note,
                "chosen": dict(self.chosen), "mode": h.mode,
                # the embedding's: what made the features, whatever the flag said
                "backbone": self.embedding["backbone"] if self.embedding else h.backbone,
                "head_hidden": h.head_hidden, "head_l2": h.head_l2,
                "head_prune": h.head_prune, "head_epochs": h.head_epochs,
                "embed_s": self.embed_s,
                **({"embed_size": self.embedding["size"],
                    "embed_stages": bool(self.embedding.get("stages")),
                    "weights_name": self.embedding["weights"],
                    "weights_sha256": self.embedding["sha256"]} if self.embedding else {})}


def make_plan(hyp: Hyp, *, data: DataShape, slots: Slots, data_mode: str, trainings: int,
              rates: Probe, epoch_losses: int, budget_s: float | None = None,
              spent_s: float = 0.0, sanity: bool = False, chosen: dict | None = None) -> Plan:
    """The plan, with the hyperparameters it settles (`plan.hyp`: the resolved model; with a
    budget, the epochs that fit in what is left of it after `spent_s` and the sanity check,
    if one is to run). BudgetError if none fit."""
    hyp = replace(hyp, model=resolve_model(hyp.model, data.image_size))
    n = data.n_images
    waves = waves_of(trainings, slots.slots)
    check_s = sanity_seconds(hyp, n, data.image_size, rates) if sanity else 0.0
    note = ""
    if budget_s is not None:
        hyp, note = fit_budget(hyp, budget_s - spent_s - check_s - FIXED_S, waves=waves,
                               slots=slots.slots, n_images=n, rates=rates,
                               epoch_losses=epoch_losses, budget_s=budget_s)
        chosen = {**(chosen or {}), "epochs": f"{hyp.epochs}: {note}"}
        check_s = sanity_seconds(hyp, n, data.image_size, rates) if sanity else 0.0
    one = pass_training_seconds(hyp, n, rates, epoch_losses, slots.slots)
    return Plan(data=data, hyp=hyp, slots=slots, data_mode=data_mode, trainings=trainings,
                training_s=one, sanity_s=check_s, estimate_s=check_s + waves * one + FIXED_S,
                probe=rates, budget_s=budget_s, budget_note=note, chosen=dict(chosen or {}))


# What a frozen pass costs besides the embedding and the heads: Ray Train's launch for the
# heads, the analysis and the reports (the scratch pass's constant, not refit yet)
FROZEN_FIXED_S = FIXED_S
# images the probe embeds: a first batch of 32 warms up untimed (its own batch size: a smaller
# warm-up left the first timed batch paying for new kernels, and estimates 2x too slow), then
# 64 are timed
PROBE_EMBED = 96


def probe_frozen(images: np.ndarray, *, backbone: str, size: int, weights: str | None,
                 threads: int, n_images: int, device: str = "cpu", stages: bool = False,
                 prune: bool = True) -> Probe:
    """One slot's speed in frozen mode: images embedded per second (one actor with
    `threads`), and the features of one head per second (a logistic regression on random
    features of the backbone's width, of up to 2,048 rows: a head's time grows with its rows)."""
    from trainers.backbones import embed, feature_extractor
    from trainers.heads import train_head
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        t0 = time.perf_counter()
        ext, _ = feature_extractor(backbone, size=size, weights=weights, device=device,
                                   stages=stages)
        embed(ext, images[:32], batch=32)
        t1 = time.perf_counter()
        feats = embed(ext, images[32:PROBE_EMBED], batch=32)
        t2 = time.perf_counter()
        rows = int(min(2048, max(64, n_images // 2)))
        rng = np.random.default_rng(0)
        fake = rng.standard_normal((2 * rows, feats.shape[1])).astype(np.float32)
        labels = rng.integers(0, 10, 2 * rows)
        t3 = time.perf_counter()
        train_head(Hyp(head_prune=prune), fake, labels, np.arange(rows),
                   np.arange(rows, 2 * rows), seed=0, num_classes=10)
        t4 = time.perf_counter()
    finally:
        torch.set_num_threads(old)
    return Probe(train_rate=len(feats) / max(t2 - t1, 1e-6),
                 predict_rate=2 * rows / max(t4 - t3, 1e-6), seconds=t4 - t0,
                 images=len(feats))


def make_frozen_plan(hyp: Hyp, *, data: DataShape, slots: Slots, trainings: int,
                     rates: Probe, embedding: dict, embed_todo: float, actors: int,
                     budget_s: float | None = None, spent_s: float = 0.0,
                     chosen: dict | None = None) -> Plan:
    """The plan of a frozen pass: the embedding of `embed_todo` of the images (a resumed pass
    embeds only missing shards) on `actors` actors at the probe's rate, then the heads (their
    rows at the probe's head rate), in waves. BudgetError when the embedding alone would not
    fit `budget_s`: a frozen pass has no epochs to trim."""
    n = data.n_images
    embed_s = embed_todo * n / max(1e-6, rates.train_rate * max(1, actors))
    one = n / max(1e-6, rates.predict_rate) * (SIDE_BY_SIDE if slots.slots > 1 else 1.0)
    estimate = embed_s + waves_of(trainings, slots.slots) * one + FROZEN_FIXED_S
    note = ""
    if budget_s is not None:
        if estimate + spent_s > budget_s:
            raise BudgetError(
                f"--budget {format_duration(budget_s)} cannot be met: embedding {n:,} images "
                f"through {hyp.backbone} at {embedding['size']} px takes about "
                f"{format_duration(embed_s)} here ({rates.train_rate:,.0f} images/s on "
                f"{actors} actor(s)) and the heads about "
                f"{format_duration(estimate - embed_s)}. Give --budget "
                f"{format_duration((estimate + spent_s) * 1.1)} or more, a smaller "
                "--embed-size, or --mode scratch")
        note = f"the frozen pass fits the budget of {format_duration(budget_s)}"
    return Plan(data=data, hyp=hyp, slots=slots, data_mode="features", trainings=trainings,
                training_s=one, sanity_s=0.0, estimate_s=estimate, probe=rates,
                budget_s=budget_s, budget_note=note, chosen=dict(chosen or {}),
                embed_s=embed_s, embedding=dict(embedding))


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


def plan_table(plan: dict) -> Table:
    """The plan of a pass (`Plan.to_dict()`, as in plan.json) and its estimated wall time."""
    probe = plan["probe"]
    table = Table(title=f"plan: {plan['trainings']} trainings, about "
                        f"{format_duration(plan['estimate_s'])}", show_header=False,
                  title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("data", f"{plan['n_images']:,} images, {plan['n_classes']} classes, "
                 f"{plan['image_size']}x{plan['image_size']}x{plan['channels']} "
                 f"({plan['aspect']}), {plan['data_mode']}"),
        *model_and_training(plan),
        ("slots", f"{plan['slots']} at a time"),
    ]
    if plan.get("mode") == "frozen":
        rows += [("measured", f"{probe['train_rate']:,.0f} images embedded/s per actor, "
                              f"{probe['predict_rate']:,.0f} features/s per head "
                              f"({probe['seconds']:.1f} s probe)"),
                 ("estimate", f"embedding {format_duration(plan['embed_s'])}, "
                              f"{format_duration(plan['training_s'])} per head; the pass "
                              f"about {format_duration(plan['estimate_s'])}")]
    else:
        rows += [("measured", f"{probe['train_rate']:,.0f} training images/s and "
                              f"{probe['predict_rate']:,.0f} predicted/s per training "
                              f"({probe['seconds']:.1f} s probe on {probe['images']} images)"),
                 ("estimate", f"{format_duration(plan['training_s'])} per training"
                              + (f", sanity check {format_duration(plan['sanity_s'])}"
                                 if plan["sanity_s"] else "")
                              + f"; the pass about {format_duration(plan['estimate_s'])}")]
    if plan.get("budget_s"):
        rows.append(("budget", plan["budget_note"]))
    for name, why in (plan.get("chosen") or {}).items():  # what no flag set, and why
        rows.append((f"{name}", why))
    for k, v in rows:
        table.add_row(k, v)
    return table
