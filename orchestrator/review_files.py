"""The review loop on disk: export dupes for a technician, read back what they did, and
build a corrected copy of the dataset. The source dataset is only ever read."""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath

import pandas as pd

from analysis.review_plan import (ACTIONS, MANIFEST_COLUMNS, REMOVE_DIR, UNSURE_DIR, Problem,
                                  corrected_plan, diff_review, export_table, safe_class,
                                  unsafe_relpath)
from orchestrator import ledger as ledger_mod
from orchestrator import rundir, storage
from orchestrator.run import Run

META_DIR = ".dupes"  # review metadata the technician never needs to see
OWN_FILES = {"before.txt", "after.txt", "README.txt", "manifest.csv"}
JUNK_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}

README = """\
Review of possibly mislabeled images (dupes run {run})

Every image here sits in the folder of the class it is labelled as now. Its file name starts
with the class the models suggested and how many of the held-out predictions voted for it:
    <suggested class>__<votes>of<evaluations>__<original file name>

For each image, do ONE of these with your file manager:
  - delete the file            -> the label is right: keep it (remembered, not asked again)
  - leave it where it is        -> the suggestion is right: relabel it to the suggested class
  - move it to another class    -> relabel it to that class folder
  - move it into _remove/       -> drop the image from the corrected dataset
  - move it into _unsure/       -> change nothing now; it is asked again in the next round

Do not rename files or add new ones. When done, run:
    dupes review import {review}
then build the corrected dataset (your original dataset is never changed):
    dupes apply {review}/manifest.csv --data {data} --out <new dataset folder>
"""


class ReviewError(ValueError):
    """A review or apply step cannot go on; the message lists every problem and its fix."""


