"""The Ray driver of a dupes pass: scan, split, one Ray Train run, Ray Data writes.

Launch cost is paid once: a single Ray Train run with one worker per slot, whose workers take
(repeat, fold) trainings from a board actor. The driver consumes finished trainings in
completion order and streams each one's held-out predictions into Parquet with Ray Data.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from orchestrator import rundir
from orchestrator.config import RunConfig
from orchestrator.scan import scan_dataset
from orchestrator.splits import make_splits
from orchestrator.storage import RemoteRun, StorageError

class ResourceError(ValueError):
    """The cluster cannot hold one training as asked; the message says which flag to change."""


# One logical CPU on a local Ray is left to the Ray Data writer: with every CPU held by a
# training worker, Ray Data's write tasks would wait forever (measured: a hang).
WRITER_CPUS = 1


@dataclass
class Prepared:
    index: pd.DataFrame
    classes: list[str]
    images: np.ndarray
    folds: np.ndarray            # repeats x N, int8
    timings: dict = field(default_factory=dict)


def prepare(cfg: RunConfig, console: Console) -> Prepared:
    """Scan and split once; on a resumed run, load what the first attempt wrote."""
    run = cfg.run_path
    index_p, cache_p, splits_p = run / "index.parquet", run / "cache" / "images.npy", \
        run / "splits.parquet"
    t0 = time.perf_counter()
    if index_p.exists() and cache_p.exists() and splits_p.exists():
        index = pd.read_parquet(index_p)
        meta = rundir.read_json(run / "classes.json")
        images = np.load(cache_p, mmap_mode="r")
        splits = pd.read_parquet(splits_p)
        console.print(f"loaded {len(index):,} images from {run} (scan and splits of the first "
                      "attempt)", highlight=False)
        classes, timings = meta["classes"], {"scan_s": time.perf_counter() - t0}
    else:
        scan = scan_dataset(cfg.data_dir, image_size=cfg.image_size,
                            min_per_class=cfg.min_per_class)
        (run / "cache").mkdir(parents=True, exist_ok=True)
        rundir.write_csv(run / "skipped.csv", scan.skipped)
        rundir.write_npy(cache_p, scan.images)
        rundir.write_json(run / "classes.json", {
            "classes": scan.classes, "image_size": int(scan.images.shape[1]),
            "channels": int(scan.images.shape[3]), "dropped_classes": scan.dropped_classes})
        rundir.write_parquet(index_p, scan.index)
        timings = {"scan_s": time.perf_counter() - t0}
        t1 = time.perf_counter()
        splits = make_splits(scan.index["label"].to_numpy(), repeats=cfg.repeats,
                             seed=cfg.seed, mode=cfg.split)
        rundir.write_parquet(splits_p, splits)
        timings["splits_s"] = time.perf_counter() - t1
        index, classes, images = scan.index, scan.classes, scan.images
        console.print(f"scanned {cfg.data_dir}: {len(index):,} images in {len(classes)} classes "
                      f"at {images.shape[1]}x{images.shape[2]}x{images.shape[3]}, "
                      f"{len(scan.skipped)} skipped (see {run / 'skipped.csv'})", highlight=False)
        for cls, n in scan.dropped_classes.items():
            console.print(f"[yellow]dropped class '{cls}' ({n} usable images)[/]")
    n = len(index)
    folds = np.empty((cfg.repeats, n), dtype=np.int8)
    folds[splits["repeat"].to_numpy(), splits["sample_id"].to_numpy()] = splits["fold"].to_numpy()
    return Prepared(index, classes, np.asarray(images), folds, timings)


def all_trainings(repeats: int) -> list[tuple[int, int]]:
    return [(r, f) for r in range(repeats) for f in (0, 1)]


def init_ray(address: str | None = None) -> bool:
    """Connect to a cluster (`--address`, `RAY_ADDRESS`) or start a local Ray; True if started."""
    import ray
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # Ray Data warns "no available CPUs, the job will hang" whenever the trainings hold
    # theirs, although WRITER_CPUS keeps one free for it: that warning is noise here.
    for name in ("ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    # A private local cluster: no dashboard (nothing will connect to it), and no token-auth
    # notice; worker errors reach the driver through the board, with their tracebacks.
    ray.init(num_cpus=(os.cpu_count() or 1) + WRITER_CPUS, include_dashboard=False,
             log_to_driver=False, logging_level=logging.ERROR)
    return True


def storage_error(run_dir: Path, unseen: list[str]) -> StorageError:
    return StorageError(
        f"the run directory {run_dir} is not visible from {len(unseen)} node(s) of the cluster "
        f"({', '.join(unseen[:5])}{', ...' if len(unseen) > 5 else ''}): a multi-node run keeps "
        "its run directory on storage that every node mounts at the same path (NFS, EFS, "
        "Filestore), or in a bucket: pass --out /shared/path or --out s3://bucket/runs/NAME. "
        "The dataset itself only needs to be readable where `dupes run` starts.")


def check_shared_storage(run_dir: Path) -> None:
    """On a multi-node cluster, prove that every alive node sees the run directory (Ray
    Train keeps its run state there), before any training is spent."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    marker = Path(run_dir).resolve() / f".storage-check-{uuid.uuid4().hex[:8]}"
    marker.write_text("dupes\n")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    try:
        checks = {n["NodeManagerAddress"] + f" ({n['NodeID'][:8]})": sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(str(marker)) for n in nodes}
        unseen = [name for name, ok in zip(checks, ray.get(list(checks.values()), timeout=120))
                  if not ok]
    finally:
        marker.unlink(missing_ok=True)
    if unseen:
        raise storage_error(Path(run_dir), unseen)


