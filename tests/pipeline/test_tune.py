"""Ray Tune searches on a real local Ray: ASHA, PBT, resume, and best.json feeding a run."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from orchestrator.cli.main import main
from tests.conftest import write_digit_dataset

pytestmark = pytest.mark.slow
TINY = ["--batch-size", "16", "--width", "8", "--no-flip", "--translate", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_digit_dataset(tmp_path_factory.mktemp("tune") / "data", classes=(0, 1, 7),
                               per_class=30)


def write_space(path, **space):
    path.write_text(json.dumps(space))
    return path


def test_asha_stops_bad_trials_and_best_json_feeds_a_run(data, tmp_path):
    space = write_space(tmp_path / "space.json", lr={"loguniform": [1e-5, 0.5]},
                        epochs={"choice": [8]}, mixup={"choice": [0.0, 0.2]})
    out = tmp_path / "tune"
    assert main(["tune", str(data), "--out", str(out), "--trials", "6", "--space", str(space),
                 "--grace-period", "1", "--max-concurrent", "2", *TINY]) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 6 and (trials["status"] != "error").all()
    assert (trials["status"] == "stopped early").any(), trials[["status", "epochs_run", "lr"]]
    assert (trials.loc[trials["status"] == "stopped early", "epochs_run"] < 8).all()
    best = json.loads((out / "best.json").read_text())
    assert best["metric"] == "heldout_loss"
    assert best["value"] == pytest.approx(trials["best_heldout_loss"].min())
    assert best["hyp"]["lr"] == pytest.approx(best["tuned"]["lr"]) and best["hyp"]["width"] == 8

    run = tmp_path / "run"
    assert main(["run", str(data), "--out", str(run), "--config", str(out / "best.json"),
                 "--repeats", "1", "--epochs", "3"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["config"] == str(out / "best.json")
    assert config["hyp"]["lr"] == pytest.approx(best["hyp"]["lr"])
    assert config["hyp"]["mixup"] == best["hyp"]["mixup"]
    assert config["hyp"]["epochs"] == 3  # a flag on the command line wins over the file


def test_pbt_perturbs_and_exploits(data, tmp_path):
    space = write_space(tmp_path / "space.json", lr={"loguniform": [1e-5, 0.5]},
                        mixup={"choice": [0.0, 0.2]})
    out = tmp_path / "pbt"
    assert main(["tune", str(data), "--out", str(out), "--trials", "4", "--scheduler", "pbt",
                 "--perturbation-interval", "2", "--epochs", "8", "--space", str(space),
                 "--max-concurrent", "4", *TINY]) == 0
    log = (out / "search" / "pbt_global.txt").read_text().splitlines()
    assert log, "PBT never exploited a trial"
    for line in log:  # [target, source, target iter, source iter, old config, new config]
        old, new = json.loads(line)[4:6]
        assert old != new  # the copied configuration was perturbed
    assert (out / "best.json").exists()


def test_interrupted_search_resumes(data, tmp_path):
    space = write_space(tmp_path / "space.json", lr={"loguniform": [0.01, 0.3]},
                        epochs={"choice": [800]})
    out = tmp_path / "resume"
    cmd = [sys.executable, "-m", "orchestrator.cli.main", "tune", str(data), "--out", str(out),
           "--trials", "2", "--space", str(space), "--max-concurrent", "1",
           "--checkpoint-every-s", "1.5", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240

    def progressed():  # Tune saved its state after a trial's first checkpoint
        states = list((out / "search").glob("experiment_state-*.json"))
        checkpoints = list((out / "search").glob("trial_*/checkpoint_*"))
        return states and checkpoints and (max(p.stat().st_mtime for p in states)
                                           > min(p.stat().st_mtime for p in checkpoints))

    while not progressed() and time.time() < deadline:
        assert proc.poll() is None, "the search ended before it could be interrupted"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "trials.csv").exists()
    assert main(["tune", "--resume", str(out)]) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and trials["status"].isin(["completed", "stopped early"]).all()
    assert (trials["epochs_run"] == 800).any()  # at least one trial ran on to its last epoch
    assert (out / "best.json").exists()
    # continued, not restarted: a trial picked up from its checkpoint of before the kill
    last = [json.loads(p.read_text().splitlines()[-1])
            for p in (out / "search").glob("trial_*/result.json") if p.read_text().strip()]
    assert any(r["iterations_since_restore"] < r["training_iteration"] for r in last)


def test_failed_trials_are_reported_and_all_failing_exits_nonzero(data, tmp_path, capsys):
    # a batch size of 0 is a plausible typo in a space file; such trials raise
    some = write_space(tmp_path / "some.json", batch_size={"choice": [0, 16]},
                       epochs={"choice": [3]})
    out = tmp_path / "some"
    rc = main(["tune", str(data), "--out", str(out), "--trials", "4", "--space", str(some),
               "--max-failures", "0", "--width", "8", "--no-flip"])
    text = capsys.readouterr().out
    trials = pd.read_csv(out / "trials.csv")
    assert rc == 0 and (trials["status"] == "error").any() and (trials["status"] != "error").any()
    assert "trial(s) failed" in text and (out / "best.json").exists()
    best = json.loads((out / "best.json").read_text())
    assert best["hyp"]["batch_size"] == 16

    none = write_space(tmp_path / "none.json", batch_size=0, epochs={"choice": [3]})
    out = tmp_path / "none"
    rc = main(["tune", str(data), "--out", str(out), "--trials", "2", "--space", str(none),
               "--max-failures", "0", "--width", "8"])
    text = capsys.readouterr().out
    assert rc == 1 and "every trial failed" in text and "ZeroDivisionError" in text
    assert not (out / "best.json").exists()
