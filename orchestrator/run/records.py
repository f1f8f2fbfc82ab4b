"""What the run's JSON files hold, typed: the scan (`classes.json`), where each training
stands (`progress.json`, owned by the board while the pass runs) and the pass's summary
(`summary.json`). Each has one JSON form, read back by `from_dict`, so a field is renamed in
one place and older files still read."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum

Item = tuple[int, int]  # (repeat, fold)


def all_trainings(repeats: int) -> list[Item]:
    """Every (repeat, fold) of a pass of `repeats` swap splits."""
    return [(r, f) for r in range(repeats) for f in (0, 1)]


def _known(cls, d: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass(frozen=True)
class ScanInfo:
    """The scan's outcome beside the index: the classes and the cache's image shape."""

    classes: list[str]
    image_size: int = 0        # px, square
    channels: int = 0
    aspect: str = "pad"
    shards: int = 0            # shards of the image cache (0: a run of before the shards)
    dropped_classes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ScanInfo":
        return cls(**_known(cls, d))


class Status(str, Enum):
    """Where one training stands; a str, so progress.json holds the plain word."""

    PENDING = "pending"
    RUNNING = "running"
    WRITING = "writing"     # finished; its predictions are being committed
    DONE = "done"           # its prediction partition is committed
    FAILED = "failed"
    RETRYING = "retrying"   # its worker group restarted; it is queued again

    def __str__(self) -> str:
        return self.value


FINISHED = (Status.DONE, Status.FAILED)


@dataclass
class TrainingState:
    """One training's progress: the board's record while the pass runs, a row of
    progress.json after. `top` holds the live top held-out losses [(sample_id, loss)]."""

    status: Status = Status.PENDING
    worker: str | None = None
    start: float | None = None          # unix time it was handed out
    epoch: int | None = None            # epochs done
    epochs: int | None = None
    loss: float | None = None           # last training loss
    heldout_loss: float | None = None   # at the last recorded epoch
    top: list = field(default_factory=list)
    seconds: float | None = None
    train_accuracy: float | None = None
    heldout_accuracy: float | None = None
    n_heldout: int | None = None
    data_mode: str | None = None
    error: str | None = None            # the traceback of a failed training

    def __post_init__(self):
        self.status = Status(self.status)

    def to_dict(self, *, short_error: bool = False) -> dict:
        d = {k: v for k, v in asdict(self).items() if v is not None and k != "top"}
        d["status"] = str(self.status)
        if short_error and self.error:
            d["error"] = last_line(self.error, 300)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingState":
        known = _known(cls, d)
        return cls(**{**known, "status": Status(known.get("status", "pending"))})


def last_line(text: str, limit: int) -> str:
    """The last line of a traceback (what went wrong), cut to `limit` characters."""
    lines = text.strip().splitlines()
    return lines[-1][:limit] if lines else ""


@dataclass
class Summary:
    """What a pass did, written last as summary.json (its presence says the pass is over).
    `extra` holds what a caller adds (the demo's planted precision and recall, its review
    round); it is written beside the fields, flat."""

    data_dir: str
    run_dir: str
    n_samples: int
    n_classes: int
    n_trainings: int
    n_trainings_planned: int
    n_trainings_failed: int
    n_prediction_rows: int
    n_dupes: int
    threshold: str
    dupes_per_threshold: dict
    quality_warnings: list
    heldout_accuracy_mean: float
    compute_s: float
    slots: int
    timings: dict
    wall_s: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {**{k: v for k, v in d.items() if k != "extra"}, **d["extra"]}

    @classmethod
    def from_dict(cls, d: dict) -> "Summary":
        known = _known(cls, d)
        return cls(**known, extra={k: v for k, v in d.items() if k not in known})
