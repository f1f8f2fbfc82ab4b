"""Run configuration: everything a run needs to be repeated or resumed, dumped to RUN/config.json.

Typed end to end: the dupe rule is a `DupeRule` and the hyperparameters a `Hyp`. Each field
carries its default, bounds and help; the CLI's flags are generated from them
(`orchestrator.flags`), so a default is written once, here or on those dataclasses. Fields
marked `resume` may change when a run is resumed (they do not change what was trained);
`--resume` warns about any other flag and keeps the saved value.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from analysis.rule import DupeRule, implied
from orchestrator.flags import build, changed, flag_name, given
from orchestrator.data.scan import ASPECTS
from orchestrator.data.splits import SPLIT_MODES
from orchestrator.run.storage import parse_location
from trainers.hyp import DATA_MODES, Hyp


def _resources(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e.msg}): {text}") from None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and v > 0 for k, v in value.items()):
        raise argparse.ArgumentTypeError(f"must be a JSON object of resource name to a positive "
                                         f"amount, e.g. '{{\"trainer_node\": 1}}', got {text}")
    if {"CPU", "GPU"} & set(value):
        raise argparse.ArgumentTypeError("CPU and GPU have their own flags: --cpus-per-training "
                                         "and --gpus-per-training")
    return value


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


# px: below 8 the small CNN's pooling leaves nothing; above 1024 one image is 3 MB decoded,
# and a cache of such images outgrows a machine's memory long before a model needs them
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024


def opt(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class ScanSettings:
    """How a dataset becomes the training cache (`dupes run`, `sanity` and `tune` alike)."""

    image_size: int | None = opt(None, "training size in px (images are resized to a "
                                 "square); none: the images' median size, at most 128 px with "
                                 "GPUs, 64 px without (the small CNN's sizes)",
                                 min=MIN_IMAGE_SIZE, max=MAX_IMAGE_SIZE)
    min_per_class: int | None = opt(None, "drop classes with fewer usable images than this "
                                    "(reported); none: a class with fewer than 2 is an error",
                                    gt=0)
    aspect: str = opt("auto", "how an image that is not square becomes square: pad keeps all of "
                      "it and its proportions (padded with its border's mean colour), crop "
                      "keeps the centre, squash stretches it; auto: squash for frozen "
                      "features (pretrained backbones learnt from aspect-jittered crops, never "
                      "padding: +9 pt held-out accuracy on the photos case, BENCHMARKS.md), "
                      "else pad", choices=("auto", *ASPECTS))


@dataclass
class RunConfig:
    data_dir: str                      # the dataset: an absolute path or a bucket URI
    run_dir: str                       # the run's folder on the machine that wrote this file
    storage: str | None = None         # a bucket run's URI (run_dir is then a local mirror)
    repeats: int = opt(10, "swap-split repeats; each trains 2 models, so every image gets "
                       "this many held-out predictions", gt=0)
    seed: int = opt(0, "split seed: repeat r uses a seed derived from (seed, r)")
    train_seed: int = opt(1, "training randomness seed, independent of the split")
    split: str = opt("fresh", "fresh: a new 50:50 split every repeat; fixed: the same split "
                     "every repeat, as in the original method", choices=SPLIT_MODES)
    sanity: bool = opt(True, "preflight checks before the trainings: overfit one batch, beat "
                       "chance on held-out images, input statistics", resume=True)
    epoch_losses: int = opt(5, "predict the held-out half every K-th epoch and at the end, and "
                            "keep its losses and margins in RUN/epochs/ for training-dynamics "
                            "scores and the live top losses; 1 = every epoch (each costs about "
                            "a third of a training epoch), 0 = off", min=0, metavar="K")
    budget: float | None = opt(None, "wall time for the whole pass, e.g. 10m, 2h, 1h30m: the "
                               "epochs are chosen to fit it from a short training measured "
                               "before the pass (shown with the plan), and a budget nothing "
                               "fits stops the pass before any training; none: --epochs as "
                               "given", parse=parse_duration, resume=True,
                               metavar="DURATION")
    over_budget: str = opt("shrink", "when the trainings run slower than planned (a busier "
                           "machine) and --budget will be missed by more than 10%: shrink "
                           "drops the last whole repeats (a resume trains them later), warn "
                           "says so once and goes on", choices=("shrink", "warn"), resume=True)
    ledger: str | None = opt(None, "ledger of labels a technician confirmed (a path or a "
                             "bucket URI); none: dupes-ledger.csv beside the run directory",
                             parse=parse_location, resume=True)
    cpus_per_training: float | None = opt(None, "CPUs per training, fractions allowed; none: 1 "
                                          "on CPU clusters", gt=0, resume=True)
    gpus_per_training: float | None = opt(None, "GPUs per training, fractions allowed, e.g. 0.5 "
                                          "packs two per GPU; none: 1 when the cluster has "
                                          "GPUs, else 0", min=0, resume=True)
    resources_per_training: dict = opt(
        None, "custom Ray resources each training asks for, e.g. '{\"trainer_node\": 1}' to "
        "keep trainings on nodes started with that resource and off the head node, whose CPUs "
        "drive and write the run", parse=_resources, resume=True, metavar="JSON")
    data_mode: str = opt("auto", "how a training sees the image cache: resident (all of it "
                         "on the device, the fast path), streamed (read from the shards a few "
                         "at a time, for caches larger than the device's memory), or auto: "
                         "resident when it fits in half the memory a training has; in frozen "
                         "mode the same for a head's half of the embeddings (streamed: 16,384 "
                         "rows at a time)",
                         choices=DATA_MODES, resume=True)
    max_failures: int = opt(2, "times Ray Train restarts crashed workers before giving up",
                            min=0, resume=True)
    address: str | None = opt(None, "Ray cluster address; none: RAY_ADDRESS, else a private "
                              "local Ray", resume=True)
    config: str = ""                   # the --config file the hyperparameters came from
    # the hyperparameters set by a flag, the --config file or the demo; the plan chooses the
    # others from the data and the machine (orchestrator.pipeline.plan.sized_defaults)
    hyp_set: list = field(default_factory=list)
    hyp_chosen: dict = field(default_factory=dict)  # {hyperparameter: what was chosen, why}
    # frozen mode: which backbone, size and weights (name, sha256) made the features
    embedding: dict = field(default_factory=dict)
    scan: ScanSettings = field(default_factory=ScanSettings)
    rule: DupeRule = field(default_factory=DupeRule)
    hyp: Hyp = field(default_factory=Hyp)

    def __post_init__(self):
        if self.resources_per_training is None:
            self.resources_per_training = {}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """From config.json, including those written before the rule and hyperparameters
        were typed (flat `threshold`, `min_ratio`, `ignore_confirmed`, `image_size`, ...)."""
        d = dict(d)
        rule = d.pop("rule", None) or {k: d[k] for k in ("threshold", "min_ratio",
                                                         "ignore_confirmed") if k in d}
        rule = {"select": "votes", **rule}  # a run from before --select was chosen by votes
        scan = d.pop("scan", None) or {k: d[k] for k in ("image_size", "min_per_class") if k in d}
        known = {f.name for f in fields(cls)} - {"scan", "rule", "hyp"}
        hyp = d.get("hyp") or {}
        if isinstance(hyp, dict) and hyp and "head_prune" not in hyp:
            hyp = {**hyp, "head_prune": False}  # recorded before heads were pruned: as trained
        return cls(**{k: v for k, v in d.items() if k in known}, scan=ScanSettings(**scan),
                   rule=DupeRule(**rule),
                   hyp=Hyp.from_dict(hyp) if isinstance(hyp, dict) else hyp)


def resumable(name: str) -> bool:
    """Whether `--resume` may change this field of RunConfig (rule fields always may)."""
    meta = {f.name: f.metadata for f in fields(RunConfig)}
    return bool(meta.get(name, {}).get("resume"))


def read_hyp_file(path: Path) -> dict:
    """Hyperparameters from best.json (its "hyp") or a flat JSON object of them."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--config {path}: cannot read it as JSON ({e})") from None
    hyp = data.get("hyp", data) if isinstance(data, dict) else None
    if not isinstance(hyp, dict):
        raise ValueError(f"--config {path} holds no hyperparameters (a JSON object, or "
                         "best.json of `dupes tune`)")
    try:
        Hyp.from_dict({**Hyp().to_dict(), **hyp})  # names checked, the valid ones listed
    except (TypeError, ValueError) as e:
        raise ValueError(f"--config {path}: {e}") from None
    return hyp


