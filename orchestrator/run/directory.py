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
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from orchestrator.config import RunConfig
from orchestrator.errors import RunError, StorageError
from orchestrator.run import reading, rundir, storage
from orchestrator.run.ledger import ledger_path
from orchestrator.run.records import Item, ScanInfo, Summary, TrainingState
from orchestrator.run.remote import RemoteRun, ShardStore
from trainers.shards import ShardedImages

# What a reader needs of a bucket run: `status` the progress files only (the markers say what
# is done), `report` everything but the image cache, `all` (a resume) everything.
NEEDS = {"status": {"config.json", "progress.json", "summary.json"}, "report": None,
         "all": None}
PROGRESS_UPLOAD_S = 10.0  # progress.json goes to the bucket at most this often
LEGACY_CACHE = "cache/images.npy"  # the one-file cache of runs made before the shards


class Run:
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
            for rel in storage.list_tree(self.remote.uri):
                self.remote.fs.delete_file(self.remote._path(rel))
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

    @property
    def on_bucket(self) -> bool:
        return self.remote is not None

    # -- files by name (private: callers use the named accessors) ------------------------
    def path_of(self, name: str) -> Path:
        """Where one of the run's files is on this machine, to name it in a message or hand
        it to a writer (the HTML report); `name` must be one of `rundir.RUN_FILES`."""
        if name not in rundir.RUN_FILES:
            raise ValueError(f"not a file of a run: {name!r}; one of {sorted(rundir.RUN_FILES)}")
        return self.path / name

    def _exists(self, rel: str) -> bool:
        return (self.path / rel).exists()

    def _read_json(self, rel: str):
        return rundir.read_json(self.path / rel)

    def _write_json(self, rel: str, obj, *, publish: bool = False) -> None:
        (self.path / rel).parent.mkdir(parents=True, exist_ok=True)
        rundir.write_json(self.path / rel, obj)
        if publish:
            self.publish(rel)

    def publish(self, rel: str) -> None:
        """Upload one file of a bucket run's mirror (best effort: see `on_upload_error`)."""
        if self.remote is not None:
            self._try(self.remote.upload, rel)

    def _try(self, fn, *args) -> None:
        if self.on_upload_error is None:
            fn(*args)
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - the mirror keeps everything; push() retries
            self.on_upload_error(e)

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
        return rundir.completed_trainings(self.path)

    def drop_incomplete(self) -> list[tuple[Item, str]]:
        """Check every committed training against its split and remove those whose
        partitions are not complete and readable (a file truncated, deleted or replaced after
        the commit), so that they are trained again; returns [((repeat, fold), why)]."""
        if not self.has_splits():
            return []
        done = self.completed()
        if not done:
            return []
        splits = self.splits()
        key = splits["repeat"].to_numpy().astype(np.int64) * 2 + splits["fold"].to_numpy()
        order = np.lexsort((splits["sample_id"].to_numpy(), key))
        ids, key = splits["sample_id"].to_numpy()[order], key[order]
        dropped = []
        recorded = rundir.completed_trainings(self.path, kind=rundir.EPOCHS)
        for r, f in sorted(done):
            lo, hi = np.searchsorted(key, [r * 2 + f, r * 2 + f + 1])
            expected = ids[lo:hi]
            why = rundir.partition_problem(self.path, r, f, expected)
            if why is None and (r, f) in recorded:
                why = rundir.partition_problem(self.path, r, f, expected, kind=rundir.EPOCHS)
                why = why and f"its per-epoch records: {why}"
            if why is None:
                continue
            for kind in rundir.PARTITION_KINDS:
                if self.remote is not None:  # uncommitted first: readers stop trusting it
                    self.remote.uncommit(kind, r, f)
                shutil.rmtree(rundir.partition_dir(self.path, r, f, kind=kind),
                              ignore_errors=True)
            (self.path / rundir.training_rel(r, f)).unlink(missing_ok=True)
            dropped.append(((r, f), why))
        return dropped

    def clear_partial(self) -> tuple[int, int]:
        """Remove what interrupted writes left: (objects in the bucket, local folders)."""
        remote = self.remote.clear_partial() if self.remote is not None else 0
        return remote, rundir.clear_partial_writes(self.path)

    def commit_partition(self, kind: str, item: Item, write: Callable[[Path], None]) -> None:
        """`write(folder)` fills a temp folder, renamed into the partition once complete; a
        bucket run then uploads its files and the marker that commits them."""
        repeat, fold = item
        tmp = self.path / kind / f".tmp-r{repeat}-f{fold}-{uuid.uuid4().hex[:8]}"
        write(tmp)
        rundir.commit_partition(tmp, self.path, repeat, fold, kind=kind)
        if self.remote is not None:
            self._try(self.remote.push_partition, kind, repeat, fold)

    def write_training(self, item: Item, metrics: dict, predictions: Callable[[Path], None],
                       epochs: Callable[[Path], None] | None = None) -> None:
        """One finished training: its epochs (if recorded), then its predictions, whose
        partition marks the training done, then its metrics."""
        if epochs is not None:
            self.commit_partition(rundir.EPOCHS, item, epochs)
        self.commit_partition(rundir.PREDICTIONS, item, predictions)
        self._write_json(rundir.training_rel(*item), {"repeat": item[0], "fold": item[1],
                                                      **metrics}, publish=True)

    def training_metrics(self) -> dict[Item, dict]:
        return {(m["repeat"], m["fold"]): m for m in
                (rundir.read_json(p) for p in sorted(
                    (self.path / rundir.TRAININGS).glob("r*_f*.json")))}

    def train_storage(self) -> dict:
        """Where Ray Train keeps its run state: RUN/ray, in the bucket for a bucket run (every
        node reaches it there, as Ray Train wants on a multi-node cluster)."""
        if self.remote is not None:
            return {"storage_path": storage.join(self.remote.base, "ray"),
                    "storage_filesystem": self.remote.fs}
        return {"storage_path": str((self.path / "ray").resolve())}

    # -- predictions -----------------------------------------------------------------------
    def prediction_columns(self, **kw) -> dict[str, np.ndarray]:
        return rundir.read_prediction_columns(self.path, **kw)

    def predictions(self, columns: list[str] | None = None) -> pa.Table:
        return rundir.read_predictions(self.path, columns)

    def epoch_batches(self, columns: list[str] | None = None):
        return rundir.epoch_batches(self.path, columns=columns)

    # -- the plan, the sanity check, progress, failures and the end --------------------------
    def save_plan(self, plan: dict) -> None:
        self._write_json("plan.json", plan, publish=True)

    def plan(self) -> dict | None:
        return self._read_json("plan.json") if self._exists("plan.json") else None

    def save_sanity(self, verdict: dict) -> None:
        self._write_json("sanity.json", verdict)

    def sanity_passed(self) -> bool:
        return self._exists("sanity.json") and bool(self._read_json("sanity.json")["ok"])

    def save_progress(self, state: dict[Item, TrainingState], *, running: bool,
                      eta_s: float | None = None) -> None:
        """Where every training stands, for `dupes status` on any machine that sees the run."""
        self._write_json("progress.json", {
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "updated_unix": time.time(),
            "running": running, "eta_s": eta_s,
            "trainings": [{"repeat": r, "fold": f, **p.to_dict(short_error=True)}
                          for (r, f), p in sorted(state.items())]})
        if self.remote is not None and (not running or
                                        time.time() - self._t_progress > PROGRESS_UPLOAD_S):
            self._t_progress = time.time()
            self.publish("progress.json")

    def progress(self) -> tuple[dict, dict[Item, TrainingState]] | None:
        """progress.json: its header (updated, running, eta_s) and every training's state."""
        if not self._exists("progress.json"):
            return None
        saved = self._read_json("progress.json")
        return saved, {(t["repeat"], t["fold"]): TrainingState.from_dict(t)
                       for t in saved["trainings"]}

    def save_failures(self, rows: list[dict]) -> None:
        self._write_json("failures.json", rows)

    def save_analysis(self, analysis) -> None:
        """The vote table and the dupes (`analysis.run_analysis.Analysis`) as Parquet and CSV."""
        reading.write_analysis(self.path, analysis)

    def dupes(self, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.path / "dupes.parquet", columns=columns)

    def analysis(self, *, ledger: Path | str | None = None, **rule: object):
        """The run analysed from its files alone (no Ray): `reading.load_analysis`."""
        return reading.load_analysis(self, ledger=ledger, **rule)

    def top_losses(self, *, k: int, per_class: bool) -> pd.DataFrame:
        return reading.load_top_losses(self, k=k, per_class=per_class)

    def save_summary(self, summary: Summary) -> None:
        """summary.json; for a bucket run, then everything the bucket still lacks (the summary
        last: its presence says the pass is over)."""
        self._write_json("summary.json", summary.to_dict())
        self.push()

    def summary(self) -> Summary | None:
        return Summary.from_dict(self._read_json("summary.json")) \
            if self._exists("summary.json") else None

    def push(self) -> None:
        """Upload whatever the bucket still lacks (`summary.json` last); nothing locally."""
        if self.remote is None:
            return
        try:
            self.remote.push()
        except Exception as e:  # noqa: BLE001 - any pyarrow/network error: say how to retry
            raise StorageError(f"uploading the run to {self.location} failed: {e}. Every "
                               f"result is in the local mirror {self.path}; "
                               f"`dupes run --resume {self.location}` uploads what is missing"
                               ) from e

    def describe(self) -> str:
        """The run's location, and its mirror when it has one (for the last line of a pass)."""
        return self.location + (f"; local mirror {self.path}" if self.remote else "")
