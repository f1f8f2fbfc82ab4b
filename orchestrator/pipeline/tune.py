"""Ray Tune: search training hyperparameters on one swap split before the dupes pass.

Each trial trains on one half of a split and is scored on the other half, reporting held-out
metrics every epoch, so ASHA can stop bad trials early and PBT can copy a good trial's state
into a bad one with perturbed hyperparameters. Trials are Tune function trainables that train
directly: a Ray Train run per trial would add a ~10 s launch to every trial, and Tune's
schedulers (PBT's exploit in particular) work on Tune's own checkpoints.
"""
from __future__ import annotations


import math
import os
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
from ray.tune.search.basic_variant import BasicVariantGenerator
from rich.table import Table

from orchestrator.data.cache import build_cache, sharded_images
from orchestrator.data.scan import auto_max
from orchestrator.data.splits import make_splits
from orchestrator.pipeline.cluster import init_ray
from orchestrator.pipeline.search_space import CHECKPOINTS_KEPT, METRICS, PBT_FIXED, TuneSettings
from orchestrator.pipeline.settings import resolve_hyperparameters
from orchestrator.run import rundir
from orchestrator.run.remote import ShardStore
from trainers.hyp import Hyp
from trainers.train import train


def tune_domains(space: dict) -> dict:

    out = {}
    for name, spec in space.items():
        if isinstance(spec, dict):
            (dist, args), = spec.items()
            out[name] = tune.choice(list(args)) if dist == "choice" else getattr(tune, dist)(*args)
        else:
            out[name] = spec
    return out


def trial_fn(config: dict, *, images, labels, train_idx, eval_idx, base_hyp: Hyp, seed: int,
             checkpoint_s: float = 30.0, pbt_interval: int = 0):
    """One trial: train with `config`'s hyperparameters, report held-out metrics each epoch.

    A checkpoint goes with a report at most every `checkpoint_s` seconds, plus at every PBT
    perturbation epoch (PBT copies those) and at the last epoch. Tune snapshots its own
    experiment state only every few seconds; checkpoints spaced wider than that, with a few
    kept (CHECKPOINTS_KEPT), mean the snapshot never names a checkpoint already pruned, so a
    killed search always resumes (measured: with a checkpoint every 0.05 s epoch it did not).
    """
    known = {f.name for f in fields(Hyp)}
    hyp = replace(base_hyp, **{k: v for k, v in config.items() if k in known})
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a restored trial, or PBT copying another trial's state
        with checkpoint.as_directory() as d:
            resume = torch.load(Path(d) / "state.pt", weights_only=False)
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    last = [time.monotonic()]

    def report(info):
        metrics = {"heldout_loss": info.heldout_loss, "heldout_accuracy": info.heldout_accuracy,
                   "train_loss": info.train_loss, "epoch": info.epoch, "epochs": info.epochs}
        due = (time.monotonic() - last[0] >= checkpoint_s or info.epoch == info.epochs
               or (pbt_interval and info.epoch % pbt_interval == 0))
        if not due:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(info.state(), Path(d) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        last[0] = time.monotonic()

    train(hyp, images, labels, train_idx, eval_idx, seed=seed, device=device, on_epoch=report,
          eval_every_epoch=True, resume=resume)


def max_epochs(space: dict, base_hyp: Hyp) -> int:
    """The most epochs any trial can run: ASHA's last rung."""
    spec = space.get("epochs", base_hyp.epochs)
    if not isinstance(spec, dict):
        return int(spec)
    (_, args), = spec.items()
    return int(max(args))  # the choices, or the bounds of a range


def make_scheduler(name: str, *, space: dict, max_epochs: int, grace_period: int,
                   perturbation_interval: int):

    if name == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=max_epochs,
                             grace_period=grace_period, reduction_factor=2)
    domains = tune_domains({k: v for k, v in space.items()
                            if isinstance(v, dict) and k not in PBT_FIXED})
    if not domains:
        raise ValueError("PBT needs at least one searched hyperparameter it can change while "
                         f"trials run (not {PBT_FIXED})")
    return PopulationBasedTraining(time_attr="training_iteration",
                                   perturbation_interval=perturbation_interval,
                                   hyperparam_mutations=domains, quantile_fraction=0.5,
                                   resample_probability=0.25, log_config=True)