def hyp_from_args(args: argparse.Namespace, base: Hyp | None = None) -> Hyp:
    """Hyperparameters: `base` (the defaults), then the --config file's, then the flags."""
    return replace(base or Hyp(), **_hyp_given(args))


def _hyp_given(args: argparse.Namespace) -> dict:
    file_hyp = read_hyp_file(args.config) if getattr(args, "config", None) else {}
    return {**file_hyp, **given(args, Hyp)}


def scan_from_args(args: argparse.Namespace) -> ScanSettings:
    return build(ScanSettings, args)


def new_config(args: argparse.Namespace, *, data_dir: str, run_dir: str,
               hyp: Hyp | None = None) -> RunConfig:
    """A new run's configuration: every default, then the flags given."""

    hyp, hyp_set = hyp_and_given(args, hyp)
    return build(RunConfig, args, data_dir=data_dir, run_dir=run_dir,
                 config=str(getattr(args, "config", None) or ""), scan=scan_from_args(args),
                 rule=DupeRule(**implied(given(args, DupeRule))), hyp=hyp,
                 hyp_set=hyp_set)


def hyp_and_given(args: argparse.Namespace, base: Hyp | None = None) -> tuple[Hyp, list[str]]:
    """The hyperparameters (`base`, the --config file's, the flags), and the names of those
    that were set by any of them: the settings path chooses the rest from the data."""
    base, given_hyp = base or Hyp(), _hyp_given(args)  # the --config file read once
    chosen = set(given_hyp) | {k for k, v in base.to_dict().items() if v != getattr(Hyp(), k)}
    return replace(base, **given_hyp), sorted(chosen)


