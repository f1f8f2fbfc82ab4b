"""Run configuration: everything a run needs to be repeated or resumed, dumped to RUN/config.json."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from analysis.votes import DEFAULT_MIN_RATIO
from trainers.hyp import Hyp

DEFAULT_THRESHOLD = ">=8"


@dataclass
class RunConfig:
    data_dir: str
    run_dir: str
    repeats: int = 10                  # swap-split repeats; 2 trainings each
    seed: int = 0                      # split seed: repeat r uses a seed derived from (seed, r)
    train_seed: int = 1                # training randomness, independent of the split
    split: str = "fresh"               # fresh: new split per repeat; fixed: the same every repeat
    threshold: str = DEFAULT_THRESHOLD  # votes that make a dupe
    min_ratio: float = DEFAULT_MIN_RATIO  # ... and p(suggested) >= this x p(given); 0 = off
    image_size: int | None = None      # px; None: chosen from the images' sizes
    min_per_class: int | None = None   # drop classes with fewer usable images (None: error)
    cpus_per_training: float | None = None  # None: 1 on CPU clusters
    gpus_per_training: float | None = None  # None: 1 when the cluster has GPUs, else 0
    resources_per_training: dict = field(default_factory=dict)  # custom Ray resources
    max_failures: int = 2              # Ray Train restarts of the worker group after a crash
    storage: str | None = None         # s3:// or gs:// run directory; run_dir is its local mirror
    address: str | None = None         # Ray cluster address; None: RAY_ADDRESS or a local Ray
    ledger: str | None = None          # confirmed-labels ledger; None: beside the run dir
    ignore_confirmed: bool = False     # leave confirmed images out of the dupes
    config: str = ""                   # the --config file the hyperparameters came from
    sanity: bool = True                # preflight checks before the trainings
    epoch_losses: int = 5              # record held-out losses every k-th epoch (RUN/epochs/); 0 off
    hyp: dict = field(default_factory=lambda: Hyp().to_dict())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)
