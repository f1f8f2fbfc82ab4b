"""CLI errors: bad input exits 2 with a message naming the file or folder and the fix."""
import json

import pytest
from PIL import Image
import numpy as np

from orchestrator.cli.main import main
from orchestrator.cli.parser import get_args_parser


def test_missing_dataset_and_missing_arguments(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().out
    assert main(["run"]) == 2
    assert "--resume" in capsys.readouterr().out
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2


def test_class_too_small_is_named(tmp_path, capsys):
    for c, n in (("ok", 3), ("lonely", 1)):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(tmp_path / "data" / c / f"{i}.png")
    assert main(["run", str(tmp_path / "data"), "--out", str(tmp_path / "r")]) == 2
    out = capsys.readouterr().out
    assert "'lonely' (1 usable)" in out and "--min-per-class" in out


@pytest.mark.parametrize("argv", [["run", "d", "--repeats", "0"], ["run", "d", "--epochs", "-1"],
                                  ["run", "d", "--threshold", "lots"], ["run", "d", "--split", "x"]])
def test_invalid_flags_are_refused_by_the_parser(argv):
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(argv)


def test_sanity_command_and_run_stop_on_labels_that_do_not_follow_the_images(tmp_path, capsys):
    from tests.conftest import write_digit_dataset, write_noise_dataset
    good = write_digit_dataset(tmp_path / "good", classes=(0, 1, 7), per_class=40)
    assert main(["sanity", str(good), "--no-flip", "--translate", "1", "--batch-size", "16"]) == 0
    assert "sanity check: passed" in capsys.readouterr().out
    # noise images in class folders: nothing to learn, so the labels cannot be followed
    write_noise_dataset(tmp_path / "noise")
    assert main(["sanity", str(tmp_path / "noise"), "--batch-size", "16"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "the labels do not follow the images" in out
    run = tmp_path / "run"
    assert main(["run", str(tmp_path / "noise"), "--out", str(run), "--batch-size", "16"]) == 1
    assert "--no-sanity" in capsys.readouterr().out
    assert not (run / "predictions").exists()  # stopped before any training
    assert json.loads((run / "sanity.json").read_text())["ok"] is False
    # resuming does not skip a check that failed: it runs again and stops again
    assert main(["run", "--resume", str(run)]) == 1
    assert not (run / "predictions").exists()


@pytest.mark.parametrize("argv,reason", [
    (["run", "hdfs://nn/data"], "hdfs:// is not supported"),
    (["review", "export", "s3://b/run", "--out", "s3://b/review"], "must be a local"),
    (["apply", "m.csv", "--data", "s3://b/data", "--out", "gs://b/fixed"], "must be a local")])
def test_uris_where_they_cannot_go_get_a_clear_refusal(argv, reason, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert reason in capsys.readouterr().err


def test_unreachable_bucket_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from orchestrator.run.storage import resolve
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    resolve.cache_clear()
    try:
        assert main(["run", "s3://b/data", "--out", str(tmp_path / "run")]) == 2
    finally:
        resolve.cache_clear()
    out = capsys.readouterr().out
    assert "cannot list s3://b/data" in out and "AWS_ENDPOINT_URL" in out


def test_storage_error_names_the_nodes_and_the_fix(tmp_path):
    from orchestrator.pipeline.cluster import storage_error
    e = storage_error(tmp_path, [f"10.0.0.{i} (abc)" for i in range(7)])
    text = str(e)
    assert str(tmp_path) in text and "7 node(s)" in text and "10.0.0.4" in text
    assert "10.0.0.5" not in text and "--out /shared/path" in text