def resume_config(saved: RunConfig, args: argparse.Namespace, *, run_dir: str,
                  trained: bool = True) -> tuple[RunConfig, dict, dict]:
    """A resumed run's configuration: the saved one, with the flags that may change on a
    resume applied (resources, failures, sanity, the dupe rule, the ledger). Returns it with
    {flag: (saved, given)} of what was applied and of what was ignored (anything that would
    change what was trained: the splits, the scan, the hyperparameters). A run that has
    trained nothing yet (it stopped after its scan: weights that could not be had, a mode
    that needs them) takes new hyperparameters too: the scan is kept, nothing is mixed."""
    top = changed(saved, args)
    own = {k: v for k, v in top.items() if resumable(k)}
    rule = changed(saved.rule, args)
    hyp_given = changed(saved.hyp, args)
    hyp = {} if trained else hyp_given
    left = {**{k: v for k, v in top.items() if k not in own}, **changed(saved.scan, args),
            **{k: v for k, v in hyp_given.items() if k not in hyp}}
    ignored = {flag_name(k): v for k, v in left.items()}
    if getattr(args, "config", None):
        ignored["--config"] = (saved.config or None, str(args.config))
    cfg = replace(saved, run_dir=run_dir, **{k: new for k, (_, new) in own.items()},
                  hyp=replace(saved.hyp, **{k: new for k, (_, new) in hyp.items()}),
                  rule=replace(saved.rule, **implied({k: new for k, (_, new) in rule.items()})))
    return cfg, {flag_name(k): v for k, v in {**own, **hyp, **rule}.items()}, ignored
