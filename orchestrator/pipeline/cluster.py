"""The Ray cluster a pass runs on: connecting or starting it, planning trainings onto its
resources, and checking that every node sees the run directory."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.config import RunConfig
from orchestrator.errors import ResourceError, StorageError
from orchestrator.run.storage import local_path


# One logical CPU on a local Ray is left to the Ray Data writer: with every CPU held by a
# training worker, Ray Data's write tasks would wait forever (measured: a hang).
WRITER_CPUS = 1


def init_ray(address: str | None = None, notice=None) -> bool:
    """Connect to a cluster (`--address`, `RAY_ADDRESS`) or start a private local Ray; True if
    started. `notice(text)` is told when a running cluster is not joined."""
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # Ray Data warns "no available CPUs, the job will hang" whenever the trainings hold
    # theirs, although WRITER_CPUS keeps one free for it, and logs every write: noise here.
    # Ray Data sets its logger's level itself, from RAY_DATA_LOG_LEVEL (a user's wins).
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    for name in ("ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    running = running_cluster()
    if running and notice is not None:
        notice(f"a Ray cluster started with `ray start` is running on this machine ({running});"
               " this run starts a private one of its own. To run on that cluster instead, "
               "pass --address auto")
    # A private local cluster, started even when `ray start` is up here (address="local":
    # joining a cluster happens on purpose, with --address), on loopback only, and without a
    # dashboard: nothing outside this process connects to it. Worker errors reach the driver
    # through the board, with their tracebacks.
    with loopback_only():
        try:
            ray.init(address="local", num_cpus=(os.cpu_count() or 1) + WRITER_CPUS,
                     include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception on a failed start
            raise ResourceError(f"a private local Ray could not start ({e}). Its logs are in "
                                "/tmp/ray/session_latest/logs; a machine short of memory or "
                                "CPU, or a full /tmp, are the usual causes. Try again, or "
                                "pass --address to use a running cluster") from None
    return True


# Ray gives a node the machine's network address, and its servers (GCS, raylet, object
# manager, workers, agents) listen there and on every interface. Told that this machine is
# no cluster (what Ray does by default on macOS and Windows), it uses 127.0.0.1 instead, and
# every server of the node listens on loopback only (tests/test_cluster.py lists them). The
# setting is read by the driver when it starts the node, and by the node's processes, which
# inherit the environment at their start.
NO_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_only():
    old = os.environ.get(NO_CLUSTER_ENV)
    os.environ[NO_CLUSTER_ENV] = "0"
    try:
        from ray._private import ray_constants  # read once, when ray was imported
        old_flag = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False
    except (ImportError, AttributeError):  # another Ray: the environment alone must do
        ray_constants = old_flag = None
    try:
        yield
    finally:
        if ray_constants is not None:
            ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old is None:
            os.environ.pop(NO_CLUSTER_ENV, None)
        else:
            os.environ[NO_CLUSTER_ENV] = old


def running_cluster() -> str | None:
    """The address of a cluster `ray start` left running on this machine, or None."""
    try:
        from ray._private.utils import read_ray_address
        return read_ray_address(None) or None
    except Exception:  # noqa: BLE001 - a private helper of Ray's: its absence is not an error
        return None


def storage_error(run_dir: Path, unseen: list[str]) -> StorageError:
    return StorageError(
        f"the run directory {run_dir} is not visible from {len(unseen)} node(s) of the cluster "
        f"({', '.join(unseen[:5])}{', ...' if len(unseen) > 5 else ''}): a multi-node run keeps "
        "its run directory on storage that every node mounts at the same path (NFS, EFS, "
        "Filestore), or in a bucket: pass --out /shared/path or --out s3://bucket/runs/NAME. "
        "The dataset itself only needs to be readable where `dupes run` starts.")


def nodes_without(path: str) -> list[str]:
    """The alive nodes (address and id) on which `path` does not exist; [] on one node."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return []

    @ray.remote(num_cpus=0)
    def sees(p: str) -> bool:
        return os.path.exists(p)

    checks = {n["NodeManagerAddress"] + f" ({n['NodeID'][:8]})": sees.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
    ).remote(path) for n in nodes}
    return [name for name, ok in zip(checks, ray.get(list(checks.values()), timeout=120))
            if not ok]


def check_shared_storage(run_dir: Path) -> None:
    """On a multi-node cluster, prove that every alive node sees the run directory (Ray
    Train keeps its run state there, and the scan writes the image cache), before any
    training is spent."""
    marker = Path(run_dir).resolve() / f".storage-check-{uuid.uuid4().hex[:8]}"
    marker.write_text("dupes\n")
    try:
        unseen = nodes_without(str(marker))
    finally:
        marker.unlink(missing_ok=True)
    if unseen:
        raise storage_error(Path(run_dir), unseen)


def scan_task_options(data) -> dict:
    """Ray options for the scan's tasks: anywhere when every node reads the dataset (a bucket,
    a shared mount), else kept on the driver's node, the one that surely does."""
    local = local_path(data, "")
    if local is None or not nodes_without(str(local)):
        return {}
    return {"scheduling_strategy": on_this_node()}


class Slots(NamedTuple):
    """How many trainings run at once, and what each one gets."""

    slots: int
    cpus: float      # per training
    gpus: float      # per training


def plan_resources(cfg: RunConfig, cluster: dict, n_todo: int) -> Slots:
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
    return Slots(max(1, min(slots, n_todo)), float(cpt), float(gpt))


def like_a_training(fn, *args, cpus: float, gpus: float, resources: dict | None = None,
                    **kwargs):
    """`fn(*args, **kwargs)` run once as a Ray task with one training's resources, so it runs
    where a training would (a GPU worker of a GPU cluster, not its CPU head) and measures what
    a training gets; returns its result."""
    task = ray.remote(fn).options(num_cpus=cpus, num_gpus=gpus, resources=resources or None,
                                  max_retries=0)
    return ray.get(task.remote(*args, **kwargs))


def alive_nodes() -> int:
    """How many nodes the connected Ray has alive (at least 1)."""
    return max(1, sum(bool(n.get("Alive")) for n in ray.nodes()))


def on_this_node():
    """A scheduling strategy that keeps a task or actor on the driver's node."""
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


@contextlib.contextmanager
def ray_session(address: str | None, run, notice=None):
    """Ray for the scan and the trainings (connected, or a private local one stopped at the
    end), after proving that every node sees a local run directory; yields its timings."""
    t0 = time.perf_counter()
    started = init_ray(address, notice)
    timings = {"ray_init_s": time.perf_counter() - t0}
    try:
        if not run.on_bucket:  # a bucket is shared storage already
            check_shared_storage(run.path)
        yield timings
    finally:
        if started:
            ray.shutdown()
