"""`ray job submit` against a real `ray start --head` on loopback (non-default ports)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import rundir
from orchestrator.cli import main
from tests.conftest import write_digit_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
DASHBOARD = 8275


@pytest.fixture
def ray_head(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    start = [RAY, "start", "--head", "--port=6390", f"--dashboard-port={DASHBOARD}",
             "--dashboard-host=127.0.0.1", "--ray-client-server-port=10011",
             "--node-manager-port=6391", "--object-manager-port=6392",
             "--min-worker-port=20000", "--max-worker-port=20200",
             "--dashboard-agent-listen-port=52400", "--metrics-export-port=8090",
             "--num-cpus=3", "--disable-usage-stats"]
    # token auth (on by default for local clusters): make sure a token exists on a new machine
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True,
                   timeout=60)
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=120)
    try:
        yield env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_job_submit_runs_dupes_unchanged(ray_head, tmp_path, capsys):
    data = write_digit_dataset(tmp_path / "data", classes=(0, 1, 7), per_class=30)
    run = tmp_path / "run"
    job = subprocess.run(
        [RAY, "job", "submit", f"--address=http://127.0.0.1:{DASHBOARD}",
         f"--working-dir={ROOT}", "--", sys.executable, "-m", "orchestrator.cli", "run",
         str(data), "--out", str(run), "--repeats", "2", "--epochs", "8", "--batch-size", "16",
         "--width", "8", "--no-flip", "--translate", "1"],
        env=ray_head, capture_output=True, text=True, timeout=400)
    logs = job.stdout + job.stderr
    assert job.returncode == 0, logs[-4000:]
    assert "succeeded" in logs.lower()
    # no terminal under a job: progress arrives as plain lines in the job's logs
    assert "training r00 f0 done" in logs and "training r01 f1 done" in logs
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_trainings"] == 4 and summary["n_prediction_rows"] == 2 * 90
    assert len(rundir.read_predictions(run)) == 180
    assert main(["status", str(run)]) == 0
    assert "4/4 trainings done, 0 failed" in capsys.readouterr().out
    assert json.loads((run / "progress.json").read_text())["running"] is False
