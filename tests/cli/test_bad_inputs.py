"""Hardening: what careful users do by mistake and what hostile inputs do on purpose.

Every case ends in its documented exit code (0 done, 1 failed trainings or sanity, 2 unusable
input) with a message that names the file or flag and the fix, never a traceback or a hang,
and the source dataset is left exactly as it was: the content, the kind and the mode of every
entry, and its link count (a hardlink made from a review folder or a corrected copy into the
dataset shows there).

Groups: command-line values; bad files inside a dataset (one real `dupes run` over all of
them); damaged runs on resume; the review loop and `apply`; names that collide with the
tool's own; leftovers of interrupted writes.
"""
import hashlib
import json
import os
import shutil
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from orchestrator.run import rundir

from orchestrator.run import partitions
from orchestrator.cli.main import main
from tests.conftest import write_digit_dataset
from tests.review.test_review import WRONG, at, make_run

# -- helpers -------------------------------------------------------------------------------


def source_state(root: Path) -> dict:
    """relpath -> (kind, mode, links, size, sha1) of every entry under root, symlinks not
    followed: what "the dataset is unchanged" means here."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = os.lstat(p)
            digest = hashlib.sha1(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) \
                else os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
            state[p.relative_to(root).as_posix()] = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777,
                                                      st.st_nlink, st.st_size, digest)
    return state


def dupes(capsys, *argv) -> tuple[int, str]:
    """`dupes ARGV` in this process: (exit code, everything it printed)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: exit 2 with the usage line
        code = e.code
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text, text
    return code, text


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (what a decompression bomb looks like to a
    scanner: Pillow refuses it before decoding a pixel)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                         8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, dict]:
    """A good dataset for the command-line cases (none of them may touch it)."""
    data = write_digit_dataset(tmp_path_factory.mktemp("clean") / "data", per_class=6)
    return data, source_state(data)


# -- command-line values: refused before anything is written ----------------------------------

def _scratch(t: Path) -> None:
    """The files the command-line cases point at."""
    (t / "a-file").write_text("x")
    (t / "full").mkdir(exist_ok=True)
    (t / "full" / "keep.txt").write_text("x")
    (t / "binary.json").write_bytes(bytes(range(256)))
    (t / "nan.json").write_text('{"lr": NaN}')
    (t / "unknown.json").write_text('{"learning_rate": 0.1}')
    (t / "lr-text.json").write_text('{"lr": "0.1"}')
    (t / "batch-null.json").write_text('{"batch_size": null}')
    (t / "broken.yaml").write_text("lr: {loguniform: [0.01, 0.1]\nepochs: [\n")


