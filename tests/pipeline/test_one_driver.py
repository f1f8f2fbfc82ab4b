"""One driver per run (a second is refused before it writes anything), and a driver stopped
by Ctrl-C says so at once in progress.json (`dupes status`)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from tests.conftest import tree_hash, write_digit_dataset

pytestmark = pytest.mark.ray


def test_a_second_driver_on_a_run_is_refused_naming_the_first(tmp_path, capsys):
    data = write_digit_dataset(tmp_path / "data", per_class=8)
    run = tmp_path / "run"
    assert main(["run", str(data), "--out", str(run), "--repeats", "1", "--epochs", "2",
                 "--no-sanity", "--epoch-losses", "0"]) == 0
    def files(): return {k: v for k, v in tree_hash(run).items() if k != ".driver.lock"}
    before = files()
    # another process holds the run, as a driver does while it runs
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; "
        "from orchestrator.run.directory import Run; "
        f"lock = Run.open({str(run)!r}).driver_lock().__enter__(); "
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main(["run", "--resume", str(run)]) == 2
        out = capsys.readouterr().out
        assert f"pid {holder.pid}" in out and "is being run by" in out, out
        assert "Traceback" not in out
        assert files() == before  # nothing written by the refused driver
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed): its lock went with it
    assert main(["run", "--resume", str(run)]) == 0


def interruptible() -> None:
    """In the child: Ctrl-C as in a terminal. A suite started in the background by a shell
    without job control inherits SIGINT ignored, and Python then keeps ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_status_says_stopped_at_once_after_ctrl_c(tmp_path):
    data = write_digit_dataset(tmp_path / "data", per_class=20)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", "run", str(data),
                             "--out", str(run), "--repeats", "4", "--epochs", "30",
                             "--no-sanity"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=interruptible)
    deadline = time.time() + 300
    while not (run / "progress.json").exists() and time.time() < deadline:
        time.sleep(0.5)
    assert (run / "progress.json").exists(), proc.stdout.read() if proc.poll() else "no progress"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    saved = json.loads((run / "progress.json").read_text())
    assert saved["running"] is False and "interrupted" in saved["stopped"]
    status = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "status", str(run)],
                            capture_output=True, text=True)
    assert "stopped: interrupted (Ctrl-C)" in status.stdout and "--resume" in status.stdout
    assert not any("running" == t["status"] for t in saved["trainings"])
