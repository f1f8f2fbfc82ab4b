"""The review loop on disk: export dupes for a technician and read back what they did (the
corrected copy: `review.apply`). The source dataset is only ever read."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from rich.console import Group
from rich.table import Table

from analysis.review_plan import (REMOVE_DIR, UNSURE_DIR, Problem, diff_review, export_table,
                                  special_dirs)
from orchestrator.errors import ReviewError
from orchestrator.review.copies import build_into, ensure_empty, fetch, outside, sha1_of
from orchestrator.run import ledger as ledger_mod
from orchestrator.run import rundir, storage
from orchestrator.run.lock import FolderLock
from orchestrator.run.directory import Run

META_DIR = ".dupes"  # review metadata the technician never needs to see
OWN_FILES = {"before.txt", "after.txt", "README.txt", "manifest.csv"}
JUNK_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}

README = """\
Review of possibly mislabeled images (dupes run {run})

Every image here sits in the folder of the class it is labelled as now. Its file name starts
with its rank (1 = the most suspect: sorted by name, each folder lists those first), the
class the models suggested and how many of the held-out predictions voted for it:
    <rank>__<suggested class>__<votes>of<evaluations>__<original file name>

For each image, do ONE of these with your file manager:
  - delete the file            -> the label is right: keep it (remembered, not asked again)
  - leave it where it is        -> the suggestion is right: relabel it to the suggested class
  - move it to another class    -> relabel it to that class folder
  - move it into {remove}/       -> drop the image from the corrected dataset
  - move it into {unsure}/       -> change nothing now; it is asked again in the next round

The images here are copies: editing one (rotate, crop, re-save) changes nothing in the
dataset, and an edited file is read as the same image.

Do not rename files or add new ones. When done, run:
    dupes review import {review}
then build the corrected dataset (your original dataset is never changed):
    dupes apply {review}/manifest.csv --data {data} --out <new dataset folder>
"""


def _read_meta(review: Path) -> dict:
    meta_path = review / META_DIR / "review.json"
    if not meta_path.exists():
        raise ReviewError(f"{review} is not a review folder made by `dupes review export` "
                          f"({META_DIR}/review.json is missing)")
    try:
        meta = rundir.read_json(meta_path)
        if not isinstance(meta, dict) or not {"classes", "ledger"} <= set(meta):
            raise ValueError("fields classes and ledger are missing")
    except (ValueError, UnicodeDecodeError) as e:
        raise ReviewError(f"{meta_path} is damaged ({e}): export the review again "
                          "(`dupes review export RUN --out NEW`) and redo its moves there"
                          ) from None
    return meta


def export_review(run: Run | Path | str, out: Path, *, include_confirmed: bool = False,
                  ledger: Path | str | None = None, **rule: object) -> pd.DataFrame:
    """Export the run's dupes into a review tree of copies; returns the exported rows. `rule`
    overrides fields of the run's dupe rule (`threshold`, `min_ratio`)."""
    run = run if isinstance(run, Run) else Run.open(run)
    out = Path(out).resolve()
    ensure_empty(out, "review folder")
    data = run.config().data_dir  # a folder or a bucket prefix
    outside(out, data, "review folder")
    ledger = run.ledger(ledger)
    analysis, _ = run.analysis(ledger=ledger, **rule)
    dupes = analysis.dupes
    if not include_confirmed:
        dupes = dupes[~dupes["confirmed"]]
    table = export_table(dupes, run.index().set_index("sample_id")["sha1"])

    problems = [f"{r}: missing from {data}" for r in table["relpath"]
                if not storage.is_file(data, r)]
    if problems:
        raise ReviewError("the dataset changed since the run; these files are gone:\n  "
                          + "\n  ".join(problems[:20]))
    remove_dir, unsure_dir = special_dirs(analysis.classes)

    def build(tmp: Path) -> None:
        for folder in [*analysis.classes, remove_dir, unsure_dir, META_DIR]:
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        for rel, review_path in zip(table["relpath"], table["review_path"]):
            fetch(data, rel, tmp / review_path)
        (tmp / "before.txt").write_text("".join(
            f"{p}\t{s}\t{h}\n" for p, s, h in zip(table["review_path"], table["sample_id"],
                                                 table["sha1"])))
        rundir.write_csv(tmp / META_DIR / "exported.csv", table)
        rundir.write_json(tmp / META_DIR / "review.json", {
            "run_dir": run.location, "data_dir": str(data), "threshold": str(analysis.threshold),
            "classes": analysis.classes, "ledger": str(ledger), "remove_dir": remove_dir,
            "unsure_dir": unsure_dir})
        (tmp / "README.txt").write_text(README.format(run=run, review=out, data=data,
                                                      remove=remove_dir, unsure=unsure_dir))

    build_into(out, build)  # a review folder appears complete or not at all
    return table


def list_review_tree(review: Path, *, hashes: bool = True) -> pd.DataFrame:
    """Every file the technician left in the review tree: review_path, sha1 ("" without
    `hashes`: where only the paths matter, no file is read)."""
    rows = []
    for dirpath, dirnames, filenames in os.walk(review):
        dirnames[:] = sorted(d for d in dirnames if d != META_DIR)
        rel_dir = Path(dirpath).relative_to(review)
        for name in sorted(filenames):
            if name in JUNK_FILES or (rel_dir == Path(".") and name in OWN_FILES):
                continue
            rel = (rel_dir / name).as_posix()
            rows.append((rel, sha1_of(Path(dirpath) / name) if hashes else ""))
    return pd.DataFrame(rows, columns=["review_path", "sha1"])