def _flag_cases(d: Path, t: Path) -> dict[str, tuple[list, str]]:
    """name -> (argv, the text the message must hold); `d` a good dataset, `t` _scratch."""
    return {
        "lr-nan": (["run", d, "--lr", "nan"], "--lr"),
        "lr-negative": (["run", d, "--lr", "-0.1"], "--lr"),
        "min-ratio-nan": (["run", d, "--min-ratio", "nan"], "--min-ratio"),
        "gpus-negative": (["run", d, "--gpus-per-training", "-1"], "--gpus-per-training"),
        "cpus-zero": (["run", d, "--cpus-per-training", "0"], "--cpus-per-training"),
        "repeats-zero": (["run", d, "--repeats", "0"], "--repeats"),
        "epochs-negative": (["run", d, "--epochs", "-3"], "--epochs"),
        "threshold-text": (["run", d, "--threshold", ">=eleven"], "--threshold"),
        "resources-not-json": (["run", d, "--resources-per-training", "{bad"],
                               "--resources-per-training"),
        "aspect-unknown": (["run", d, "--aspect", "sideways"], "--aspect"),
        "image-size-zero": (["run", d, "--image-size", "0"], "--image-size"),
        "out-unknown-scheme": (["run", d, "--out", "ftp://host/runs/x"], "ftp://"),
        "config-missing": (["run", d, "--config", t / "missing.json"], "missing.json"),
        "config-binary": (["run", d, "--config", t / "binary.json"], "binary.json"),
        "config-nan": (["run", d, "--config", t / "nan.json"], "nan.json"),
        "config-unknown-key": (["run", d, "--config", t / "unknown.json"], "learning_rate"),
        "no-data": (["run"], "DATA"),
        "data-missing": (["run", t / "nowhere"], "nowhere"),
        "data-is-a-file": (["run", t / "a-file"], "a-file"),
        "resume-not-a-run": (["run", "--resume", d], "not a run directory"),
        "out-is-a-file": (["run", d, "--out", t / "a-file"], "a-file"),
        "out-not-empty": (["run", d, "--out", t / "full"], "full"),
        "out-inside-data": (["run", d, "--out", d / "runs" / "r1"], "inside the dataset"),
        "storage-inside-data": (["run", d, "--storage", d], "inside the dataset"),
        "tune-out-inside-data": (["tune", d, "--out", d / "search"], "inside the dataset"),
        "sanity-data-missing": (["sanity", t / "nowhere"], "nowhere"),
        "report-not-a-run": (["report", d], "not a run directory"),
        "status-missing": (["status", t / "nowhere"], "nowhere"),
        "top-losses-k-zero": (["top-losses", d, "--k", "0"], "--k"),
        "budget-not-a-duration": (["run", d, "--budget", "10x"], "--budget"),
        "budget-zero": (["run", d, "--budget", "0m"], "--budget"),
        "label-smoothing-5": (["run", d, "--label-smoothing", "5"], "--label-smoothing"),
        "image-size-1": (["run", d, "--image-size", "1"], "--image-size"),
        "image-size-huge": (["run", d, "--image-size", "100000"], "--image-size"),
        "sanity-image-size-huge": (["sanity", d, "--image-size", "100000"], "--image-size"),
        "config-lr-text": (["run", d, "--config", t / "lr-text.json"], "lr must be"),
        "config-batch-null": (["run", d, "--config", t / "batch-null.json"], "batch_size"),
        "stem-pool-too-big": (["run", d, "--image-size", "16", "--stem-pool", "64"],
                              "--stem-pool"),
        "tune-space-broken-yaml": (["tune", d, "--space", t / "broken.yaml"], "not valid YAML"),
    }


FLAG_CASES = sorted(_flag_cases(Path("D"), Path("T")))


@pytest.mark.parametrize("case", FLAG_CASES)
def test_a_bad_command_line_exits_2_naming_it(case, clean, tmp_path, capsys, monkeypatch):
    data, before = clean
    monkeypatch.chdir(tmp_path)  # a default runs/ folder would appear here, not in the repo
    _scratch(tmp_path)
    argv, names = _flag_cases(data, tmp_path)[case]
    code, text = dupes(capsys, *argv)
    assert code == 2, text
    assert names in text, text
    assert source_state(data) == before
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# -- bad files inside a dataset: one real pass over all of them -------------------------------

BAD_FILES = {  # relpath -> what its skip reason must say
    "0/empty.png": "empty file", "0/truncated.png": "cannot decode",
    "1/notes.jpg": "cannot decode", "1/download.png": "cannot decode",
    "7/garbage.jpg": "cannot decode", "7/bomb.png": "too many pixels", "1/pipe.png": "a FIFO",
    "0/zeros.png": "a device", "1/dangling.png": "cannot read",
    "readme.txt": "not inside a class folder", "7/labels.txt": "not an image file"}


