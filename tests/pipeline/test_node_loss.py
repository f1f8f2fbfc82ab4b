"""A node lost mid-pass on a multi-node cluster simulated on one machine
(`ray.cluster_utils.Cluster`): the pass finishes on the nodes that are left."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest


from orchestrator.run import partitions
from tests.conftest import write_digit_dataset
from tests.pipeline.test_end_to_end import FAST, check_predictions

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    # Cluster() writes <RAY_TMPDIR>/ray/ray_current_cluster; a private, short folder (Ray's
    # socket paths must stay under 108 bytes)
    raytmp = tempfile.mkdtemp(prefix="dl", dir="/tmp")
    os.environ["RAY_TMPDIR"] = raytmp
    # After the loss, Ray Train first asks for a group of the old size and waits its start
    # timeout (60 s by default) before the elastic group restarts on what is left: the same
    # path in 10 s (the cluster's processes inherit this environment)
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "10"
    # the head drives the pass and writes it (1 CPU, no trainer_node); two trainer nodes
    # faster health checks: a killed node is declared dead in ~3 s instead of ~15-30 s
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": {"health_check_period_ms": 1000,
                                          "health_check_failure_threshold": 3}})
    nodes = [c.add_node(num_cpus=1, resources={"trainer_node": 1}) for _ in range(2)]
    c.wait_for_nodes()
    try:
        yield c, nodes
    finally:
        c.shutdown()
        os.environ.pop("RAY_TMPDIR", None)
        os.environ.pop("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", None)
        shutil.rmtree(raytmp, ignore_errors=True)


def board_nodes(address: str) -> set[str]:
    """The nodes hosting the pass's work-board actors (from the GCS: no dashboard needed)."""
    import ray

    from orchestrator.pipeline.driver import BOARD_NAMESPACE

    ray.init(address=address, logging_level="ERROR")
    try:
        boards = [ray.get_actor(a["name"], namespace=a["namespace"])
                  for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == BOARD_NAMESPACE and a["name"].startswith("board-")]
        return set(ray.get([b.node.remote() for b in boards]))
    finally:
        ray.shutdown()


def test_pass_finishes_after_a_node_is_removed(cluster, tmp_path):
    """Streamed: each worker reads the cache's shards itself, the path a lost node can
    break. (A resident pass recovers through the same queue and restart; a killed worker
    in resident mode is tested in test_end_to_end; this one costs about 60 s.)"""
    c, (node_a, node_b) = cluster
    mode = "streamed"
    data = write_digit_dataset(tmp_path / "data", classes=(0, 1, 7), per_class=30)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "orchestrator.cli.main", "run", str(data), "--out", str(run),
           "--address", c.address, "--resources-per-training", '{"trainer_node": 1}',
           "--repeats", "4", "--no-sanity", *FAST, "--epochs", "60", "--data-mode", mode]
    env = dict(os.environ)
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 300
        while not partitions.completed_trainings(run) and time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.5)
        assert partitions.completed_trainings(run), "no training finished in time"
        progress = json.loads((run / "progress.json").read_text())
        assert sum(t.get("status") == "running" for t in progress["trainings"]) >= 1
        before = {t["worker"] for t in progress["trainings"] if t.get("worker")}
        # the board owns finished results until they are written: it must sit on the
        # driver's (head) node, never on a node that can be lost
        assert board_nodes(c.address) == {c.head_node.node_id}
        c.remove_node(node_b, allow_graceful=False)  # SIGKILL: raylet and its workers
        assert proc.wait(timeout=500) == 0, (tmp_path / "run.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    check_predictions(run, 90, 4)  # every sample exactly 4 predictions, none twice
    assert {json.loads(p.read_text())["data_mode"]
            for p in (run / "trainings").glob("*.json")} == {mode}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_trainings"] == 8 and summary["n_trainings_failed"] == 0
    workers = {json.loads(p.read_text())["worker"]
               for p in (run / "trainings").glob("*.json")}
    # the rest was trained by the group Ray Train restarted on the node left: workers that
    # did not exist before the kill (the killed node's worker may not have finished any)
    assert workers - before, (workers, before)