def _sha1(f) -> str:
    h = hashlib.sha1()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def sha1_of(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha1(f)


def link_or_copy(src: Path, dst: Path, *, copy: bool = False) -> str:
    """Hardlink when on the same filesystem (instant, no space), else copy; returns which."""
    if not copy:
        try:
            os.link(src, dst)
            return "link"
        except OSError:
            pass
    shutil.copy2(src, dst)
    return "copy"


def fetch(root: Path | str, relpath: str, dst: Path, *, copy: bool = False) -> str:
    """A dataset file into a local tree: downloaded from a bucket, else `link_or_copy`."""
    local = storage.local_path(root, relpath)
    if local is None:
        storage.download(str(root), relpath, dst)
        return "download"
    return link_or_copy(local, dst, copy=copy)


def sha1_in(root: Path | str, relpath: str) -> str | None:
    """sha1 of a dataset file, or None if it is not there."""
    if not storage.is_file(root, relpath):
        return None
    with storage.open_file(root, relpath) as f:
        return _sha1(f)


def _ensure_empty(path: Path, what: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ReviewError(f"{what} {path} exists and is not empty: choose a new folder")


def export_review(run: Run | Path | str, out: Path, *, include_confirmed: bool = False,
                  ledger: Path | str | None = None, copy: bool = False,
                  **rule: object) -> pd.DataFrame:
    """Export the run's dupes into a review tree; returns the exported rows. `rule` overrides
    fields of the run's dupe rule (`threshold`, `min_ratio`)."""
    from orchestrator.passes import load_analysis

    run = run if isinstance(run, Run) else Run.open(run)
    out = Path(out).resolve()
    _ensure_empty(out, "review folder")
    data = run.config().data_dir  # a folder or a bucket prefix
    ledger = run.ledger(ledger)
    analysis, _ = load_analysis(run, ledger=ledger, **rule)
    dupes = analysis.dupes
    if not include_confirmed:
        dupes = dupes[~dupes["confirmed"]]
    table = export_table(dupes, run.index().set_index("sample_id")["sha1"])

    problems = [f"{r}: missing from {data}" for r in table["relpath"]
                if not storage.is_file(data, r)]
    if problems:
        raise ReviewError("the dataset changed since the run; these files are gone:\n  "
                          + "\n  ".join(problems[:20]))
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    for folder in [*analysis.classes, REMOVE_DIR, UNSURE_DIR, META_DIR]:
        (tmp / folder).mkdir(parents=True, exist_ok=True)
    for rel, review_path in zip(table["relpath"], table["review_path"]):
        fetch(data, rel, tmp / review_path, copy=copy)
    (tmp / "before.txt").write_text("".join(
        f"{p}\t{s}\t{h}\n" for p, s, h in zip(table["review_path"], table["sample_id"],
                                             table["sha1"])))
    table.to_csv(tmp / META_DIR / "exported.csv", index=False)
    rundir.write_json(tmp / META_DIR / "review.json", {
        "run_dir": run.location, "data_dir": str(data), "threshold": str(analysis.threshold),
        "classes": analysis.classes, "ledger": str(ledger)})
    (tmp / "README.txt").write_text(README.format(run=run, review=out, data=data))
    if out.exists():
        out.rmdir()
    os.rename(tmp, out)  # a review folder appears complete or not at all
    return table


def list_review_tree(review: Path) -> pd.DataFrame:
    """Every file the technician left in the review tree: review_path, sha1."""
    rows = []
    for dirpath, dirnames, filenames in os.walk(review):
        dirnames[:] = sorted(d for d in dirnames if d != META_DIR)
        rel_dir = Path(dirpath).relative_to(review)
        for name in sorted(filenames):
            if name in JUNK_FILES or (rel_dir == Path(".") and name in OWN_FILES):
                continue
            rel = (rel_dir / name).as_posix()
            rows.append((rel, sha1_of(Path(dirpath) / name)))
    return pd.DataFrame(rows, columns=["review_path", "sha1"])


def import_review(review: Path, *, ledger: Path | None = None) -> tuple[pd.DataFrame, list[Problem]]:
    """Read back the technician's actions. With problems, nothing is written."""
    review = Path(review).resolve()
    meta_path = review / META_DIR / "review.json"
    if not meta_path.exists():
        raise ReviewError(f"{review} is not a review folder made by `dupes review export` "
                          f"({META_DIR}/review.json is missing)")
    meta = rundir.read_json(meta_path)
    # class names like "0".."9" must stay text: read every column as str, then the id
    before = pd.read_csv(review / META_DIR / "exported.csv", dtype=str, keep_default_na=False)
    before["sample_id"] = before["sample_id"].astype("int64")
    after = list_review_tree(review)
    manifest, problems = diff_review(before, after, meta["classes"])
    if problems:
        return manifest, problems
    rundir.write_text(review / "after.txt",
                      "".join(f"{p}\t{h}\n" for p, h in zip(after["review_path"], after["sha1"])))
    rundir.write_csv(review / "manifest.csv", manifest)
    confirmed = manifest[manifest["action"] == "confirm"].rename(columns={"old_label": "class_name"})
    ledger_mod.add_confirmed(ledger_mod.ledger_path(review, meta["ledger"], ledger),
                             confirmed, str(review))
    return manifest, []


def _unsafe_relpath(rel: str, src: Path | str) -> str | None:
    """Why `rel` may not be used inside src (None if it is fine)."""
    why = unsafe_relpath(rel)
    if why is None and (outside := storage.escapes(src, rel)) is not None:
        why = f"leaves the dataset (resolves to {outside}, e.g. through a symlink)"
    return why


def apply_manifest(manifest_path: Path, src: Path | str, dst: Path, *, copy: bool = False) -> pd.DataFrame:
    """Build a corrected copy of `src` in `dst` with the manifest's relabels and removals.

    Everything is checked before anything is written; the copy is built in a temporary
    sibling folder and renamed to `dst` at the end. Returns the CHANGES table.
    """
    src, dst = storage.parse_location(storage.absolute(src)), Path(dst).resolve()
    try:
        files = storage.all_files(src)
    except FileNotFoundError:
        raise ReviewError(f"dataset {src} does not exist") from None
    if not files:
        raise ReviewError(f"dataset {src} has no files (or cannot be listed)")
    _ensure_empty(dst, "output folder")
    if storage.same_tree(src, dst):
        raise ReviewError(f"the output {dst} must be outside the dataset {src}")
    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    missing = sorted(set(MANIFEST_COLUMNS) - set(manifest.columns))
    if missing:
        raise ReviewError(f"{manifest_path} lacks columns {missing}; expected {MANIFEST_COLUMNS}")
    problems = []
    for row in manifest.itertuples(index=False):
        why = _unsafe_relpath(row.relpath, src)
        if why:
            problems.append(f"{row.relpath}: {why}; a manifest may only name files inside {src}")
            continue
        if row.action not in ACTIONS:
            problems.append(f"{row.relpath}: unknown action '{row.action}' (valid: {ACTIONS})")
        if row.action == "relabel" and not safe_class(row.new_label):
            problems.append(f"{row.relpath}: new label '{row.new_label}' is not a valid folder name")
        sha1 = sha1_in(src, row.relpath)
        if sha1 is None:
            problems.append(f"{row.relpath}: not in {src}")
        elif sha1 != row.sha1:
            problems.append(f"{row.relpath}: changed since the review (sha1 differs); review it "
                            "again or restore the reviewed file")
    if problems:
        raise ReviewError(f"{manifest_path} cannot be applied to {src}:\n  " + "\n  ".join(problems))

    moves, changes_df = corrected_plan(files, manifest)
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    for rel, target in moves:
        (tmp / target).parent.mkdir(parents=True, exist_ok=True)
        fetch(src, rel, tmp / target, copy=copy)
    tmp.mkdir(parents=True, exist_ok=True)
    changes_df.to_csv(tmp / "CHANGES.csv", index=False)
    if dst.exists():
        dst.rmdir()
    os.rename(tmp, dst)
    return changes_df
