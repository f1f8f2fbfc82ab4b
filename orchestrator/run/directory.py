"""The run directory as one object: its layout, and where it lives.

A `Run` is opened or created by the location a user names: a folder, or a bucket URI. A bucket
run is worked on in a local mirror (`orchestrator.run.remote.RemoteRun`): every write is atomic on
disk first, then published (one PUT per file; a partition's files, then the marker that commits
them). Callers read and write through typed accessors and never ask where the run lives; only
this module and the storage layer know about buckets. File names have their home in
`orchestrator.run.rundir`.
"""
from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from orchestrator.config import RunConfig
from orchestrator.errors import RunError
from orchestrator.run import rundir, storage
from orchestrator.run import partitions
from orchestrator.run.files import RunFiles
from orchestrator.run.ledger import ledger_path
from orchestrator.run.lock import FolderLock
from orchestrator.run.records import Item, ScanInfo
from orchestrator.run.remote import RemoteRun, ShardStore
from trainers.shards import ShardedImages

# What a reader needs of a bucket run: `status` the progress files only (the markers say what
# is done), `report` everything but the image cache, `all` (a resume) everything.
NEEDS = {"status": {"config.json", "progress.json", "summary.json"}, "report": None,
         "all": None}
LEGACY_CACHE = "cache/images.npy"
DRIVER_LOCK = ".driver.lock"  # hidden: never uploaded, never read as a run file  # the one-file cache of runs made before the shards


