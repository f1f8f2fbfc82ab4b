"""Datasets and run directories in a bucket, against a real S3 server on loopback (moto)."""
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from orchestrator.run import rundir

from orchestrator.run import partitions
from orchestrator.data.scan import scan_dataset
from orchestrator.run.remote import RemoteRun
from orchestrator.run.storage import list_tree, read_object, resolve
from tests.conftest import write_digit_dataset
from tests.s3server import moto_s3
from tests.pipeline.test_end_to_end import FAST, check_predictions

BUCKET = "dupes-test"


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("moto")
    with moto_s3(BUCKET) as env:
        yield env


def upload_tree(local: Path, uri: str) -> None:
    fs, base = resolve(uri)
    pafs.copy_files(str(local), base, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)


def fake_run(root: Path, trainings=((0, 0), (0, 1))) -> Path:
    """A run directory with a config and prediction partitions (real Parquet)."""
    root.mkdir(parents=True)
    rundir.write_json(root / "config.json", {"repeats": 1})
    for r, f in trainings:
        part = partitions.partition_dir(root, r, f)
        part.mkdir(parents=True)
        pq.write_table(pa.table({"sample_id": np.arange(5) + 5 * f, "loss": np.ones(5)}),
                       part / "a.parquet")
    return root


def test_partitions_are_committed_by_their_marker(s3, tmp_path):
    uri = f"s3://{BUCKET}/runs/markers"
    remote = RemoteRun(uri, fake_run(tmp_path / "a"))
    assert remote.push() == 3  # two partitions and config.json
    assert remote.committed() == {(0, 0), (0, 1)}
    assert remote.push() == 0  # nothing changed: nothing goes up again
    # an upload cut short: files of a partition whose marker never came, and a stray file
    # beside a committed one
    fs, base = resolve(uri)
    for rel in ("predictions/repeat=1/fold=0/x.parquet", "predictions/repeat=0/fold=0/y.parquet"):
        with fs.open_output_stream(f"{base}/{rel}") as out:
            out.write(b"half")
    assert remote.committed() == {(0, 0), (0, 1)}
    # another machine reads only what the markers commit
    other = RemoteRun(uri, tmp_path / "b")
    other.pull()
    assert partitions.completed_trainings(other.local) == {(0, 0), (0, 1)}
    assert sorted(p.name for p in partitions.partition_dir(other.local, 0, 0).iterdir()) == \
        ["a.parquet"]
    assert partitions.read_predictions(other.local).num_rows == 10
    assert remote.clear_partial() == 2
    assert not any(rel.endswith(("x.parquet", "y.parquet")) for rel in list_tree(uri))


def test_push_uploads_changed_files_and_pull_fetches_newer_ones(s3, tmp_path):
    uri = f"s3://{BUCKET}/runs/sync"
    a = RemoteRun(uri, fake_run(tmp_path / "a", trainings=()))
    a.push()
    b = RemoteRun(uri, tmp_path / "b")
    b.pull()
    assert rundir.read_json(b.local / "config.json") == {"repeats": 1}
    time.sleep(2.5)  # the bucket keeps whole seconds
    rundir.write_json(a.local / "config.json", {"repeats": 2})
    rundir.write_json(a.local / "summary.json", {"n": 1})
    assert a.push() == 2
    assert b.pull() == 2
    assert rundir.read_json(b.local / "config.json") == {"repeats": 2}
    assert b.pull() == 0
    time.sleep(2.5)
    assert b.push() == 0  # what came down is not newer than the bucket: nothing goes back up
    # a mirror's own newer file (written, upload not yet done) is never overwritten by a pull
    rundir.write_json(b.local / "summary.json", {"n": 2, "written": "here, not uploaded"})
    assert b.pull() == 0
    assert rundir.read_json(b.local / "summary.json")["n"] == 2


def test_scan_of_a_bucket_dataset_equals_the_local_scan(s3, tmp_path):
    data = write_digit_dataset(tmp_path / "data", classes=(0, 1), per_class=8)
    (data / "0" / "notes.txt").write_text("not an image")
    (data / "1" / "empty.png").write_bytes(b"")
    (data / ".hidden").mkdir()
    (data / ".hidden" / "x.png").write_bytes(b"")
    upload_tree(data, f"s3://{BUCKET}/datasets/digits")
    local = scan_dataset(data)
    bucket = scan_dataset(f"s3://{BUCKET}/datasets/digits")
    assert bucket.classes == local.classes == ["0", "1"]
    pd.testing.assert_frame_equal(bucket.index, local.index)
    np.testing.assert_array_equal(bucket.images, local.images)
    pd.testing.assert_frame_equal(bucket.skipped, local.skipped)
    assert len(bucket.skipped) == 2