def _write_bad_files(data: Path) -> None:
    src = next((data / "0").glob("*.png"))
    (data / "0" / "empty.png").write_bytes(b"")
    (data / "0" / "truncated.png").write_bytes(src.read_bytes()[:60])
    (data / "1" / "notes.jpg").write_text("not a picture\n")
    (data / "1" / "download.png").write_text("<html><body>403 Forbidden</body></html>\n")
    (data / "7" / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    png_header_only(data / "7" / "bomb.png", 20000, 20000)
    os.mkfifo(data / "1" / "pipe.png")  # a plain open() of it would wait forever
    os.symlink("/dev/zero", data / "0" / "zeros.png")  # a plain read() would never end
    os.symlink(data / "0" / "gone.png", data / "1" / "dangling.png")
    (data / "readme.txt").write_text("class folders below\n")
    (data / "7" / "labels.txt").write_text("7\n")


def _good_oddities(data: Path) -> list[str]:
    """Unusual but valid images: they must be used, not skipped."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 65535, (8, 8)).astype(np.uint16)).save(data / "0" / "deep16.png")
    Image.fromarray(rng.integers(0, 255, (8, 8, 4), np.uint8), "CMYK").save(data / "1" / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated by the camera
    Image.fromarray(rng.integers(0, 255, (6, 8, 3), np.uint8)).save(data / "7" / "rotated.jpg",
                                                                    exif=exif)
    frames = [Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)) for _ in range(3)]
    frames[0].save(data / "0" / "anim.gif", save_all=True, append_images=frames[1:])
    (data / "7" / "deep" / "er").mkdir(parents=True)
    shutil.copy(next((data / "7").glob("d*.png")), data / "7" / "deep" / "er" / "nested.png")
    (data / "1" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return ["0/deep16.png", "1/cmyk.jpg", "7/rotated.jpg", "0/anim.gif", "7/deep/er/nested.png"]


@pytest.fixture(scope="module")
def bad_pass(tmp_path_factory):
    """`dupes run` on digits with every bad entry of `BAD_FILES` mixed in."""
    root = tmp_path_factory.mktemp("badpass")
    data = write_digit_dataset(root / "data", per_class=24)
    _write_bad_files(data)
    good = _good_oddities(data)
    before = source_state(data)
    run = root / "run"
    code = main([str(a) for a in ["run", data, "--out", run, "--repeats", "2", "--epochs", "2",
                                  "--no-sanity", "--width", "8", "--batch-size", "16",
                                  "--epoch-losses", "0", "--mode", "scratch"]])
    return {"data": data, "run": run, "code": code, "good": good,
            "before": before, "after": source_state(data)}


@pytest.mark.slow
@pytest.mark.parametrize("rel", sorted(BAD_FILES))
def test_a_bad_file_is_skipped_with_its_reason_and_the_pass_goes_on(bad_pass, rel):
    assert bad_pass["code"] == 0
    skipped = pd.read_csv(bad_pass["run"] / "skipped.csv")
    reasons = dict(zip(skipped["relpath"], skipped["reason"]))
    assert BAD_FILES[rel] in reasons[rel], reasons.get(rel)
    assert bad_pass["after"] == bad_pass["before"]


@pytest.mark.slow
def test_the_plan_and_what_auto_resolved_to_are_recorded(bad_pass):
    config = json.loads((bad_pass["run"] / "config.json").read_text())
    plan = json.loads((bad_pass["run"] / "plan.json").read_text())
    assert config["hyp"]["model"] == plan["model"] == "smallcnn"  # never "auto" on record
    assert plan["trainings"] == 4 and plan["estimate_s"] > 0 and plan["probe"]["train_rate"] > 0
    # the flags given are kept; what none set is chosen, with its reason, flips by the
    # mirror check (digits: a mirrored digit is another one, or none)
    assert {"width", "epochs", "batch_size"} <= set(config["hyp_set"])
    assert (config["hyp"]["width"], config["hyp"]["epochs"]) == (8, 2)
    chosen = config["hyp_chosen"]
    assert "flip" not in config["hyp_set"] and config["hyp"]["flip"] is False
    assert chosen["flip"].startswith("off: ") and plan["probe"]["mirror"]["accuracy"] >= 0
    assert "lr" in chosen and not {"width", "epochs"} & set(chosen)
    assert config["scan"]["image_size"] == plan["image_size"] == 8  # the resolved size


@pytest.mark.slow
def test_a_budget_nothing_fits_stops_before_any_training(tmp_path, capsys):
    data = write_digit_dataset(tmp_path / "data", per_class=10)
    before = source_state(data)
    code, text = dupes(capsys, "run", data, "--out", tmp_path / "r", "--budget", "1s",
                       "--no-sanity")
    assert code == 2 and "--budget 1.0 s cannot be met" in text and "Give --budget" in text, text
    assert not (tmp_path / "r" / "predictions").exists()
    assert source_state(data) == before


@pytest.mark.slow
def test_unusual_but_valid_images_are_used(bad_pass):
    index = pd.read_parquet(bad_pass["run"] / "index.parquet")
    assert set(bad_pass["good"]) <= set(index["relpath"])
    assert not {r for r in index["relpath"] if "/." in r}  # hidden files are not images
    skipped = set(pd.read_csv(bad_pass["run"] / "skipped.csv")["relpath"])
    assert skipped == set(BAD_FILES)


# -- damaged runs: a training counts as done only when its predictions are complete ----------

@pytest.mark.slow
def test_damaged_partitions_are_retrained_in_the_folder_the_user_names(bad_pass, tmp_path,
                                                                       capsys):
    """A run folder moved elsewhere, then one prediction file truncated and one deleted
    (its folder kept): the resume retrains exactly those two, in the named folder, and every
    image ends with exactly R predictions."""
    original = bad_pass["run"]
    moved = tmp_path / "moved-run"
    shutil.copytree(original, moved, symlinks=True)
    untouched = source_state(original)
    truncated = next(partitions.partition_dir(moved, 0, 1).glob("*.parquet"))
    truncated.write_bytes(truncated.read_bytes()[:100])
    for p in partitions.partition_dir(moved, 1, 0).glob("*.parquet"):
        p.unlink()
    code, text = dupes(capsys, "report", moved)  # reading first: a message, not a traceback
    assert code == 2 and "--resume" in text and str(moved) in text
    code, text = dupes(capsys, "run", "--resume", moved)
    assert code == 0, text
    assert "r00 f1 is trained again" in text and "r01 f0 is trained again" in text
    assert "resuming: 2 of 4 trainings already done" in text
    # the plan of what is left, with its estimate, comes before any training
    assert text.index("plan: 2 trainings, about") < text.index("training r00 f1 running")
    preds = partitions.read_predictions(moved, columns=["sample_id"]).to_pandas()
    n = len(pd.read_parquet(moved / "index.parquet"))
    assert len(preds) == 2 * n and (preds.groupby("sample_id").size() == 2).all()
    assert json.loads((moved / "config.json").read_text())["run_dir"] == str(moved.resolve())
    assert source_state(original) == untouched  # the old place was not written to


# -- the review loop and apply -----------------------------------------------------------------

@pytest.fixture
def reviewed_run(tmp_path):
    """A finished (synthetic) run and its exported review folder."""
    data, run = make_run(tmp_path, WRONG)
    review = tmp_path / "review"
    assert main(["review", "export", str(run), "--out", str(review), "--threshold", ">=2"]) == 0
    return data, run, review, source_state(data)


def _manifest(tmp_path, data, review, capsys):
    code, text = dupes(capsys, "review", "import", review)
    assert code == 0, text
    return pd.read_csv(review / "manifest.csv", dtype=str, keep_default_na=False)


def _review_cases():
    """name -> (how to break it, argv after the breaking, the text the message must hold).
    Each function takes (tmp_path, data, run, review, capsys) and returns the argv."""

    def import_not_review(t, d, r, v, c):
        return ["review", "import", d], "review.json is missing"

    def import_truncated_meta(t, d, r, v, c):
        meta = v / ".dupes" / "review.json"
        meta.write_bytes(meta.read_bytes()[:20])
        return ["review", "import", v], "review.json is damaged"

    def import_exported_gone(t, d, r, v, c):
        (v / ".dupes" / "exported.csv").unlink()
        return ["review", "import", v], "exported.csv"

    def import_new_file(t, d, r, v, c):
        (v / "0" / "extra.png").write_bytes(b"new")
        return ["review", "import", v], "extra.png"

    def import_renamed(t, d, r, v, c):
        at(v, "0/img0.png").rename(v / "0" / "mine.png")
        return ["review", "import", v], "mine.png"

    def import_fifo_in_review(t, d, r, v, c):
        os.mkfifo(v / "0" / "pipe.png")  # a plain open() of it would wait forever
        return ["review", "import", v], "pipe.png"

    def import_ledger_inside_data(t, d, r, v, c):
        return ["review", "import", v, "--ledger", d / "ledger.csv"], "inside the dataset"

    def export_out_inside_data(t, d, r, v, c):
        return ["review", "export", r, "--out", d / "review"], "inside the dataset"

    def export_out_not_empty(t, d, r, v, c):
        return ["review", "export", r, "--out", v], "not empty"

    def export_not_a_run(t, d, r, v, c):
        return ["review", "export", d, "--out", t / "r2"], "not a run directory"

    def apply_binary_manifest(t, d, r, v, c):
        (t / "m.csv").write_bytes(bytes(range(256)) * 4)
        return ["apply", t / "m.csv", "--data", d, "--out", t / "fixed"], "m.csv"

    def apply_missing_manifest(t, d, r, v, c):
        return ["apply", t / "none.csv", "--data", d, "--out", t / "fixed"], "none.csv"

    def apply_missing_columns(t, d, r, v, c):
        (t / "m.csv").write_text("relpath,action\n0/img0.png,remove\n")
        return ["apply", t / "m.csv", "--data", d, "--out", t / "fixed"], "lacks columns"

    def edit(change, text):
        def case(t, d, r, v, c):
            m = _manifest(t, d, v, c)
            change(m, t, d)
            m.to_csv(t / "m.csv", index=False)
            return ["apply", t / "m.csv", "--data", d, "--out", t / "fixed"], text
        return case

    def up(m, t, d):
        m.loc[0, "relpath"] = "../outside.png"

    def absolute(m, t, d):
        m.loc[0, "relpath"] = "/etc/passwd"

    def through_link(m, t, d):
        (t / "secret.png").write_bytes(b"secret")
        os.symlink(t / "secret.png", d / "0" / "link.png")
        m.loc[0, "relpath"] = "0/link.png"

    def changed(m, t, d):
        m.loc[0, "sha1"] = "0" * 40

    def unknown_action(m, t, d):
        m.loc[0, "action"] = "burn"

    def hidden_class(m, t, d):
        m.loc[m["action"] == "relabel", "new_label"] = ".hidden"

    def apply_out_inside_data(t, d, r, v, c):
        _manifest(t, d, v, c)
        return ["apply", v / "manifest.csv", "--data", d, "--out", d / "fixed"], \
            "inside the dataset"

    def apply_out_is_file(t, d, r, v, c):
        _manifest(t, d, v, c)
        (t / "a-file").write_text("x")
        return ["apply", v / "manifest.csv", "--data", d, "--out", t / "a-file"], "is a file"

    def apply_data_missing(t, d, r, v, c):
        _manifest(t, d, v, c)
        return ["apply", v / "manifest.csv", "--data", t / "nowhere", "--out", t / "fixed"], \
            "nowhere"

    def apply_link_and_copy(t, d, r, v, c):
        _manifest(t, d, v, c)
        return ["apply", v / "manifest.csv", "--data", d, "--out", t / "fixed", "--hardlink",
                "--copy"], "--hardlink"

    return {f.__name__: f for f in [
        import_not_review, import_truncated_meta, import_exported_gone, import_new_file,
        import_fifo_in_review,
        import_renamed, import_ledger_inside_data, export_out_inside_data,
        export_out_not_empty, export_not_a_run, apply_binary_manifest, apply_missing_manifest,
        apply_missing_columns, apply_out_inside_data, apply_out_is_file, apply_data_missing,
        apply_link_and_copy]} | {
        "apply_path_up": edit(up, "../outside.png"),
        "apply_absolute_path": edit(absolute, "/etc/passwd"),
        "apply_symlink_out": edit(through_link, "leaves the dataset"),
        "apply_changed_source": edit(changed, "changed since the review"),
        "apply_unknown_action": edit(unknown_action, "burn"),
        "apply_hidden_class": edit(hidden_class, ".hidden")}


REVIEW_CASES = sorted(_review_cases())


@pytest.mark.parametrize("case", REVIEW_CASES)
def test_a_bad_review_or_manifest_exits_2_naming_it(case, reviewed_run, tmp_path, capsys):
    data, run, review, _ = reviewed_run
    argv, names = _review_cases()[case](tmp_path, data, run, review, capsys)
    before = source_state(data)  # after the case set its trap (a symlink, say)
    code, text = dupes(capsys, *argv)
    assert code == 2, text
    assert names in text, text
    assert source_state(data) == before
    assert not (tmp_path / "fixed").exists() and not (data / "fixed").exists()
    if case.startswith("import_"):  # a refused import writes nothing into the review either
        assert not (review / "after.txt").exists() and not (review / "manifest.csv").exists()


def test_review_and_corrected_copies_never_share_a_file_with_the_dataset(reviewed_run, tmp_path,
                                                                         capsys):
    data, run, review, before = reviewed_run
    # the technician rotates an image in the review folder and leaves it there (relabel)
    left = at(review, "0/img1.png")
    Image.open(left).rotate(90).save(left)
    manifest = _manifest(tmp_path, data, review, capsys)
    assert source_state(data) == before
    assert manifest.set_index("relpath").loc["0/img1.png", "action"] == "relabel"
    code, text = dupes(capsys, "apply", review / "manifest.csv", "--data", data, "--out",
                       tmp_path / "fixed")
    assert code == 0, text
    for p in (tmp_path / "fixed").rglob("*.png"):  # edit every image of the corrected copy
        p.write_bytes(b"edited")
    assert source_state(data) == before


def test_hardlinks_only_on_request_and_said_so(reviewed_run, tmp_path, capsys):
    data, _, review, before = reviewed_run
    _manifest(tmp_path, data, review, capsys)
    code, text = dupes(capsys, "apply", review / "manifest.csv", "--data", data, "--out",
                       tmp_path / "fixed", "--hardlink")
    assert code == 0 and "edits it in the dataset too" in text, text
    assert source_state(data) != before  # the link counts say the files are shared now


def test_interrupted_apply_leftovers_are_removed_and_reported(reviewed_run, tmp_path, capsys):
    data, _, review, before = reviewed_run
    _manifest(tmp_path, data, review, capsys)
    stale = tmp_path / ".fixed.tmp-deadbeef"
    (stale / "0").mkdir(parents=True)
    (stale / "0" / "half.png").write_bytes(b"half")
    code, text = dupes(capsys, "apply", review / "manifest.csv", "--data", data, "--out",
                       tmp_path / "fixed")
    assert code == 0 and str(stale) in text, text
    assert not stale.exists() and source_state(data) == before


# -- names of the tool's own --------------------------------------------------------------------

def test_a_class_named_like_the_review_folders_keeps_its_images(tmp_path, capsys):
    classes = ["0", "_remove", "_unsure"]
    wrong = {"_remove/img0.png": "0", "_unsure/img1.png": "_remove", "0/img2.png": "_unsure"}
    data, run = make_run(tmp_path, wrong, classes=classes)
    before = source_state(data)
    review = tmp_path / "review"
    code, text = dupes(capsys, "review", "export", run, "--out", review, "--threshold", ">=2")
    assert code == 0, text
    assert (review / "__remove").is_dir() and (review / "__unsure").is_dir()
    assert "__remove/" in (review / "README.txt").read_text()
    # the technician leaves every suggestion (relabel) and removes nothing
    manifest = _manifest(tmp_path, data, review, capsys)
    assert sorted(manifest["action"]) == ["relabel"] * 3, manifest
    code, text = dupes(capsys, "apply", review / "manifest.csv", "--data", data, "--out",
                       tmp_path / "fixed")
    assert code == 0, text
    count = lambda root: sum(1 for p in root.rglob("*.png"))  # noqa: E731
    assert count(tmp_path / "fixed") == count(data) == 12
    assert (tmp_path / "fixed" / "0" / "img0__1.png").exists()  # from _remove/, relabelled
    assert source_state(data) == before


def test_the_changes_record_stays_out_of_the_next_scan_and_keeps_its_history(reviewed_run,
                                                                             tmp_path, capsys):
    from orchestrator.data.scan import scan_dataset

    data, run, review, _ = reviewed_run
    _manifest(tmp_path, data, review, capsys)
    first, second = tmp_path / "fixed1", tmp_path / "fixed2"
    assert dupes(capsys, "apply", review / "manifest.csv", "--data", data, "--out", first)[0] == 0
    assert scan_dataset(first, image_size=8).skipped.empty  # no stray CHANGES.csv at the top
    empty = pd.DataFrame(columns=pd.read_csv(review / "manifest.csv").columns)
    empty.to_csv(tmp_path / "none.csv", index=False)  # round 2: a manifest with no change
    assert dupes(capsys, "apply", tmp_path / "none.csv", "--data", first, "--out", second)[0] == 0
    assert (second / ".dupes" / "CHANGES.1.csv").read_bytes() == \
        (first / ".dupes" / "CHANGES.csv").read_bytes()


# -- a start that fails leaves nothing that blocks the next one --------------------------------

@pytest.mark.slow
def test_a_failed_start_leaves_no_run_folder_behind(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("L", (8, 8)).save(flat / "a.png")  # images, but no class folders
    before = source_state(flat)
    code, text = dupes(capsys, "run", flat, "--out", tmp_path / "r1", "--no-sanity")
    assert code == 2 and "no class sub-folders" in text, text
    assert not (tmp_path / "r1").exists() and "the same --out can be used again" in text
    assert source_state(flat) == before


# -- stale state --------------------------------------------------------------------------------

def test_status_tells_a_dead_driver_from_a_live_one(tmp_path, capsys):
    import time

    _, run = make_run(tmp_path, WRONG)
    progress = {"updated": "earlier", "updated_unix": time.time() - 600, "running": True,
                "trainings": [{"repeat": 0, "fold": 0, "status": "running", "epoch": 3,
                               "epochs": 20}]}
    rundir.write_json(run / "progress.json", progress)
    code, text = dupes(capsys, "status", run)
    assert code == 0 and "no heartbeat for 10 min" in text and f"--resume {run}" in text, text
    rundir.write_json(run / "progress.json", {**progress, "updated_unix": time.time()})
    code, text = dupes(capsys, "status", run)
    assert code == 0 and "no heartbeat" not in text and "running" in text, text


def test_an_import_nobody_touched_is_refused_with_the_count(tmp_path, capsys):
    images = [f"{c}/{sub}img{i}.png" for c in ("0", "1", "cat") for i, sub in
              enumerate(["", "", "", "sub/"])]
    others = {"0": "1", "1": "cat", "cat": "0"}
    wrong = {rel: others[rel.split("/")[0]] for rel in images[:10]}
    data, run = make_run(tmp_path, wrong)
    review = tmp_path / "review"
    assert dupes(capsys, "review", "export", run, "--out", review, "--threshold", ">=2")[0] == 0
    code, text = dupes(capsys, "review", "import", review)
    assert code == 2 and "10 of 10 exported images" in text and "--accept-untouched" in text, text
    assert not (review / "manifest.csv").exists()
    code, text = dupes(capsys, "review", "import", review, "--accept-untouched")
    assert code == 0, text
    manifest = pd.read_csv(review / "manifest.csv", dtype=str)
    assert (manifest["action"] == "relabel").sum() == 10
