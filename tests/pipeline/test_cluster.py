"""The README's one-machine cluster block, run as written; and what a private local Ray
exposes to the network (nothing: loopback only)."""
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


from orchestrator.run import partitions

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def readme_cluster_block() -> str:
    """The first bash block of the README's cluster section that starts a head node."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text[text.index("## From a laptop to a cluster"):],
                        flags=re.S)
    return next(b for b in blocks if "ray start --head" in b)


def test_the_readmes_cluster_commands_work_as_written():
    """`ray start` / `ray job submit -- dupes ...` / `dupes status` / `ray stop` verbatim, in a
    shell that has not activated the venv (the block does, as a user would)."""
    block = readme_cluster_block()
    assert "source .venv/bin/activate" in block and "dupes status" in block
    if not (ROOT / ".venv" / "bin" / "activate").exists():
        pytest.skip("the README's venv (.venv at the repository root) is not there")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VIRTUAL_ENV"))}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)
    run = ROOT / "runs" / "on-ray"
    for attempt in range(2):
        subprocess.run(["rm", "-rf", str(run)], check=True)
        try:
            shell = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=ROOT,
                                   env=env, capture_output=True, text=True, timeout=500)
        finally:
            subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120, env=env)
        logs = shell.stdout + shell.stderr
        # Ray's job server waits 10 s for the head's agent after `ray start`; on a loaded
        # machine it can take longer ("No available agent ... try again later"): as a user
        # would, try once more
        if "No available agent" not in logs:
            break
    try:
        assert shell.returncode == 0, logs[-5000:]
        assert "succeeded" in logs.lower()
        # no terminal under a job: progress arrives as plain lines in the job's logs
        assert "training r00 f0 done" in logs and "training r01 f1 done" in logs
        assert "4/4 trainings done, 0 failed" in logs  # `dupes status`, from the shell
        summary = json.loads((run / "run" / "summary.json").read_text())
        assert summary["n_trainings"] == 4 and summary["n_prediction_rows"] == 2 * 1797
        assert len(partitions.read_predictions(run / "run")) == 2 * 1797
        assert json.loads((run / "run" / "progress.json").read_text())["running"] is False
    finally:
        subprocess.run(["rm", "-rf", str(run)], check=True)


def loopback(ip: str) -> bool:
    """127.0.0.1, ::1, or ::ffff:127.0.0.1 (a dual-stack socket bound to IPv4 loopback)."""
    addr = ipaddress.ip_address(ip)
    return addr.is_loopback or bool(getattr(addr, "ipv4_mapped", None)
                                    and addr.ipv4_mapped.is_loopback)


@pytest.fixture
def ray_start_head():
    """A cluster started with `ray start --head` on this machine (non-default ports)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True,
                   timeout=60)
    subprocess.run([RAY, "start", "--head", "--port=6390", "--dashboard-port=8275",
                    "--dashboard-host=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=120)
    try:
        yield
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_a_private_ray_listens_on_loopback_only_and_is_chosen_on_purpose(ray_start_head):
    """With `ray start` up on the machine, a plain run neither crashes on Ray's "num_cpus
    must not be provided" nor joins that cluster: it starts its own, says how to join the
    other, and every listening socket of its processes is on 127.0.0.1 (or ::1)."""
    import ray

    from orchestrator.pipeline.cluster import init_ray

    ray.shutdown()
    notices = []
    assert init_ray(None, notices.append)
    try:
        import psutil  # Ray's dependency (importable once ray is)

        assert len(notices) == 1 and "--address auto" in notices[0], notices
        assert ray.cluster_resources()["CPU"] >= 2  # its own, not the 1-CPU head

        @ray.remote
        def touch() -> int:  # start workers too: workers listen as well
            return os.getpid()

        ray.get([touch.remote() for _ in range(2)])
        listening = []
        for p in [psutil.Process()] + psutil.Process().children(recursive=True):
            try:
                listening += [(p.name(), c.laddr.ip, c.laddr.port) for c in
                              p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            except psutil.NoSuchProcess:
                continue
        assert len(listening) >= 3, listening  # GCS, raylet, object manager at least
        exposed = [s for s in listening if not loopback(s[1])]
        assert not exposed, exposed
    finally:
        ray.shutdown()