def trials_table(grid, metric: str) -> pd.DataFrame:
    """One row per trial: status, epochs run, best and last metric, the searched config."""
    rows = []
    mode = METRICS[metric]
    for result in grid:
        df = result.metrics_dataframe
        epochs_run = int(df["training_iteration"].max()) if df is not None and len(df) else 0
        planned = int(result.config.get("epochs", 0) or 0)
        values = df[metric].dropna() if df is not None and metric in df else pd.Series(dtype=float)
        best = (values.min() if mode == "min" else values.max()) if len(values) else math.nan
        if result.error is not None:
            status = "error"
        elif planned and epochs_run < planned:
            status = "stopped early"
        else:
            status = "completed"
        rows.append({"trial": (result.metrics or {}).get("trial_id", Path(result.path).name),
                     "status": status, "epochs_run": epochs_run, f"best_{metric}": best,
                     f"last_{metric}": values.iloc[-1] if len(values) else math.nan,
                     **{k: v for k, v in result.config.items()},
                     "error": "" if result.error is None else str(result.error).strip()
                     .splitlines()[-1][:300]})
    return pd.DataFrame(rows)


def best_config(table: pd.DataFrame, metric: str, base_hyp: Hyp, space: dict) -> dict | None:
    """The hyperparameters of the trial with the best metric (any epoch), as a full Hyp."""
    ok = table[table["status"] != "error"].dropna(subset=[f"best_{metric}"])
    if ok.empty:
        return None
    col = f"best_{metric}"
    row = ok.loc[ok[col].idxmin() if METRICS[metric] == "min" else ok[col].idxmax()]
    tuned = {k: _plain(row[k]) for k in space if k in row}
    return {"hyp": replace(base_hyp, **tuned).to_dict(), "tuned": tuned,
            "metric": metric, "value": float(row[col]), "trial": row["trial"]}


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def start_search(settings: TuneSettings) -> TuneSettings:
    """A new search: GPUs per trial resolved against the cluster, TUNE/tune.json written."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    if settings.gpus_per_trial is None:
        init_ray(settings.address)  # stays up for the search
        settings = replace(settings, gpus_per_trial=1.0 if ray.cluster_resources().get(
            "GPU", 0) >= 1 else 0.0)
    rundir.write_json(out / "tune.json", settings.to_dict())
    return settings


def load_search(out: Path) -> TuneSettings:
    """The settings of a search to resume."""
    path = Path(out) / "tune.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: --resume takes a search folder written by "
                                "`dupes tune`")
    return TuneSettings.from_dict(rundir.read_json(path))


def run_search(settings: TuneSettings, *, resume: bool) -> tuple[pd.DataFrame, dict | None]:
    """Run (or resume) a search described by `settings` (saved as TUNE/tune.json)."""
    s = settings
    out, space, base_hyp = Path(s.out), s.space, s.base_hyp
    started = init_ray(s.address)
    try:
        # the search's own image cache (TUNE/cache): decoded across the cluster, reused by a
        # resumed search; each trial reads it, the driver holds no pixels
        store = ShardStore(out / "cache")
        scan = build_cache(s.data_dir, store, image_size=s.scan.image_size,
                           aspect=s.scan.aspect, min_per_class=s.scan.min_per_class, seed=s.seed,
                           max_auto_size=auto_max(s.gpus_per_trial or 0))
        images = sharded_images(store, scan.placement, scan.n_shards)
        labels = scan.index["label"].to_numpy()
        # the settings path of `dupes run`: what no flag set, sized to the data and machine
        # Tune searches a network's training (from scratch, or fine-tuned): frozen mode's
        # heads have nothing worth a search, so `auto` means scratch here
        if base_hyp.mode in ("auto", "frozen"):
            base_hyp = replace(base_hyp, mode="scratch")
        base_hyp, _ = resolve_hyperparameters(
            base_hyp, given=s.hyp_set, n_images=len(labels), image_size=scan.plan.size,
            channels=scan.plan.channels, gpu=bool(ray.cluster_resources().get("GPU", 0)))
        folds = make_splits(labels, repeats=1, seed=s.seed)["fold"].to_numpy()
        resources = {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial or 0.0}
        trainable = tune.with_resources(tune.with_parameters(
            trial_fn, images=images, labels=labels, train_idx=np.flatnonzero(folds == 1),
            eval_idx=np.flatnonzero(folds == 0), base_hyp=base_hyp, seed=s.train_seed,
            checkpoint_s=s.checkpoint_every_s,
            pbt_interval=s.perturbation_interval if s.scheduler == "pbt" else 0), resources)
        experiment = out / "search"
        if resume:
            if not tune.Tuner.can_restore(str(experiment)):
                raise FileNotFoundError(f"{experiment} holds no Tune experiment to resume")
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable,
                                       resume_unfinished=True, resume_errored=True)
        else:
            pbt = s.scheduler == "pbt"
            searched = {k: v for k, v in space.items() if not (pbt and k in PBT_FIXED)}
            scheduler = make_scheduler(s.scheduler, space=searched,
                                       max_epochs=max_epochs(searched, base_hyp),
                                       grace_period=s.grace_period,
                                       perturbation_interval=s.perturbation_interval)
            tuner = tune.Tuner(
                trainable, param_space=tune_domains(searched),
                tune_config=tune.TuneConfig(
                    metric=s.metric, mode=METRICS[s.metric], num_samples=s.trials,
                    max_concurrent_trials=s.max_concurrent, scheduler=scheduler,
                    # a new trial (or a PBT exploit) reuses a finished trial's actor: no new
                    # process and torch import each time (measured: PBT test 59 s -> 20 s)
                    reuse_actors=True,
                    search_alg=BasicVariantGenerator(random_state=s.seed)),
                run_config=tune.RunConfig(
                    name="search", storage_path=str(out.resolve()), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=s.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT)))
        grid = tuner.fit()
        table = trials_table(grid, s.metric)
    finally:
        if started or ray.is_initialized():
            ray.shutdown()
    best = best_config(table, s.metric, base_hyp, dict(space))
    rundir.write_csv(out / "trials.csv", table)
    if best is not None:
        rundir.write_json(out / "best.json", {**best, "data_dir": s.data_dir,
                                              "split_seed": s.seed})
    return table, best


def show_search(table: pd.DataFrame, best: dict | None, settings: TuneSettings, console) -> bool:
    """The trials, failures and the best configuration; False if every trial failed."""

    console.print(trials_view(table, metric=settings.metric, scheduler=settings.scheduler,
                              searched=list(settings.space)))
    errors = table[table["status"] == "error"]
    if len(errors):
        console.print(f"[yellow]{len(errors)} trial(s) failed[/]; first error: "
                      f"{errors.iloc[0]['error']}", highlight=False)
    if best is None:
        console.print("[red]every trial failed[/]: no best.json was written")
        return False
    console.print(f"best {settings.metric} {best['value']:.4f} (trial {best['trial']}): "
                  f"{best['tuned']}; use it with `dupes run DATA --config "
                  f"{Path(settings.out) / 'best.json'}`", highlight=False)
    return True


def trials_view(table, *, metric: str, scheduler: str, searched: list[str]) -> Table:
    """The trials of a `dupes tune` search, best first."""
    view = Table(title=f"trials ({scheduler}, {metric})", header_style="bold")
    searched = [k for k in searched if k in table.columns]
    for col in ["trial", "status", "epochs_run", f"best_{metric}", *searched]:
        view.add_column(col, justify="left" if col in ("trial", "status") else "right")
    for row in table.sort_values(f"best_{metric}",
                                 ascending=metric == "heldout_loss").itertuples(index=False):
        r = row._asdict()
        cells = [str(r["trial"]), str(r["status"]), str(r["epochs_run"]),
                 f"{r[f'best_{metric}']:.4f}"]
        cells += [f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in searched]
        view.add_row(*cells)
    return view
