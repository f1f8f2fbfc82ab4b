"""A corrected copy of the dataset from a review's manifest: every row checked before anything
is written, the copy built in a temp folder and renamed into place. The dataset is only read."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.review_plan import ACTIONS, CHANGES_REL, MANIFEST_COLUMNS, corrected_plan, \
    safe_class, unsafe_relpath
from orchestrator.errors import ReviewError
from orchestrator.review import copies
from orchestrator.review.copies import ensure_empty, outside, sha1_in
from orchestrator.run import rundir, storage
from orchestrator.run.history import PROVENANCE_REL, provenance


def _unsafe_relpath(rel: str, src: Path | str) -> str | None:
    """Why `rel` may not be used inside src (None if it is fine)."""
    why = unsafe_relpath(rel)
    if why is None and (outside := storage.escapes(src, rel)) is not None:
        why = f"leaves the dataset (resolves to {outside}, e.g. through a symlink)"
    return why


def read_manifest(path: Path) -> pd.DataFrame:
    """A manifest.csv, every column as text; ReviewError naming the file if it is not one."""
    try:
        manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ReviewError(f"manifest {path} does not exist: give the manifest.csv written by "
                          "`dupes review import`") from None
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise ReviewError(f"{path} is not a manifest ({type(e).__name__}: {e}): give the "
                          "manifest.csv written by `dupes review import`") from None
    missing = sorted(set(MANIFEST_COLUMNS) - set(manifest.columns))
    if missing:
        raise ReviewError(f"{path} lacks columns {missing}; expected {MANIFEST_COLUMNS}")
    return manifest


def apply_manifest(manifest_path: Path, src: Path | str, dst: Path, *,
                   hardlink: bool = False) -> pd.DataFrame:
    """Build a corrected copy of `src` in `dst` with the manifest's relabels and removals.

    Everything is checked before anything is written; the copy is built in a temporary
    sibling folder and renamed to `dst` at the end. Its files are copies (reflinks where the
    file system has them) unless `hardlink`. Returns the CHANGES table.
    """
    src, dst = storage.parse_location(storage.absolute(src)), Path(dst).resolve()
    try:
        files = storage.all_files(src)
    except FileNotFoundError:
        raise ReviewError(f"dataset {src} does not exist") from None
    if not files:
        raise ReviewError(f"dataset {src} has no files (or cannot be listed)")
    ensure_empty(dst, "output folder")
    outside(dst, src, "output folder")
    manifest = read_manifest(manifest_path)
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
    counts = {a: int(n) for a, n in manifest["action"].value_counts().items()}
    record = provenance(src, Path(manifest_path), counts)

    def build(tmp: Path) -> None:
        for rel, target in moves:
            (tmp / target).parent.mkdir(parents=True, exist_ok=True)
            copies.fetch(src, rel, tmp / target, hardlink=hardlink)
        (tmp / CHANGES_REL).parent.mkdir(parents=True, exist_ok=True)
        rundir.write_csv(tmp / CHANGES_REL, changes_df)
        rundir.write_json(tmp / PROVENANCE_REL, record)  # so a run on the copy knows its round

    copies.build_into(dst, build)
    return changes_df
