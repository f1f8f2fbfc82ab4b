"""The settings of a Ray Tune search (`dupes tune`) and its search space: what the CLI's flags
are generated from, light enough to import without Ray."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

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
    except yaml.YAMLError as e:  # a parser's message names the line and column
        raise argparse.ArgumentTypeError(f"{text} is not valid YAML: {e}") from None
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
    # the hyperparameters a flag or --config set; the search sizes the rest to the data as
    # `dupes run` does (orchestrator.pipeline.settings)
    hyp_set: list = field(default_factory=list)

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


