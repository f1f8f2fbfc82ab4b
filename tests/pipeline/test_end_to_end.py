"""End-to-end runs of `dupes run` on a real local Ray with real images on disk."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest


from orchestrator.run import partitions
from orchestrator.cli.main import main
from tests.conftest import tree_hash, write_digit_dataset

pytestmark = pytest.mark.slow
FAST = ["--epochs", "15", "--batch-size", "16", "--width", "16", "--no-flip", "--translate", "1"]


def check_predictions(run: Path, n_samples: int, repeats: int) -> pa.Table:
    preds = partitions.read_predictions(run)
    assert preds.num_rows == n_samples * repeats
    df = preds.select(["sample_id", "repeat", "fold"]).to_pandas()
    assert not df.duplicated(["sample_id", "repeat"]).any()
    assert (df.groupby("sample_id").size() == repeats).all()
    assert df["sample_id"].nunique() == n_samples
    # held-out rows of training (r, f) are exactly the samples split.parquet puts in fold f
    splits = pd.read_parquet(run / "splits.parquet")
    merged = df.merge(splits, on=["sample_id", "repeat"], suffixes=("", "_split"))
    assert (merged["fold"].to_numpy() == merged["fold_split"].to_numpy()).all()
    return preds


def test_run_end_to_end_with_bad_files(tmp_path, capsys):
    data = write_digit_dataset(tmp_path / "data", classes=(0, 1, 7), per_class=30)
    (data / "1" / "zero.png").write_bytes(b"")
    (data / "7" / "garbage.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    before = tree_hash(data)
    run = tmp_path / "run"
    rc = main(["run", str(data), "--out", str(run), "--repeats", "3", *FAST])
    assert rc == 0
    assert tree_hash(data) == before  # the dataset is never modified

    preds = check_predictions(run, 90, 3)
    schema = preds.schema
    assert schema.field("sample_id").type == pa.int64()
    assert schema.field("repeat").type == pa.int16() and schema.field("fold").type == pa.int8()
    assert schema.field("label").type == pa.int16() and schema.field("pred").type == pa.int16()
    assert schema.field("loss").type == pa.float32()
    assert schema.field("probs").type == pa.list_(pa.float32(), 3)

    # the streamed reader (report, review) agrees with the whole-table path, batch by batch;
    # confident learning's flags too, from the thresholds each training recorded
    from analysis.run_analysis import prediction_arrays
    from analysis.confident import recorded_thresholds
    from orchestrator.run.directory import Run
    recorded = recorded_thresholds(Run.open(run).training_metrics())
    assert sorted(recorded) == [(r, f) for r in range(3) for f in range(2)]
    streamed = partitions.read_prediction_columns(run, batch_rows=50, thresholds=recorded)
    whole = prediction_arrays(preds)
    assert set(streamed) == set(whole)  # "confident" included
    order_s = np.lexsort((streamed["repeat"], streamed["sample_id"]))
    order_w = np.lexsort((whole["repeat"], whole["sample_id"]))
    for name, values in whole.items():
        np.testing.assert_array_equal(streamed[name][order_s], values[order_w])
    # the streamed per-sample mean of the probability vectors, against a plain np.add.at
    from analysis.run_analysis import mean_probs_of
    mean = partitions.read_prediction_columns(run, batch_rows=50, mean_probs=True)["mean_probs"]
    np.testing.assert_allclose(mean, mean_probs_of(preds, num_samples=90), rtol=1e-5)
    np.testing.assert_allclose(mean.sum(1), 1, atol=1e-4)

    # held-out metrics of epochs 5, 10 and 15 (--epoch-losses 5): one row per held-out image
    # and recorded epoch; the last recorded epoch is the final prediction
    epochs = partitions.read_epochs(run).to_pandas()
    per_training = epochs.groupby(["repeat", "fold", "epoch"]).size()
    held = preds.select(["repeat", "fold"]).to_pandas().groupby(["repeat", "fold"]).size()
    for (r, f), n in held.items():
        assert per_training.loc[(r, f)].to_dict() == {5: n, 10: n, 15: n}
    last = epochs[epochs["epoch"] == 15].merge(
        preds.select(["sample_id", "repeat", "fold", "loss", "pred", "probs"]).to_pandas(),
        on=["sample_id", "repeat", "fold"], suffixes=("", "_final"))
    assert len(last) == 270
    np.testing.assert_allclose(last["loss"], last["loss_final"], rtol=1e-5)
    np.testing.assert_array_equal(last["pred"], last["pred_final"])
    probs = np.stack(last["probs"].to_numpy())
    given = pd.read_parquet(run / "index.parquet")["label"].to_numpy()[last["sample_id"]]
    p_given = probs[np.arange(len(probs)), given]
    other = probs.copy()
    other[np.arange(len(probs)), given] = -1
    np.testing.assert_allclose(last["margin"], p_given - other.max(1), atol=1e-5)

    skipped = pd.read_csv(run / "skipped.csv")
    assert set(skipped["relpath"]) == {"1/zero.png", "7/garbage.jpg"}
    index = pd.read_parquet(run / "index.parquet")
    assert list(index.columns) == ["sample_id", "relpath", "label", "class_name", "bytes", "sha1"]
    assert len(index) == 90
    dupes = pd.read_csv(run / "dupes.csv")
    assert list(dupes.columns)[:6] == ["sample_id", "relpath", "given_class", "suggested_class",
                                       "votes", "n_evals"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_trainings"] == 6 and summary["n_prediction_rows"] == 270
    assert summary["n_samples"] == 90 and summary["heldout_accuracy_mean"] > 0.8
    for key in ("data_dir", "run_dir", "n_dupes", "threshold", "wall_s"):
        assert key in summary
    config = json.loads((run / "config.json").read_text())
    assert config["repeats"] == 3 and config["hyp"]["epochs"] == 15
    out = capsys.readouterr().out
    assert "held-out accuracy per training" in out and "dupes per vote threshold" in out

    # `dupes report` re-renders from disk alone, without importing Ray
    code = ("import sys; from orchestrator.cli.main import main; rc = main(['report', sys.argv[1], "
            "'--threshold', '>=1', '--html']); assert 'ray' not in sys.modules; sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "150"})
    assert res.returncode == 0, res.stderr
    assert "top 20 dupes (>=1" in res.stdout and "held-out accuracy" in res.stdout
    assert "second opinion" in res.stdout and "error rate per given class" in res.stdout
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 1 and "confusion matrix" in page
    assert (run / "sheets" / "top_losses.png").is_file()

    # a second run into the same directory is refused rather than mixed in: unusable input,
    # exit 2 (it raised SystemExit, exit 1, before the configuration was typed)
    capsys.readouterr()
    assert main(["run", str(data), "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().out


def start_run(tmp_path, *, repeats: int, epochs: int):
    """`dupes run` on a small digits dataset in its own process group (to be killed)."""
    data = write_digit_dataset(tmp_path / "data", classes=(0, 1, 7), per_class=30)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "orchestrator.cli.main", "run", str(data), "--out", str(run),
           "--repeats", str(repeats), *FAST, "--epochs", str(epochs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    return run, proc


def test_interrupted_run_resumes_to_the_same_counts(tmp_path):
    repeats = 6
    run, proc = start_run(tmp_path, repeats=repeats, epochs=25)
    deadline = time.time() + 240
    while len(partitions.completed_trainings(run)) < 2 and time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-run, without any clean-up
    proc.wait()
    first = partitions.completed_trainings(run)
    assert 2 <= len(first) < 2 * repeats, f"interrupted with {len(first)} trainings done"
    stamps = {i: partitions.partition_dir(run, *i).stat().st_mtime_ns for i in first}
    # an interrupted write leaves a temp folder; resume must clear it, not count it
    (run / "predictions" / ".tmp-r9-f9-deadbeef").mkdir()

    rc = main(["run", "--resume", str(run)])
    assert rc == 0
    assert partitions.completed_trainings(run) == {(r, f) for r in range(repeats) for f in (0, 1)}
    assert {i: partitions.partition_dir(run, *i).stat().st_mtime_ns for i in first} == stamps
    assert not list((run / "predictions").glob(".tmp-*"))
    check_predictions(run, 90, repeats)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_prediction_rows"] == 90 * repeats


def test_failed_training_is_recorded_crashed_worker_is_retried(tmp_path, monkeypatch, capsys):
    data = write_digit_dataset(tmp_path / "data", classes=(0, 1, 7), per_class=30)
    run = tmp_path / "run"
    # r1f0 raises every time; the worker running r2f1 dies (os._exit) on its first attempt
    monkeypatch.setenv("DUPES_INJECT_FAILURE", "r1f0:raise,r2f1:crash")
    rc = main(["run", str(data), "--out", str(run), "--repeats", "3", *FAST])
    assert rc == 1  # not every training finished: a script must be able to tell
    out = capsys.readouterr().out
    assert "1 training(s) failed" in out and "--resume" in out
    failures = json.loads((run / "failures.json").read_text())
    assert [(f["repeat"], f["fold"]) for f in failures] == [(1, 0)]
    assert "injected failure in training r1f0" in failures[0]["error"]
    done = partitions.completed_trainings(run)
    assert done == {(0, 0), (0, 1), (1, 1), (2, 0), (2, 1)}  # the crashed one was retried
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_trainings"] == 5 and summary["n_trainings_failed"] == 1
    votes = pd.read_parquet(run / "votes.parquet")
    held_r1f0 = pd.read_parquet(run / "splits.parquet").query("repeat == 1 and fold == 0")
    n_evals = votes.set_index("sample_id")["n_evals"]
    assert (n_evals.loc[held_r1f0["sample_id"]] == 2).all()  # analysed on what completed
    assert n_evals.sum() == 90 * 3 - len(held_r1f0)

    monkeypatch.delenv("DUPES_INJECT_FAILURE")
    assert main(["run", "--resume", str(run)]) == 0
    check_predictions(run, 90, 3)
    assert json.loads((run / "failures.json").read_text()) == []


def test_training_worker_killed_with_sigkill_is_retried(tmp_path):
    repeats = 4
    run, proc = start_run(tmp_path, repeats=repeats, epochs=60)
    victim, deadline = None, time.time() + 240
    while victim is None and time.time() < deadline:
        assert proc.poll() is None, "the run ended before a worker could be killed"
        progress = run / "progress.json"
        if progress.exists():
            for t in json.loads(progress.read_text())["trainings"]:
                if t.get("status") == "running" and t.get("epoch", 0) >= 2:
                    victim = int(t["worker"].split(":")[1])  # host:pid:id
                    break
        time.sleep(0.2)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)  # kill -9 of the training worker process
    assert proc.wait(timeout=400) == 0
    check_predictions(run, 90, repeats)
    assert json.loads((run / "summary.json").read_text())["n_trainings"] == 2 * repeats