class Run(RunFiles):
    """A run directory. `path` is where its files are on this machine (the run itself, or a
    bucket run's mirror); `location` is what the user named."""

    def __init__(self, location: Path | str, remote: RemoteRun | None = None):
        self.remote = remote
        self.location = remote.uri if remote else storage.absolute(location)
        self.path = remote.local if remote else Path(self.location)
        self._config: RunConfig | None = None
        self._t_progress = 0.0
        self._need = "all"
        self._made: bool | None = None  # by `create`: whether it made the folder
        self.on_upload_error: Callable[[Exception], None] | None = None

    def __repr__(self) -> str:
        return f"Run({self.location})"

    def __str__(self) -> str:
        return self.location

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(cls, location: Path | str) -> "Run":
        """A new run at `location`, which must not exist or must be an empty folder."""
        hint = (f"choose another --out, or continue that run with "
                f"`dupes run --resume {location}`")
        if storage.is_uri(location):
            remote = RemoteRun(str(location))
            if remote.exists():
                raise RunError(f"run directory {location} exists: {hint}")
            if storage.list_tree(remote.uri):  # as for a folder: a run never shares its
                # prefix, and `discard_unstarted` may then remove everything under it
                raise RunError(f"run directory {location} holds objects but no run: choose "
                               "an empty prefix for --out")
            shutil.rmtree(remote.local, ignore_errors=True)  # our cache of a run never begun
            run = cls(location, remote)
        else:
            path = Path(location)
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                what = "is a file" if not path.is_dir() else "exists and is not empty"
                raise RunError(f"run directory {path} {what}: {hint}")
            run = cls(path)
        run._made = not run.path.exists()
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    def discard_unstarted(self) -> bool:
        """Remove a run created here that stopped before its scan finished and decoded
        nothing (bad input, a failed start): it holds nothing to resume, and left in place it
        would block its own --out. True if it was removed."""
        if self._made is None or self.has_scan() or self.shard_store().names():
            return False
        if self.remote is not None:
            self.remote.delete_all()
            shutil.rmtree(self.path, ignore_errors=True)
        elif self._made:
            shutil.rmtree(self.path, ignore_errors=True)
        else:  # an empty folder the user gave: leave the folder, empty again
            for p in self.path.iterdir():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return True

    @classmethod
    def open(cls, location: Path | str, *, need: str = "report") -> "Run":
        """An existing run; a bucket run is brought into its mirror as far as `need` says
        ("status", "report" or "all")."""
        if need not in NEEDS:
            raise ValueError(f"need must be one of {sorted(NEEDS)}, got {need!r}")
        if storage.is_uri(location):
            remote = RemoteRun(str(location))
            remote.pull(cache=need == "all", only=NEEDS[need])
            run = cls(location, remote)
        else:
            run = cls(location)
        run._need = need
        if not (run.path / "config.json").is_file():
            raise RunError(f"{run.location} is not a run directory (no config.json): give a "
                           "run directory written by `dupes run`")
        return run

    def driver_lock(self) -> FolderLock:
        """Held by the one driver of this run (`dupes run`, a resume, the demo): a second one
        is refused, naming the first, before it writes anything."""
        return FolderLock(self.path, DRIVER_LOCK, refuse=lambda who: RunError(
            f"{self.location} is being run by {who}: wait for it to finish, or stop it "
            f"(Ctrl-C) and resume with `dupes run --resume {self.location}`"))

    @property
    def on_bucket(self) -> bool:
        return self.remote is not None

    # -- configuration and scan ------------------------------------------------------------
    def config(self) -> RunConfig:
        if self._config is None:
            self._config = RunConfig.from_dict(self._read_json("config.json"))
        return self._config

    def save_config(self, cfg: RunConfig) -> None:
        """config.json, recording where the run's files are on this machine (run_dir) and,
        for a bucket run, its URI (storage)."""
        cfg = dataclasses.replace(cfg, run_dir=str(self.path.resolve()),
                                  storage=self.remote.uri if self.remote else None)
        self._config = cfg
        self._write_json("config.json", cfg.to_dict(), publish=True)

    def has_scan(self) -> bool:
        """The scan is complete: the index (written last) and where its images live."""
        return self._exists("index.parquet") and self._exists("classes.json") and (
            self._exists("placement.parquet") or self._exists(LEGACY_CACHE))

    def has_splits(self) -> bool:
        return self._exists("splits.parquet")

    def shard_store(self) -> ShardStore:
        """Where the image cache's shards are written by any node and read by every one."""
        return ShardStore(storage.child(
            self.remote.uri if self.remote else self.path, "cache"))

    def save_cache(self, cache) -> None:
        """A scan's results (an `orchestrator.data.cache.Cache`); the index last: it marks the scan
        complete."""
        rundir.write_csv(self.path / "skipped.csv", cache.skipped)
        self._write_json("classes.json", ScanInfo(
            classes=cache.classes, image_size=cache.plan.size, channels=cache.plan.channels,
            aspect=cache.plan.aspect, shards=cache.n_shards,
            dropped_classes=cache.dropped_classes).to_dict())
        rundir.write_parquet(self.path / "placement.parquet", cache.placement)
        rundir.write_parquet(self.path / "index.parquet", cache.index)

    def scan_info(self) -> ScanInfo:
        return ScanInfo.from_dict(self._read_json("classes.json"))

    def placement(self) -> pd.DataFrame:
        if self._exists("placement.parquet"):
            return pd.read_parquet(self.path / "placement.parquet")
        n = len(self.index())  # a run of before the sharded cache: one shard, in order
        return pd.DataFrame({"sample_id": np.arange(n), "shard": np.zeros(n, np.int32),
                             "row": np.arange(n, dtype=np.int32)})

    def shard_names(self) -> list[str]:
        if not self._exists("placement.parquet"):
            return [LEGACY_CACHE.split("/")[-1]]
        return [rundir.shard_name(k) for k in range(self.scan_info().shards)]

    def images(self, *, local: bool = True):
        """The image cache as `trainers.data.ShardedImages`, memory-mapped (no pixel is read
        here); with `local=False` the shard names, to be located on another node."""
        store, names = self.shard_store(), self.shard_names()
        p = self.placement()
        return ShardedImages([store.local(n) for n in names] if local else names,
                             p["shard"].to_numpy(), p["row"].to_numpy())

    def save_splits(self, splits: pd.DataFrame) -> None:
        rundir.write_parquet(self.path / "splits.parquet", splits)

    def index(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "index.parquet")

    def classes(self) -> list[str]:
        return self.scan_info().classes

    def splits(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "splits.parquet")

    def ledger(self, override: Path | str | None = None) -> Path | str:
        return ledger_path(self.location, self.config().ledger, override)

    # -- trainings -------------------------------------------------------------------------
    def completed(self) -> set[Item]:
        """Trainings whose predictions are committed (for a bucket run read only for its
        status, the bucket's markers say so)."""
        if self.remote is not None and self._need == "status":
            return self.remote.committed()
        return partitions.completed_trainings(self.path)

    def drop_incomplete(self) -> list[tuple[Item, str]]:
        """Check every committed training against its split and remove those whose
        partitions are not complete and readable (a file truncated, deleted or replaced after
        the commit), so that they are trained again; returns [((repeat, fold), why)]."""
        done = self.completed() if self.has_splits() else set()
        if not done:
            return []
        dropped = partitions.incomplete(self.path, self.splits(), done)
        for (r, f), _ in dropped:
            for kind in partitions.PARTITION_KINDS:
                if self.remote is not None:  # uncommitted first: readers stop trusting it
                    self.remote.uncommit(kind, r, f)
                shutil.rmtree(partitions.partition_dir(self.path, r, f, kind=kind),
                              ignore_errors=True)
            (self.path / partitions.training_rel(r, f)).unlink(missing_ok=True)
        return dropped

    def clear_partial(self) -> tuple[int, int]:
        """Remove what interrupted writes left: (objects in the bucket, local folders and
        temp files). The driver's lock is held: no other process writes here now."""
        remote = self.remote.clear_partial() if self.remote is not None else 0
        temps = [p for d in (self.path, self.path / "cache", self.path / partitions.TRAININGS)
                 for p in d.glob(".*.tmp-*") if p.is_file()]
        for p in temps:  # a shard or a file cut short by a kill or a full disk
            p.unlink(missing_ok=True)
        return remote, partitions.clear_partial_writes(self.path) + len(temps)

    def commit_partition(self, kind: str, item: Item, write: Callable[[Path], None]) -> None:
        """`write(folder)` fills a temp folder, renamed into the partition once complete; a
        bucket run then uploads its files and the marker that commits them."""
        repeat, fold = item
        tmp = self.path / kind / f".tmp-r{repeat}-f{fold}-{uuid.uuid4().hex[:8]}"
        write(tmp)
        partitions.commit_partition(tmp, self.path, repeat, fold, kind=kind)
        if self.remote is not None:
            self._try(self.remote.push_partition, kind, repeat, fold)

    def write_training(self, item: Item, metrics: dict, predictions: Callable[[Path], None],
                       epochs: Callable[[Path], None] | None = None) -> None:
        """One finished training: its epochs (if recorded), then its predictions, whose
        partition marks the training done, then its metrics."""
        if epochs is not None:
            self.commit_partition(partitions.EPOCHS, item, epochs)
        self.commit_partition(partitions.PREDICTIONS, item, predictions)
        self._write_json(partitions.training_rel(*item), {"repeat": item[0], "fold": item[1],
                                                      **metrics}, publish=True)

    def training_metrics(self) -> dict[Item, dict]:
        return {(m["repeat"], m["fold"]): m for m in
                (rundir.read_json(p) for p in sorted(
                    (self.path / partitions.TRAININGS).glob("r*_f*.json")))}

    def train_storage(self) -> dict:
        """Where Ray Train keeps its run state: RUN/ray, in the bucket for a bucket run (every
        node reaches it there, as Ray Train wants on a multi-node cluster)."""
        if self.remote is not None:
            return {"storage_path": storage.join(self.remote.base, "ray"),
                    "storage_filesystem": self.remote.fs}
        return {"storage_path": str((self.path / "ray").resolve())}

    # -- predictions -----------------------------------------------------------------------
    def prediction_columns(self, **kw) -> dict[str, np.ndarray]:
        return partitions.read_prediction_columns(self.path, **kw)

    def predictions(self, columns: list[str] | None = None) -> pa.Table:
        return partitions.read_predictions(self.path, columns)

    def epoch_batches(self, columns: list[str] | None = None):
        return partitions.epoch_batches(self.path, columns=columns)

    def describe(self) -> str:
        """The run's location, and its mirror when it has one (for the last line of a pass)."""
        return self.location + (f"; local mirror {self.path}" if self.remote else "")
