"""The technician review loop on real files: export, every action, refusals, ledger, apply."""
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from orchestrator.run import rundir

from orchestrator.run import partitions
from orchestrator.config import RunConfig
from orchestrator.run.ledger import read_ledger
from orchestrator.run.directory import Run
from orchestrator.review.apply import apply_manifest
from orchestrator.review.files import ReviewError, export_review, import_review
from orchestrator.data.scan import scan_dataset
from tests.conftest import tree_hash

CLASSES = ["0", "1", "cat"]  # numeric class names must survive CSV round trips


def make_run(tmp: Path, wrong: dict[str, str], repeats: int = 2,
             classes: list[str] = CLASSES, renamed: dict[str, str] | None = None
             ) -> tuple[Path, Path]:
    """A dataset of 4 images per class and a finished run directory in which the images in
    `wrong` (relpath -> class) are predicted as that other class by every training;
    `renamed` gives some files other names (relpath -> relpath) before the scan."""
    data = tmp / "data"
    rng = np.random.default_rng(0)
    for c in classes:
        (data / c / "sub").mkdir(parents=True)
        for i in range(4):
            sub = "sub/" if i == 3 else ""
            Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(data / c / f"{sub}img{i}.png")
    for old, new in (renamed or {}).items():
        (data / old).rename(data / new)
    run = tmp / "runs" / "r1"
    run.mkdir(parents=True)
    scan = scan_dataset(data, image_size=8)
    rundir.write_parquet(run / "index.parquet", scan.index)
    rundir.write_json(run / "classes.json", {"classes": scan.classes})
    rundir.write_json(run / "config.json", RunConfig(str(data), str(run), repeats=repeats).to_dict())
    labels = scan.index["label"].to_numpy()
    pred = labels.copy()
    for rel, cls in wrong.items():
        pred[scan.index.index[scan.index["relpath"] == rel][0]] = scan.classes.index(cls)
    n, c = len(labels), len(scan.classes)
    for r in range(repeats):
        for f in (0, 1):
            held = np.arange(n)[np.arange(n) % 2 == f]
            probs = np.full((len(held), c), 0.05, np.float32)
            probs[np.arange(len(held)), pred[held]] = 0.9
            part = partitions.partition_dir(run, r, f)
            part.mkdir(parents=True)
            pq.write_table(pa.table({
                "sample_id": pa.array(held, pa.int64()), "label": pa.array(labels[held], pa.int16()),
                "pred": pa.array(pred[held], pa.int16()),
                "loss": pa.array(-np.log(probs[np.arange(len(held)), labels[held]]), pa.float32()),
                "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel()), c)}),
                part / "part-0.parquet")
    return data, run


def at(review: Path, relpath: str) -> Path:
    """Where the export put a dataset file in a review folder (its name carries a rank)."""
    table = pd.read_csv(review / ".dupes" / "exported.csv", dtype=str, keep_default_na=False)
    return review / table.set_index("relpath").loc[relpath, "review_path"]


WRONG = {"0/img0.png": "1", "0/img1.png": "cat", "1/img2.png": "0", "cat/sub/img3.png": "0",
         "cat/img1.png": "1"}


@pytest.fixture
def run_data(tmp_path):
    return make_run(tmp_path, WRONG)


def test_export_layout(run_data, tmp_path):
    data, run = run_data
    before_hash = tree_hash(data)
    review = tmp_path / "review"
    table = export_review(run, review, threshold=">=2")
    assert len(table) == 5
    assert sorted(p.name for p in review.iterdir()) == [
        ".dupes", "0", "1", "README.txt", "_remove", "_unsure", "before.txt", "cat"]
    assert at(review, "0/img0.png").is_file()
    # names begin with the rank in the dupes' order: a file manager lists the most suspect first
    names = sorted(p.name for p in review.rglob("*.png"))
    assert names == [p.split("/")[-1] for p in table["review_path"]]
    assert names[0].startswith("1__") and "__2of2__" in names[0]
    assert at(review, "cat/sub/img3.png").is_file()  # sub-folders are flattened
    # copies, never links: editing a review image cannot edit the dataset
    assert os.stat(at(review, "0/img0.png")).st_ino != os.stat(data / "0/img0.png").st_ino
    assert os.stat(data / "0/img0.png").st_nlink == 1
    lines = (review / "before.txt").read_text().splitlines()
    assert len(lines) == 5 and all(len(line.split("\t")) == 3 for line in lines)
    assert at(review, "0/img0.png").relative_to(review).as_posix() in {
        line.split("\t")[0] for line in lines}
    assert "delete the file" in (review / "README.txt").read_text()
    assert tree_hash(data) == before_hash
    with pytest.raises(ReviewError, match="not empty"):
        export_review(run, review)


def test_every_action_becomes_a_manifest_row(run_data, tmp_path):
    data, run = run_data
    review = tmp_path / "review"
    export_review(run, review, threshold=">=2")
    at(review, "0/img0.png").unlink()                                 # confirm
    # 0/img1.png stays in place                                                   # relabel -> cat
    shutil.move(at(review, "1/img2.png"), review / "cat")               # relabel -> cat
    shutil.move(at(review, "cat/sub/img3.png"), review / "_remove")         # remove
    shutil.move(at(review, "cat/img1.png"), review / "_unsure")         # unsure
    (review / "_unsure" / ".DS_Store").write_bytes(b"junk a file manager leaves")  # ignored
    manifest, problems = import_review(review)
    assert problems == []
    got = {r.relpath: (r.action, r.old_label, r.new_label) for r in manifest.itertuples()}
    assert got == {"0/img0.png": ("confirm", "0", "0"), "0/img1.png": ("relabel", "0", "cat"),
                   "1/img2.png": ("relabel", "1", "cat"), "cat/sub/img3.png": ("remove", "cat", ""),
                   "cat/img1.png": ("unsure", "cat", "cat")}
    on_disk = pd.read_csv(review / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(on_disk.columns) == ["sample_id", "relpath", "sha1", "old_label", "new_label", "action"]
    assert len(on_disk) == 5 and (review / "after.txt").read_text().count("\n") == 4
    ledger = read_ledger(run.parent / "dupes-ledger.csv")
    assert ledger[["relpath", "class_name"]].values.tolist() == [["0/img0.png", "0"]]


@pytest.mark.parametrize("break_it, expect", [
    (lambda r: at(r, "0/img0.png").rename(r / "0" / "renamed.png"), "rename it back"),
    (lambda r: (r / "1" / "new.png").write_bytes(b"new"), "not a file this review exported"),
    (lambda r: (r / "dog").mkdir() or shutil.move(at(r, "0/img0.png"), r / "dog"),
     "not a class folder"),
    (lambda r: shutil.copy(at(r, "0/img0.png"), r / "_unsure"), "copied instead of moved"),
    (lambda r: shutil.move(at(r, "0/img0.png"), r / "stray.png"), "not a class folder"),
])
def test_uninterpretable_review_writes_nothing(run_data, tmp_path, break_it, expect):
    _, run = run_data
    review = tmp_path / "review"
    export_review(run, review, threshold=">=2")
    at(review, "1/img2.png").unlink()  # a valid confirm that must not be recorded
    break_it(review)
    manifest, problems = import_review(review)
    assert problems and any(expect in p.fix or expect in p.issue for p in problems)
    assert not (review / "manifest.csv").exists() and not (review / "after.txt").exists()
    assert not (run.parent / "dupes-ledger.csv").exists()


def test_ledger_across_two_rounds(run_data, tmp_path):
    data, run = run_data
    first = tmp_path / "review1"
    export_review(run, first, threshold=">=2")
    at(first, "0/img0.png").unlink()  # confirmed correct
    assert import_review(first)[1] == []
    analysis, _ = Run.open(run).analysis(threshold=">=2")
    confirmed = analysis.dupes.set_index("relpath")["confirmed"]
    assert confirmed["0/img0.png"] and confirmed.sum() == 1
    assert "0/img0.png" not in set(Run.open(run).analysis(threshold=">=2", ignore_confirmed=True)[0].dupes["relpath"])
    # round 2: not asked again, unless asked for
    second = export_review(run, tmp_path / "review2", threshold=">=2")
    assert "0/img0.png" not in set(second["relpath"]) and len(second) == 4
    again = export_review(run, tmp_path / "review3", threshold=">=2", include_confirmed=True)
    assert "0/img0.png" in set(again["relpath"])
    # keyed by content: the same image under a new name in a new run is still confirmed
    data2, run2 = make_run(tmp_path / "round2", WRONG)
    (data2 / "0" / "img0.png").unlink()
    shutil.copy(data / "0" / "img0.png", data2 / "0" / "renamed.png")
    shutil.copy(run.parent / "dupes-ledger.csv", run2.parent / "dupes-ledger.csv")
    index = scan_dataset(data2, image_size=8).index
    from orchestrator.run.ledger import confirmed_mask
    mask = confirmed_mask(index["sha1"].to_numpy(), index["class_name"].to_numpy(),
                          read_ledger(run2.parent / "dupes-ledger.csv"))
    assert index.loc[mask, "relpath"].tolist() == ["0/renamed.png"]


def reviewed(run_data, tmp_path) -> tuple[Path, Path, Path]:
    data, run = run_data
    review = tmp_path / "review"
    export_review(run, review, threshold=">=2")
    shutil.move(at(review, "cat/sub/img3.png"), review / "_remove")
    at(review, "cat/img1.png").unlink()
    assert import_review(review)[1] == []
    return data, run, review / "manifest.csv"


def test_apply_builds_identical_corrected_copies_and_never_touches_src(run_data, tmp_path):
    data, _, manifest = reviewed(run_data, tmp_path)
    before = tree_hash(data)
    changes = apply_manifest(manifest, data, tmp_path / "fixed1")
    apply_manifest(manifest, data, tmp_path / "fixed2", hardlink=True)
    assert tree_hash(data) == before
    one, two = tree_hash(tmp_path / "fixed1"), tree_hash(tmp_path / "fixed2")
    assert one == two  # idempotent: same manifest, same tree (copies or hardlinks)
    inodes = {os.stat(p).st_ino for p in data.rglob("*") if p.is_file()}
    assert not inodes & {os.stat(p).st_ino for p in (tmp_path / "fixed1").rglob("*")}
    assert inodes & {os.stat(p).st_ino for p in (tmp_path / "fixed2").rglob("*")}
    # relabels move content to the new class; a namesake there keeps its name, the newcomer
    # is numbered (every class of this fixture has img0..img3, so each relabel meets one)
    assert one["1/img0__1.png"] == before["0/img0.png"] and one["1/img0.png"] == before["1/img0.png"]
    assert one["cat/img1__1.png"] == before["0/img1.png"]
    assert one["0/img2__1.png"] == before["1/img2.png"]
    assert not {"0/img0.png", "0/img1.png", "1/img2.png"} & set(one)
    assert "cat/sub/img3.png" not in one                  # removed
    assert one["cat/img1.png"] == before["cat/img1.png"]  # confirmed: unchanged
    assert set(one) - {".dupes/CHANGES.csv", ".dupes/provenance.json"} == (set(before) - {"0/img0.png", "0/img1.png", "1/img2.png",
                                                         "cat/sub/img3.png"}) | {
        "1/img0__1.png", "cat/img1__1.png", "0/img2__1.png"}
    on_disk = pd.read_csv(tmp_path / "fixed1" / ".dupes/CHANGES.csv", dtype=str,
                          keep_default_na=False)
    assert on_disk.equals(changes.reset_index(drop=True).astype(str))
    assert sorted(changes["action"]) == ["relabel"] * 3 + ["remove"]
    with pytest.raises(ReviewError, match="not empty"):
        apply_manifest(manifest, data, tmp_path / "fixed1")


def test_apply_refuses_changed_sources_and_escaping_paths(run_data, tmp_path):
    data, _, manifest = reviewed(run_data, tmp_path)
    before = tree_hash(data)
    m = pd.read_csv(manifest, dtype=str, keep_default_na=False)

    def attempt(df, match):
        path = tmp_path / "m.csv"
        df.to_csv(path, index=False)
        with pytest.raises(ReviewError, match=match):
            apply_manifest(path, data, tmp_path / "out")
        assert not (tmp_path / "out").exists()

    changed = m.copy()
    changed.loc[0, "sha1"] = "0" * 40
    attempt(changed, f"{m.loc[0, 'relpath']}: changed since the review")
    for bad in ("../outside.png", "/etc/passwd", "0/../../x.png"):
        escaping = m.copy()
        escaping.loc[0, "relpath"] = bad
        attempt(escaping, "only name files inside")
    (tmp_path / "secret.png").write_bytes(b"outside the dataset")
    os.symlink(tmp_path / "secret.png", data / "0" / "link.png")
    linked = m.copy()
    linked.loc[0, "relpath"] = "0/link.png"
    attempt(linked, "leaves the dataset")
    (data / "0" / "link.png").unlink()
    badlabel = m.copy()
    badlabel.loc[badlabel["action"] == "relabel", "new_label"] = "../up"
    attempt(badlabel, "not a valid folder name")
    assert tree_hash(data) == before


def test_interrupted_apply_leaves_no_half_dataset(run_data, tmp_path, monkeypatch):
    import orchestrator.review.copies as review_mod
    data, _, manifest = reviewed(run_data, tmp_path)
    before = tree_hash(data)
    calls = []
    real = review_mod.copy_file

    def interrupted(src, dst, **kw):
        calls.append(dst)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the copy
        return real(src, dst, **kw)

    monkeypatch.setattr(review_mod, "copy_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        apply_manifest(manifest, data, tmp_path / "fixed")
    assert not (tmp_path / "fixed").exists()
    assert tree_hash(data) == before
    monkeypatch.setattr(review_mod, "copy_file", real)
    assert not list(tmp_path.glob(".fixed.tmp-*"))  # the half copy went with the interruption
    apply_manifest(manifest, data, tmp_path / "fixed")  # a rerun after the interruption works
    assert not list(tmp_path.glob(".fixed.tmp-*"))
    assert (tmp_path / "fixed" / ".dupes/CHANGES.csv").exists()


def test_export_uses_the_ledger_the_run_was_configured_with(run_data, tmp_path):
    _, run = run_data
    custom = tmp_path / "team-ledger.csv"
    config = rundir.read_json(run / "config.json")
    rundir.write_json(run / "config.json", {**config, "ledger": str(custom)})
    first = tmp_path / "review1"
    export_review(run, first, threshold=">=2")
    at(first, "0/img0.png").unlink()
    assert import_review(first)[1] == []
    assert custom.exists() and not (run.parent / "dupes-ledger.csv").exists()
    again = export_review(run, tmp_path / "review2", threshold=">=2")
    assert "0/img0.png" not in set(again["relpath"])  # confirmed in the run's own ledger
