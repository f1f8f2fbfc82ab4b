"""Faults a tester found (#28): a full disk during a pass, an apply and an export, and a
carriage return in a file name. Real files; the full disk is a small tmpfs (needs root, as
on CI; skipped where a tmpfs cannot be mounted)."""
import os
import subprocess

import pandas as pd
import pytest

from orchestrator.cli.main import main
from orchestrator.review.apply import apply_manifest
from orchestrator.review.files import export_review, import_review
from orchestrator.run.directory import Run
from orchestrator.run.partitions import read_predictions
from tests.conftest import tree_hash, write_digit_dataset
from tests.review.test_review import at, make_run


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(kb)`: a tmpfs of that size, unmounted after the test."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = []

    def make(kb: int):
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(mnt)],
                           capture_output=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
        mounted.append(mnt)
        return mnt

    yield make
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)])


def fill(disk, leave_kb: int):
    """A filler file that leaves about `leave_kb` free on `disk`; returns it."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_kb * 1024))
    return filler


def used_by_us(disk) -> list[str]:
    return sorted(p.name for p in disk.rglob("*") if p.is_file() and p.name != "filler")


def dupes_run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    text = capsys.readouterr().out
    assert "Traceback" not in text, text
    return code, text


@pytest.mark.ray
def test_a_disk_full_during_the_scan_ends_with_a_message_and_leaves_nothing(
        tmp_path, small_disk, capsys):
    from PIL import Image
    import numpy as np
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(150):  # 300 images of 64x64x3: a 3.7 MB shard, on a 1 MB disk
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(
                data / c / f"{i}.png")
    before = tree_hash(data)
    disk = small_disk(1024)
    code, text = dupes_run(capsys, "run", data, "--out", disk / "run", "--no-sanity")
    assert code == 2 and "the disk is full" in text and "free space" in text, text
    assert used_by_us(disk) == []  # no temp shard, no half run
    assert tree_hash(data) == before


@pytest.mark.ray
def test_a_disk_full_while_writing_predictions_resumes_to_exact_counts(
        tmp_path, small_disk, capsys):
    data = write_digit_dataset(tmp_path / "data", per_class=30)
    disk = small_disk(2048)
    filler = fill(disk, 120)  # the scan and the first trainings fit, not all 20
    run = disk / "run"
    code, text = dupes_run(capsys, "run", data, "--out", run, "--epochs", "2", "--no-sanity")
    assert code == 2 and "the disk is full" in text and "--resume" in text, text
    done = Run.open(run).completed()
    assert 0 < len(done) < 20, text
    filler.unlink()
    code, text = dupes_run(capsys, "run", "--resume", run)
    assert code == 0, text
    counts = read_predictions(run, ["sample_id"])["sample_id"].to_pandas().value_counts()
    assert len(counts) == 90 and (counts == 10).all()
    assert not [p for p in run.rglob(".*.tmp-*")]


def test_a_disk_full_during_apply_or_export_leaves_no_half_tree(tmp_path, small_disk, capsys):
    data, run = make_run(tmp_path, {"0/img0.png": "1", "0/img1.png": "cat", "1/img2.png": "0"})
    review = tmp_path / "review"
    export_review(run, review, threshold=">=2")
    at(review, "0/img1.png").unlink()
    assert import_review(review, accept_untouched=True)[1] == []
    disk = small_disk(256)
    fill(disk, 2)  # less than the dataset's 12 images
    before = tree_hash(data)
    code, text = dupes_run(capsys, "apply", review / "manifest.csv", "--data", data,
                           "--out", disk / "fixed")
    assert code == 2 and "the disk is full" in text and "again" in text, text
    assert used_by_us(disk) == [] and tree_hash(data) == before
    code, text = dupes_run(capsys, "review", "export", run, "--out", disk / "review2",
                           "--threshold", ">=2")
    assert code == 2 and "the disk is full" in text, text
    assert used_by_us(disk) == []


def test_a_carriage_return_in_a_file_name_survives_every_table(tmp_path):
    odd = "0/im\rg0.png"
    data, run = make_run(tmp_path, {odd: "1", "0/img1.png": "cat"}, renamed={"0/img0.png": odd})
    r = Run.open(run)
    analysis, _ = r.analysis(threshold=">=2")
    r.save_analysis(analysis)
    table = pd.read_csv(run / "dupes.csv", dtype=str, keep_default_na=False)
    assert odd in set(table["relpath"]) and len(table) == len(analysis.dupes)
    review = tmp_path / "review"
    export_review(run, review, threshold=">=2")
    assert at(review, odd).is_file()
    manifest, problems = import_review(review, accept_untouched=True)
    assert problems == [] and odd in set(manifest["relpath"])
    changes = apply_manifest(review / "manifest.csv", data, tmp_path / "fixed")
    assert (tmp_path / "fixed" / "1" / "im\rg0.png").is_file()
    assert odd in set(changes["relpath"])
