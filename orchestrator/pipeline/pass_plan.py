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
from orchestrator.pipeline.cluster import like_a_training, plan_resources
from orchestrator.pipeline.plan import (DataShape, Plan, make_plan, plan_table, probe,
                                        probe_images)
from orchestrator.pipeline.settings import resolve_hyperparameters, settle_flip
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
    mirror = fresh and "flip" not in cfg.hyp_set
    sample = stratified_sample(labels, 2 * probe_images(data.image_size), seed=cfg.seed)
    t0 = time.perf_counter()
    args = (prep.images.gather(sample), labels[sample], hyp)
    kwargs = dict(threads=max(1, int(slots.cpus)), device="cuda" if slots.gpus > 0 else "cpu",
                  seed=cfg.seed, mirror=mirror)
    if sum(n.get("Alive", False) for n in ray.nodes()) == 1:
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
    console.print(plan_table(plan.to_dict()))
    run.save_plan({**plan.to_dict(), "made": time.time(), "spent_s": spent_s})
    if fresh:  # what auto, the data and the budget settled, recorded with the reasons
        cfg = dataclasses.replace(cfg, hyp=plan.hyp, hyp_chosen=plan.chosen,
                                  scan=dataclasses.replace(cfg.scan,
                                                           image_size=data.image_size))
        run.save_config(cfg)
    return cfg, plan