# An import where most exported files were left where the export put them accepts every
# suggestion for them: the method's rule, but also what a folder nobody reviewed looks like.
UNTOUCHED_MIN, UNTOUCHED_SHARE = 10, 0.5


def read_exported(review: Path) -> pd.DataFrame:
    """The rows a review folder was exported with (`.dupes/exported.csv`); ReviewError naming
    the file if it is damaged or missing."""
    exported = review / META_DIR / "exported.csv"
    try:  # class names like "0".."9" must stay text: read every column as str, then the id
        before = pd.read_csv(exported, dtype=str, keep_default_na=False)
        before["sample_id"] = before["sample_id"].astype("int64")
    except (ValueError, KeyError, OSError) as e:
        raise ReviewError(f"{exported} is damaged or missing ({type(e).__name__}: {e}): export "
                          "the review again (`dupes review export RUN --out NEW`)") from None
    return before


def review_specials(meta: dict) -> tuple[str, str]:
    """The (remove, unsure) folder names a review was exported with."""
    return meta.get("remove_dir", REMOVE_DIR), meta.get("unsure_dir", UNSURE_DIR)


def review_ledger(review: Path, meta: dict, override: Path | None = None):
    """The ledger a review's confirmations go to; ReviewError if it lies in the dataset."""
    where = ledger_mod.ledger_path(review, meta["ledger"], override)
    if meta.get("data_dir") and storage.same_tree(where, meta["data_dir"]):
        raise ReviewError(f"the ledger {where} would be written inside the dataset "
                          f"{meta['data_dir']}, which is only ever read: pass --ledger with a "
                          "path outside it")
    return where


def serve_lock(review: Path) -> FolderLock:
    """Held by the one `dupes review serve` of a folder (and by an import, which must not
    read a folder a page is deciding in): a second is refused, naming the first."""
    return FolderLock(review / META_DIR, "serve.lock", refuse=lambda who: ReviewError(
        f"{review} is being triaged by {who}: use that server's page, or stop it (Ctrl-C) "
        "first; two servers on one folder would overwrite each other's decisions"))


def import_review(review: Path, *, ledger: Path | None = None,
                  accept_untouched: bool = False) -> tuple[pd.DataFrame, list[Problem]]:
    """Read back the technician's actions. With problems, nothing is written. A review in
    which most files are untouched is refused unless `accept_untouched`."""
    review = Path(review).resolve()
    meta = _read_meta(review)  # a folder made by an export, before its lock is taken
    with serve_lock(review):
        return _import_review(review, meta, ledger=ledger, accept_untouched=accept_untouched)


def _import_review(review: Path, meta: dict, *, ledger: Path | None,
                   accept_untouched: bool) -> tuple[pd.DataFrame, list[Problem]]:
    before = read_exported(review)
    after = list_review_tree(review)
    specials = review_specials(meta)
    manifest, problems = diff_review(before, after, meta["classes"], specials=specials)
    if problems:
        return manifest, problems
    untouched = len(set(before["review_path"]) & set(after["review_path"]))
    if (review / META_DIR / "decisions.json").exists():
        raise ReviewError(f"{review} was reviewed in the browser (`dupes review serve`): its "
                          "decisions are in manifest.csv already, and an import would read "
                          "the untouched folder as accepting every suggestion; apply "
                          f"{review / 'manifest.csv'} instead")
    if not accept_untouched and untouched >= UNTOUCHED_MIN \
            and untouched > UNTOUCHED_SHARE * len(before):
        raise ReviewError(
            f"{untouched} of {len(before)} exported images in {review} are still where the "
            "export put them, and leaving a file accepts its suggested class: this import "
            f"would relabel all {untouched}. If nobody has reviewed the folder yet, review it "
            "first (README.txt there); if leaving them was the decision, run again with "
            "--accept-untouched")
    where = review_ledger(review, meta, ledger)
    rundir.write_text(review / "after.txt",
                      "".join(f"{p}\t{h}\n" for p, h in zip(after["review_path"], after["sha1"])))
    rundir.write_csv(review / "manifest.csv", manifest)
    confirmed = manifest[manifest["action"] == "confirm"].rename(columns={"old_label": "class_name"})
    ledger_mod.add_confirmed(where, confirmed, str(review))
    return manifest, []


def manifest_tables(per_action, pairs) -> Group:
    """What a review decided: counts per action and per relabel (given -> new) pair."""
    actions = Table(title="review actions", header_style="bold")
    actions.add_column("action")
    actions.add_column("images", justify="right")
    meaning = {"confirm": "label kept, remembered", "relabel": "label changed",
               "remove": "dropped from the dataset", "unsure": "no change, asked again"}
    actions.add_column("meaning")
    for action, count in per_action.items():
        actions.add_row(action, str(int(count)), meaning.get(action, ""))
    moves = Table(title="relabels per class pair", header_style="bold")
    for col in ("from", "to"):
        moves.add_column(col)
    moves.add_column("images", justify="right")
    for old, new, count in pairs.to_numpy():
        moves.add_row(str(old), str(new), str(int(count)))
    return Group(actions, moves)


def problems_table(problems) -> Table:
    """Everything in a review folder that could not be read as an action, with its fix."""
    table = Table(title=f"{len(problems)} problem(s): nothing was written", header_style="bold red")
    for col in ("file", "problem", "fix"):
        table.add_column(col, overflow="fold")
    for p in problems:
        table.add_row(p.path, p.issue, p.fix)
    return table