def plan_resources(cfg: RunConfig, cluster: dict, n_todo: int) -> tuple[int, float, float]:
    """(slots, CPUs per training, GPUs per training) for a cluster's total resources.

    GPUs are used whenever the cluster has them; on CPUs one logical CPU stays free for the
    Ray Data writer.
    """
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    gpt = cfg.gpus_per_training
    if gpt is None:
        gpt = 1.0 if gpus >= 1 else 0.0
    if gpt > 0:
        if gpus < gpt:
            raise ResourceError(f"each training asks for {gpt} GPU but the cluster has {gpus:g}: "
                               "lower --gpus-per-training or pass --gpus-per-training 0")
        slots = int(math.floor(gpus / gpt + 1e-9))
        cpt = cfg.cpus_per_training or max(1.0, math.floor((cpus - WRITER_CPUS) / slots))
    else:
        cpt = cfg.cpus_per_training or 1.0
        slots = int(math.floor((cpus - WRITER_CPUS) / cpt + 1e-9))
    if slots < 1:
        raise ResourceError(f"the cluster has {cpus:g} CPUs; each training asks for {cpt:g} and "
                           f"{WRITER_CPUS} stays free for writing: lower --cpus-per-training")
    for name, amount in (cfg.resources_per_training or {}).items():
        have = float(cluster.get(name, 0))
        if have < amount:
            raise ResourceError(f"each training asks for {amount:g} of resource {name!r} but "
                               f"the cluster has {have:g}: start nodes with "
                               f"`ray start --resources='{{\"{name}\": N}}'` (or the node type's "
                               "resources in cluster.yaml), or drop --resources-per-training")
        slots = min(slots, int(math.floor(have / amount + 1e-9)))
    return max(1, min(slots, n_todo)), float(cpt), float(gpt)


BOARD_NAMESPACE = "dupes"  # the board is named there, so a cluster's tools can find it
NO_RESIZE_S = 7 * 24 * 3600.0  # grow the worker group only when it restarts anyway


LIVE_SHEET_S = 30.0  # how often sheets/live_top_losses.png is redrawn while training


def live_sheet(run_dir: Path, state: dict, prep: Prepared, *, tiles: int = 24) -> None:
    """Draw the running trainings' highest held-out losses of their latest epoch as a
    contact sheet (RUN/sheets/live_top_losses.png), from the image cache in memory, so
    the images that fight their label can be looked at while the models still learn."""
    from PIL import Image

    from analysis.sheets import contact_sheet
    from orchestrator.progress import current_top

    rows = current_top(state, tiles)
    if not rows:
        return
    label = prep.index["label"].to_numpy()
    images = []
    for _, sid, _ in rows:
        img = prep.images[sid]
        images.append(Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img))
    captions = [[prep.index["relpath"].iat[sid][-26:], f"given {prep.classes[label[sid]]}",
                 f"loss {loss:.2f} r{r}f{f} ep {state[(r, f)].get('epoch', '?')}"]
                for loss, sid, (r, f) in rows]
    sheet = contact_sheet(images, captions, title="highest held-out losses now (live)")
    (run_dir / "sheets").mkdir(exist_ok=True)
    rundir.write_png(run_dir / "sheets" / "live_top_losses.png", sheet)


