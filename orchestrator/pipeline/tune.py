"""Ray Tune: search training hyperparameters on one swap split before the dupes pass.

Each trial trains on one half of a split and is scored on the other half, reporting held-out
metrics every epoch, so ASHA can stop bad trials early and PBT can copy a good trial's state
into a bad one with perturbed hyperparameters. Trials are Tune function trainables that train
directly: a Ray Train run per trial would add a ~10 s launch to every trial, and Tune's
schedulers (PBT's exploit in particular) work on Tune's own checkpoints.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.run import rundir
from orchestrator.config import ScanSettings, opt
from trainers.hyp import Hyp

SCHEDULERS = ("asha", "pbt")
METRICS = {"heldout_loss": "min", "heldout_accuracy": "max"}
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
DEFAULT_SPACE = {
    "lr": {"loguniform": [0.005, 0.5]},
    "weight_decay": {"loguniform": [1e-5, 5e-3]},
    "epochs": {"choice": [10, 20, 30]},
    "translate": {"choice": [0, 1, 2]},
    "mixup": {"choice": [0.0, 0.2, 0.4]},
    "label_smoothing": {"uniform": [0.0, 0.2]},
}
# PBT changes these while trials run; the epoch count fixes the one-cycle schedule's length,
# so under PBT it is the same for every trial
PBT_FIXED = ("epochs", "model", "width", "batch_size")
CHECKPOINTS_KEPT = 5


def load_space(path: Path | None) -> dict:
    """The search space: DEFAULT_SPACE, or a YAML/JSON file of `name: value` (a constant) or
    `name: {loguniform|uniform|randint: [low, high]}` / `name: {choice: [...]}`."""
    if path is None:
        return dict(DEFAULT_SPACE)
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml
        space = yaml.safe_load(text)
    else:
        space = json.loads(text)
    if not isinstance(space, dict):
        raise ValueError(f"{path}: the search space must be a mapping of hyperparameter names")
    known = {f.name for f in fields(Hyp)}
    for name, spec in space.items():
        if name not in known:
            raise ValueError(f"{path}: '{name}' is not a hyperparameter; valid names are "
                             f"{sorted(known)}")
        if isinstance(spec, dict):
            if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
                raise ValueError(f"{path}: '{name}' must be a constant or one of "
                                 f"{DISTRIBUTIONS} with its arguments, got {spec}")
    return space


def space_arg(text: str) -> dict:
    """`--space FILE` as an argparse type: the loaded, checked search space."""
    try:
        return load_space(Path(text))
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@dataclass
class TuneSettings:
    """A search, as saved to TUNE/tune.json (a resumed search reads it back)."""

    data_dir: str = ""
    out: str = ""
    trials: int = opt(8, "trials", gt=0)
    scheduler: str = opt("asha", "asha stops bad trials early; pbt copies good trials' state "
                         "into bad ones and perturbs their hyperparameters", choices=SCHEDULERS)
    metric: str = opt("heldout_loss", "what the search optimises (heldout_loss is less noisy "
                      "than accuracy on small data)", choices=tuple(METRICS))
    space: dict = opt(None, "YAML/JSON search space: `name: constant` or `name: {loguniform|"
                      "uniform|randint: [lo, hi]}` / `{choice: [...]}`; none: lr, weight_decay, "
                      "epochs, translate, mixup, label_smoothing", parse=space_arg,
                      metavar="FILE")
    cpus_per_trial: float = opt(1.0, "CPUs per trial", gt=0)
    gpus_per_trial: float | None = opt(None, "GPUs per trial, fractions allowed; none: 1 if "
                                       "the cluster has GPUs, else 0", min=0)
    max_concurrent: int | None = opt(None, "trials at once; none: as many as the resources "
                                     "hold", gt=0)
    grace_period: int = opt(2, "ASHA: epochs every trial runs before it can be stopped", gt=0)
    perturbation_interval: int = opt(4, "PBT: epochs between exploit/explore steps", gt=0)
    checkpoint_every_s: float = opt(30.0, "seconds between a trial's checkpoints (also at PBT "
                                    "perturbations and the last epoch); what a resumed search "
                                    "restarts from", gt=0)
    seed: int = opt(0, "split and search seed")
    train_seed: int = opt(1, "training seed")
    max_failures: int = opt(1, "retries of a crashed trial", min=0)
    address: str | None = opt(None, "Ray cluster address; none: a private local Ray")
    scan: ScanSettings = field(default_factory=ScanSettings)
    base_hyp: Hyp = field(default_factory=Hyp)

    def __post_init__(self):
        if self.space is None:
            self.space = dict(DEFAULT_SPACE)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TuneSettings":
        d = dict(d)
        if "checkpoint_s" in d:  # tune.json of before the settings were typed
            d["checkpoint_every_s"] = d.pop("checkpoint_s")
        scan = d.pop("scan", None) or {k: d.pop(k) for k in ("image_size", "min_per_class")
                                       if k in d}
        known = {f.name for f in fields(cls)} - {"scan", "base_hyp"}
        return cls(**{k: v for k, v in d.items() if k in known}, scan=ScanSettings(**scan),
                   base_hyp=Hyp.from_dict(d.get("base_hyp") or {}))


def tune_domains(space: dict) -> dict:
    from ray import tune

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
    import torch
    from ray import tune

    from trainers.train import train

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
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

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
        import ray

        from orchestrator.pipeline.cluster import init_ray
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
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from orchestrator.data.cache import build_cache, sharded_images
    from orchestrator.pipeline.cluster import init_ray
    from orchestrator.data.scan import auto_max
    from orchestrator.data.splits import make_splits
    from orchestrator.run.storage import ShardStore

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
    from analysis.report import trials_view

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
