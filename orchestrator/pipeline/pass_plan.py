"""The plan of a pass, made before any training: one slot measured with a short training
where the trainings will run, what `auto`, the data and `--budget` leave open settled through
the settings path, the plan printed and saved (plan.json, and config.json with every choice
and its reason)."""
from __future__ import annotations

import dataclasses
import time

import ray
from rich.console import Console

from orchestrator.config import RunConfig
from orchestrator.data.cache import stratified_sample
from orchestrator.data.prepare import Prepared
from orchestrator.errors import BudgetError
from orchestrator.pipeline.cluster import alive_nodes, like_a_training, plan_resources
from orchestrator.pipeline.embed import describe, embed_size, embedding_store, pool_shape
from orchestrator.pipeline.plan import (PROBE_EMBED, DataShape, Plan, make_frozen_plan,
                                        make_plan, plan_table, probe, probe_frozen,
                                        probe_images)
from orchestrator.pipeline.settings import ignored_flags, resolve_hyperparameters, settle_flip
from orchestrator.run.directory import Run


def make_pass_plan(run: Run, cfg: RunConfig, prep: Prepared, todo: list, console: Console, *,
                   fresh: bool, spent_s: float, sanity: bool) -> tuple[RunConfig, Plan]:
    """Measure one slot, print the plan and its estimate, and settle what `auto` and
    `--budget` leave open (a fresh pass only: a resumed one keeps what its finished trainings
    used). Returns the configuration to train with, and the plan."""
    slots = plan_resources(cfg, ray.cluster_resources(), len(todo))
    labels = prep.index["label"].to_numpy()
    info = run.scan_info()
    data = DataShape(n_images=len(prep.index), n_classes=len(prep.classes),
                     image_size=info.image_size, channels=info.channels, aspect=info.aspect)
    hyp, chosen = cfg.hyp, {}
    if fresh:  # what no flag set is chosen from the data and the machine
        hyp, chosen = resolve_hyperparameters(hyp, given=cfg.hyp_set, gpu=slots.gpus > 0,
                                              n_images=data.n_images,
                                              image_size=data.image_size,
                                              channels=data.channels)
    if fresh and cfg.scan.aspect == "auto" and hyp.mode in ("frozen", "finetune"):
        chosen = {**chosen, "aspect": f"{data.aspect}: pretrained backbones learnt from "
                  "aspect-jittered crops, never from padding (+9 pt held-out accuracy on the "
                  "photos case, BENCHMARKS.md); --aspect pad keeps proportions"}
    if hyp.mode == "frozen":
        return _frozen_plan(run, cfg, prep, todo, console, hyp=hyp, chosen=chosen, data=data,
                            slots=slots, fresh=fresh, spent_s=spent_s)
    mirror = fresh and "flip" not in cfg.hyp_set
    sample = stratified_sample(labels, 2 * probe_images(data.image_size), seed=cfg.seed)
    t0 = time.perf_counter()
    args = (prep.images.gather(sample), labels[sample], hyp)
    kwargs = dict(threads=max(1, int(slots.cpus)), device="cuda" if slots.gpus > 0 else "cpu",
                  seed=cfg.seed, mirror=mirror)
    if alive_nodes() == 1:
        rates = probe(*args, **kwargs)  # one machine: here, without a task's worker start
    else:
        rates = like_a_training(probe, *args, **kwargs, cpus=slots.cpus, gpus=slots.gpus,
                                resources=cfg.resources_per_training)
    spent_s += time.perf_counter() - t0
    if mirror:
        hyp, chosen = settle_flip(hyp, chosen, rates.mirror)
    try:
        plan = make_plan(hyp, data=data, slots=slots, data_mode=cfg.data_mode,
                         trainings=len(todo), rates=rates, epoch_losses=cfg.epoch_losses,
                         budget_s=cfg.budget if fresh else None, spent_s=spent_s,
                         sanity=sanity, chosen=chosen)
    except BudgetError as e:
        raise BudgetError(f"{e}. Nothing was trained; `dupes run --resume {run} --budget "
                          "DURATION` keeps this run's scan") from None
    return record_plan(run, cfg, plan, console, fresh=fresh, spent_s=spent_s), plan