def save_progress(run_dir: Path, state: dict, *, running: bool) -> None:
    """Where every training stands, for `dupes status` on any machine that sees the run."""
    rundir.write_json(run_dir / "progress.json", {
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "running": running,
        "trainings": [{"repeat": r, "fold": f, **{k: v for k, v in p.items() if k != "error"},
                       **({"error": p["error"].strip().splitlines()[-1][:300]}
                          if "error" in p else {})} for (r, f), p in sorted(state.items())]})


def train_storage(cfg: RunConfig) -> dict:
    """Where Ray Train keeps its run state: RUN/ray, in the bucket for a bucket run (every
    node reaches it there, as Ray Train wants on a multi-node cluster)."""
    if cfg.storage:
        from orchestrator.storage import join, resolve
        fs, base = resolve(cfg.storage)
        return {"storage_path": join(base, "ray"), "storage_filesystem": fs}
    return {"storage_path": str((cfg.run_path / "ray").resolve())}


def on_this_node():
    """A scheduling strategy that keeps a task or actor on the driver's node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def write_partition(run_dir: Path, item: tuple[int, int], refs: list, kind: str) -> None:
    """Stream one training's table into its Parquet partition via Ray Data: a temp folder,
    renamed into place once every file is written."""
    import ray.data

    repeat, fold = item
    tmp = run_dir / kind / f".tmp-r{repeat}-f{fold}-{uuid.uuid4().hex[:8]}"
    # The write runs on the driver's node: the temp folder must land on the disk where the
    # driver renames it into place (on a multi-node cluster another node has another disk).
    ray.data.from_arrow_refs(refs).write_parquet(
        str(tmp), ray_remote_args={"scheduling_strategy": on_this_node()})
    rundir.commit_partition(tmp, run_dir, repeat, fold, kind=kind)


def write_training(run_dir: Path, item: tuple[int, int], refs: list, metrics: dict,
                   epoch_refs: list | None = None) -> None:
    """One finished training: its epochs (if recorded), then its predictions, whose
    partition marks the training done, then its metrics."""
    repeat, fold = item
    if epoch_refs:
        write_partition(run_dir, item, epoch_refs, rundir.EPOCHS)
    write_partition(run_dir, item, refs, rundir.PREDICTIONS)
    (run_dir / "trainings").mkdir(exist_ok=True)
    rundir.write_json(run_dir / "trainings" / f"r{repeat:02d}_f{fold}.json",
                      {"repeat": repeat, "fold": fold, **metrics})


class Uploads:
    """Best-effort uploads of a bucket run while it trains: a failed upload never stops the
    trainings (the local mirror keeps everything; the end of the pass, or `--resume`, uploads
    what is missing), it is reported once."""

    PROGRESS_S = 10.0  # progress.json to the bucket at most this often, for `dupes status`

    def __init__(self, remote: RemoteRun | None, console: Console):
        self.remote, self.console, self.warned, self.t_progress = remote, console, False, 0.0

    def _try(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            if not self.warned:
                self.warned = True
                self.console.print(f"[yellow]warning:[/] upload to {self.remote.uri} failed "
                                   f"({e}); the local mirror {self.remote.local} keeps every "
                                   "result, the end of the pass uploads them again")

    def training(self, item: tuple[int, int], epochs: bool) -> None:
        if self.remote is None:
            return
        r, f = item
        if epochs:
            self._try(self.remote.push_partition, rundir.EPOCHS, r, f)
        self._try(self.remote.push_partition, rundir.PREDICTIONS, r, f)
        self._try(self.remote.upload, f"trainings/r{r:02d}_f{f}.json")

    def progress(self, *, force: bool = False) -> None:
        if self.remote is not None and (force or time.time() - self.t_progress > self.PROGRESS_S):
            self.t_progress = time.time()
            self._try(self.remote.upload, "progress.json")


def run_trainings(cfg: RunConfig, prep: Prepared, todo: list[tuple[int, int]],
                  console: Console) -> dict:
    """Train every (repeat, fold) in `todo`; returns failures, slots and timings."""
    import ray
    from ray.train import FailureConfig, RunConfig as TrainRunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from orchestrator.board import Board
    from orchestrator.progress import RunProgress
    from orchestrator.worker import worker_loop

    run = cfg.run_path
    t0 = time.perf_counter()
    started = init_ray(cfg.address)
    timings = {"ray_init_s": time.perf_counter() - t0}
    try:
        import ray.data
        remote = RemoteRun(cfg.storage, run) if cfg.storage else None
        uploads = Uploads(remote, console)
        if remote is None:  # a bucket is shared storage; only the driver writes the mirror
            check_shared_storage(run)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        slots, cpt, gpt = plan_resources(cfg, ray.cluster_resources(), len(todo))
        console.print(f"{len(todo)} trainings on {slots} slot(s) of {cpt:g} CPU"
                      + (f" + {gpt:g} GPU" if gpt else "") + " each", highlight=False)
        # The board owns every finished training's results until they are written: it lives
        # on the driver's node, sharing the driver's fate (as Ray Train's own controller
        # does), so losing another node never loses finished trainings.
        board = Board.options(scheduling_strategy=on_this_node(), namespace=BOARD_NAMESPACE,
                              name=f"board-{uuid.uuid4().hex[:8]}").remote(todo)
        loop_config = {
            "board": board, "images": [ray.put(prep.images)], "folds": [ray.put(prep.folds)],
            "labels": prep.index["label"].to_numpy(), "hyp": cfg.hyp,
            "train_seed": cfg.train_seed, "threads": max(1, int(cpt)),
            "record_every": cfg.epoch_losses,
            "inject_failure": os.environ.get("DUPES_INJECT_FAILURE"),
        }
        resources = {"CPU": cpt, **({"GPU": gpt} if gpt else {}),
                     **(cfg.resources_per_training or {})}
        trainer = DataParallelTrainer(
            worker_loop, train_loop_config=loop_config,
            # Elastic: after a lost node the group restarts on what is left (down to one
            # slot) instead of waiting for a replacement; the board requeues what was lost.
            # It is not grown mid-pass (a resize restarts every training in flight).
            scaling_config=ScalingConfig(num_workers=(1, slots) if slots > 1 else 1,
                                         use_gpu=gpt > 0, resources_per_worker=resources,
                                         elastic_resize_monitor_interval_s=NO_RESIZE_S),
            # A fresh name per attempt: a reused name would make Ray Train restore the old
            # run; resuming is ours, from the prediction partitions already on disk.
            run_config=TrainRunConfig(
                name=f"pass-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
                **train_storage(cfg),
                failure_config=FailureConfig(max_failures=cfg.max_failures)))
        fit_error: list[BaseException] = []

        def fit():
            try:
                trainer.fit()
            except BaseException as e:  # recorded; the analysis runs on what finished
                fit_error.append(e)

        thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
        t_fit = time.perf_counter()
        thread.start()
        failures: dict[tuple[int, int], str] = {}
        t_first = t_last = None
        t_saved = t_sheet = 0.0
        names = dict(zip(prep.index["sample_id"].tolist(), prep.index["relpath"].tolist()))
        with RunProgress(console, todo, names=names) as progress:
            while True:
                alive = thread.is_alive()
                state, results, failed = ray.get(board.poll.remote())
                if t_first is None and any(p.get("status") for p in state.values()):
                    t_first = time.perf_counter()
                for item, refs, metrics, epoch_refs in results:
                    write_training(run, item, refs, metrics, epoch_refs)
                    uploads.training(item, bool(epoch_refs))
                    ray.get(board.written.remote(item))
                    state[item]["status"] = "done"
                    t_last = time.perf_counter()
                for item, error in failed:
                    failures[item] = error
                    t_last = time.perf_counter()
                progress.update(state)
                if time.time() - t_saved > 2 or not alive:  # for `dupes status RUN`
                    save_progress(run, state, running=alive)
                    uploads.progress(force=not alive)
                    t_saved = time.time()
                if time.time() - t_sheet > LIVE_SHEET_S and alive:
                    t_sheet = time.time()
                    try:  # a picture must never stop the trainings
                        live_sheet(run, state, prep)
                    except Exception as e:  # noqa: BLE001
                        console.print(f"[yellow]warning:[/] live sheet not drawn: {e}")
                if not alive:
                    break
                time.sleep(0.25)
        t_end = time.perf_counter()
        timings.update(trainings_s=t_end - t_fit,
                       train_launch_s=(t_first or t_end) - t_fit,
                       train_teardown_s=t_end - (t_last or t_end))
        if fit_error:
            failures[(-1, -1)] = f"{type(fit_error[0]).__name__}: {fit_error[0]}"
        return {"failures": failures, "slots": slots, "cpus_per_training": cpt,
                "gpus_per_training": gpt, "timings": timings}
    finally:
        if started:
            ray.shutdown()