def test_a_bucket_run_is_never_created_in_a_prefix_that_holds_objects(s3, tmp_path):
    from orchestrator.run.directory import Run, RunError
    from orchestrator.run.storage import same_tree

    data = write_digit_dataset(tmp_path / "data", classes=(0, 1), per_class=2)
    upload_tree(data, f"s3://{BUCKET}/datasets/kept")
    before = list_tree(f"s3://{BUCKET}/datasets/kept")
    with pytest.raises(RunError, match="holds objects but no run"):
        Run.create(f"s3://{BUCKET}/datasets/kept")
    assert list_tree(f"s3://{BUCKET}/datasets/kept").keys() == before.keys()
    assert same_tree(f"s3://{BUCKET}/datasets/kept/runs/r1", f"s3://{BUCKET}/datasets/kept")
    assert not same_tree(f"s3://{BUCKET}/datasets/kept2", f"s3://{BUCKET}/datasets/kept")
    assert not same_tree(f"s3://{BUCKET}/datasets/kept", tmp_path)


def test_a_bucket_dataset_scans_into_bucket_shards_with_ray_data(s3, tmp_path, monkeypatch):
    """The scan's tasks read the dataset from the bucket and write the shards there (several
    shards: a Ray Data job, not the one-shard path in the driver)."""
    import ray

    from orchestrator.data import cache as cachemod
    from orchestrator.data.cache import build_cache, sharded_images
    from orchestrator.run.remote import ShardStore

    data = write_digit_dataset(tmp_path / "data", classes=(0, 1, 7), per_class=10)
    upload_tree(data, f"s3://{BUCKET}/datasets/sharded")
    monkeypatch.setattr(cachemod, "rows_per_shard", lambda size, channels: 8)
    monkeypatch.setenv("DUPES_MIRROR", str(tmp_path / "mirror"))
    store = ShardStore(f"s3://{BUCKET}/runs/sharded/cache")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")  # workers get the env
    try:
        cache = build_cache(f"s3://{BUCKET}/datasets/sharded", store, image_size=None,
                            aspect="pad", min_per_class=None, seed=0)
    finally:
        ray.shutdown()
    assert cache.n_shards == 4 and cache.decoded_shards == 4
    assert {f"shard-{k:05d}.{e}" for k in range(4) for e in ("npy", "json")} <= store.names()
    local = scan_dataset(data)
    pd.testing.assert_frame_equal(cache.index, local.index)
    images = sharded_images(store, cache.placement, cache.n_shards)  # node-local copies
    np.testing.assert_array_equal(images.load_all(), local.images)


def test_an_object_that_cannot_be_fetched_stops_the_scan(s3, tmp_path, monkeypatch):
    # a bad image is skipped with its reason; an object the network or the bucket's
    # permissions withheld is not a bad image, and training on the rest would be silent loss
    from orchestrator.run import storage
    from orchestrator.data.scan import ScanError

    data = write_digit_dataset(tmp_path / "data", classes=(0, 1), per_class=4)
    upload_tree(data, f"s3://{BUCKET}/flaky")
    real = storage.open_file

    def flaky(root, rel):
        if rel == "1/d0001.png":
            raise OSError("AWS Error ACCESS_DENIED during GetObject operation")
        return real(root, rel)

    monkeypatch.setattr(storage, "open_file", flaky)
    with pytest.raises(ScanError, match=r"1 object\(s\) of s3://.*1/d0001.png.*Nothing was skipped"):
        scan_dataset(f"s3://{BUCKET}/flaky")