def record_plan(run: Run, cfg: RunConfig, plan: Plan, console: Console, *, fresh: bool,
           spent_s: float, **always) -> RunConfig:
    """Print the plan (and the flags it cannot use), save plan.json, and on a fresh pass
    record what auto, the data and the budget settled, with the reasons, in config.json;
    `always` are config fields recorded on a resumed pass too. Returns the configuration."""
    console.print(plan_table(plan.to_dict()))
    warn_ignored(plan.hyp, cfg.hyp_set, console)
    run.save_plan({**plan.to_dict(), "made": time.time(), "spent_s": spent_s})
    if fresh:
        always = {"hyp": plan.hyp, "hyp_chosen": plan.chosen, **always,
                  "scan": dataclasses.replace(cfg.scan, image_size=plan.data.image_size,
                                              aspect=plan.data.aspect)}
    if always:
        cfg = dataclasses.replace(cfg, **always)
        run.save_config(cfg)
    return cfg


def warn_ignored(hyp, given, console: Console) -> None:
    unused = ignored_flags(hyp, given)
    if unused:
        what = {"frozen": "heads on frozen features", "finetune": "fine-tuning "
                f"{hyp.backbone}"}.get(hyp.mode, f"{hyp.model} from scratch")
        console.print(f"[yellow]warning:[/] {', '.join(unused)} do not apply to {what} and are "
                      "ignored" + (" (--mode scratch or --mode finetune trains a network)"
                                   if hyp.mode == "frozen" else ""), highlight=False)


def _frozen_plan(run: Run, cfg: RunConfig, prep: Prepared, todo: list, console: Console, *,
                 hyp, chosen: dict, data: DataShape, slots, fresh: bool,
                 spent_s: float) -> tuple[RunConfig, Plan]:
    """The plan of a frozen pass: the weights checked (strictly, once), the embedding and the
    heads measured here, the estimate printed and saved."""
    from trainers.backbones import spec_of
    gpu = slots.gpus > 0
    size = embed_size(hyp.embed_size, gpu=gpu, native=spec_of(hyp.backbone).size)
    if fresh and not hyp.embed_size:
        chosen = {**chosen, "embed_size": f"{size}: " + (
            "the backbone's own size" if gpu else "on CPUs the best held-out accuracy of "
            "128-224 px on CIFAR-10 photos, at 53 images/s (BENCHMARKS.md)")}
    hyp = dataclasses.replace(hyp, embed_size=size)
    # WeightsMismatch before anything runs
    spec = describe(hyp.backbone, size, hyp.weights, stages=hyp.embed_stages)
    names = run.shard_names()
    have = embedding_store(run, spec).names()
    todo_frac = sum(n not in have for n in names) / max(1, len(names))
    actors, _, _, threads = pool_shape(ray.cluster_resources(), alive_nodes())
    labels = prep.index["label"].to_numpy()
    sample = stratified_sample(labels, PROBE_EMBED, seed=cfg.seed)
    t0 = time.perf_counter()
    rates = probe_frozen(prep.images.gather(sample), backbone=hyp.backbone, size=size,
                         weights=hyp.weights, threads=threads, n_images=data.n_images,
                         device="cuda" if gpu else "cpu", stages=spec.stages,
                         prune=hyp.head_prune)
    spent_s += time.perf_counter() - t0
    try:
        plan = make_frozen_plan(hyp, data=data, slots=slots, trainings=len(todo), rates=rates,
                                embedding=dataclasses.asdict(spec), embed_todo=todo_frac,
                                actors=min(actors, max(1, len(names))),
                                budget_s=cfg.budget if fresh else None, spent_s=spent_s,
                                chosen=chosen)
    except BudgetError as e:
        raise BudgetError(f"{e}. Nothing was embedded; `dupes run --resume {run} --budget "
                          "DURATION` keeps this run's scan") from None
    return record_plan(run, cfg, plan, console, fresh=fresh, spent_s=spent_s, hyp=plan.hyp,
                  embedding=dataclasses.asdict(spec)), plan