def _dupes(*args, env: dict, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args], cwd=cwd,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_a_pass_from_a_bucket_to_a_bucket_resumes_on_another_machine(s3, tmp_path):
    data = write_digit_dataset(tmp_path / "data", classes=(0, 1, 7), per_class=20)
    for p in sorted((data / "7").iterdir())[:3]:  # mislabelled: sevens in the ones
        p.rename(data / "1" / p.name)
    upload_tree(data, f"s3://{BUCKET}/data")
    machine_a = {**s3, "DUPES_MIRROR": str(tmp_path / "mirror-a")}
    machine_b = {**s3, "DUPES_MIRROR": str(tmp_path / "mirror-b")}
    _dupes("run", f"s3://{BUCKET}/data", "--storage", f"s3://{BUCKET}/runs", "--repeats", "2",
           "--no-sanity", *FAST, env=machine_a, cwd=tmp_path)
    names = {rel.split("/")[0] for rel in list_tree(f"s3://{BUCKET}/runs")
             if rel.startswith("data-") and rel.endswith("/config.json")}
    assert len(names) == 1  # runs/<data name>-<date-time>
    uri = f"s3://{BUCKET}/runs/{names.pop()}"
    remote = RemoteRun(uri)
    assert remote.committed() == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert remote.committed("epochs") == {(0, 0), (0, 1), (1, 0), (1, 1)}
    objects = list_tree(uri)
    for name in ("summary.json", "votes.parquet", "dupes.csv", "report.html", "index.parquet",
                 "placement.parquet", "cache/shard-00000.npy", "cache/shard-00000.json",
                 "trainings/r01_f1.json"):  # the shards were written by the scan's tasks
        assert name in objects, name
    assert any(rel.startswith("ray/") for rel in objects)  # Ray Train's state, in the bucket
    assert not (tmp_path / "runs").exists()  # nothing written beside the working directory

    # machine B: status from the bucket alone, then a resume after one training's upload was
    # lost (as if machine A had died before uploading it)
    out = _dupes("status", uri, env=machine_b, cwd=tmp_path).stdout
    assert "4/4 trainings done" in out
    fs, base = resolve(uri)
    fs.delete_dir(f"{base}/predictions/repeat=1/fold=1")
    assert remote.committed() == {(0, 0), (0, 1), (1, 0)}
    out = _dupes("run", "--resume", uri, env=machine_b, cwd=tmp_path).stdout
    assert "resuming: 3 of 4 trainings already done" in out
    assert remote.committed() == {(0, 0), (0, 1), (1, 0), (1, 1)}
    mirror_b = tmp_path / "mirror-b" / "s3" / uri.split("://", 1)[1]
    assert json.loads((mirror_b / "config.json").read_text())["run_dir"] == str(mirror_b)
    check_predictions(mirror_b, 60, 2)  # every image exactly 2 predictions, none twice

    # a third machine reads the bucket run: report with HTML (uploaded), review from the bucket
    machine_c = {**s3, "DUPES_MIRROR": str(tmp_path / "mirror-c")}
    before = list_tree(uri)["report.html"].mtime
    time.sleep(1.5)
    _dupes("report", uri, "--html", "--threshold", ">=1", env=machine_c, cwd=tmp_path)
    assert list_tree(uri)["report.html"].mtime > before  # written on C, uploaded
    review = tmp_path / "review"
    _dupes("review", "export", uri, "--out", str(review), "--threshold", ">=1",
           "--min-ratio", "0", env=machine_c, cwd=tmp_path)
    exported = pd.read_csv(review / ".dupes" / "exported.csv")
    assert len(exported) > 0
    first = exported.iloc[0]
    assert (review / first["review_path"]).read_bytes() == (data / first["relpath"]).read_bytes()
    # the technician confirms one label (deletes the file) and agrees with every other
    # suggestion; the confirmation goes to the ledger beside the run in the bucket, where
    # the next round finds it from any machine; the corrected copy is built from the bucket
    (review / exported.iloc[-1]["review_path"]).unlink()
    _dupes("review", "import", str(review), "--accept-untouched", env=machine_c, cwd=tmp_path)
    ledger = pd.read_csv(io.BytesIO(read_object(f"s3://{BUCKET}/runs/dupes-ledger.csv")))
    assert ledger["relpath"].tolist() == [exported.iloc[-1]["relpath"]]
    fixed = tmp_path / "fixed"
    _dupes("apply", str(review / "manifest.csv"), "--data", f"s3://{BUCKET}/data",
           "--out", str(fixed), env=machine_c, cwd=tmp_path)
    changes = pd.read_csv(fixed / ".dupes/CHANGES.csv")
    assert (changes["action"] == "relabel").sum() == len(exported) - 1
    assert sum(1 for p in fixed.rglob("*.png")) == sum(1 for p in data.rglob("*.png"))
    machine_d = {**s3, "DUPES_MIRROR": str(tmp_path / "mirror-d")}
    out = _dupes("review", "export", uri, "--out", str(tmp_path / "review2"), "--threshold",
                 ">=1", "--min-ratio", "0", env=machine_d, cwd=tmp_path).stdout
    assert f"exported {len(exported) - 1} image(s)" in out  # the confirmed one is not asked again
    moved = changes.iloc[0]
    assert (fixed / moved["new_relpath"]).read_bytes() == (data / moved["relpath"]).read_bytes()
