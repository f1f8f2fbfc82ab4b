"""The technician review as pure functions over tables: what to export and under which names,
the before/after diff into a manifest, the manifest's rules, and the corrected copy's plan.
The file moves that carry these plans out live in `orchestrator.review.files`.

A technician reviews flagged images with a file manager, in a tree that mirrors the class
folders. What they did is read back from where each exported file ended up:

- deleted                         -> confirm: the given label was right (remembered)
- left where it was               -> relabel to the suggested class
- moved into another class folder -> relabel to that class
- moved into `_remove/`           -> remove the image from the corrected dataset
- moved into `_unsure/`           -> no change, asked again next round
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd

REMOVE_DIR, UNSURE_DIR = "_remove", "_unsure"


def special_dirs(classes: list[str]) -> tuple[str, str]:
    """The review's remove and unsure folders: `_remove` and `_unsure`, with one more
    leading underscore while a class of the dataset has that name (a class called `_remove`
    must not have its images read as removed)."""
    taken = {str(c) for c in classes}
    out = []
    for name in (REMOVE_DIR, UNSURE_DIR):
        while name in taken:
            name = "_" + name
        out.append(name)
    return out[0], out[1]


ACTIONS = ("confirm", "relabel", "remove", "unsure")
MANIFEST_COLUMNS = ["sample_id", "relpath", "sha1", "old_label", "new_label", "action"]


def export_names(dupes: pd.DataFrame) -> pd.Series:
    """Review file name of every dupe, in the dupes' order (most suspect first):
    `<rank>__<suggested>__<votes>of<n>__<original file name>`.

    The zero-padded rank makes a file manager list each folder most suspect first, whatever
    the votes' digits (`10of10` would sort before `8of10`). Names are unique across the whole
    review tree (a file moved to another folder is recognised by its name alone): the rank
    sees to that.
    """
    need = {"sample_id", "relpath", "suggested_class", "votes", "n_evals"}
    missing = sorted(need - set(dupes.columns))
    if missing:
        raise ValueError(f"dupes table lacks columns {missing}")
    width = len(str(max(1, len(dupes))))
    names = [f"{i:0{width}d}__{s}__{v}of{n}__{PurePosixPath(r).name}" for i, (s, v, n, r) in
             enumerate(zip(dupes["suggested_class"], dupes["votes"], dupes["n_evals"],
                           dupes["relpath"]), start=1)]
    return pd.Series(names, index=dupes.index, name="review_name")


@dataclass
class Problem:
    """Something in the review tree that cannot be read as an action, and how to fix it."""

    path: str
    issue: str
    fix: str


def diff_review(before: pd.DataFrame, after: pd.DataFrame, classes: list[str], *,
                specials: tuple[str, str] | None = None) -> tuple[pd.DataFrame, list[Problem]]:
    """Turn a review tree's before/after listings into a relabel manifest.

    Parameters
    ----------
    before : one row per exported file: `review_path` (`<given class>/<name>`), `sample_id`,
        `sha1`, `relpath` (in the dataset), `given_class`, `suggested_class`.
    after : one row per file now in the tree: `review_path`, `sha1`.
    classes : the dataset's class names (the valid destination folders).
    specials : the (remove, unsure) folder names of the export; default `special_dirs`.

    Returns
    -------
    (manifest, problems). The manifest has `MANIFEST_COLUMNS`, one row per exported image.
    When `problems` is not empty the tree cannot be interpreted and nothing should be written.
    """
    for name, df, cols in (("before", before, {"review_path", "sample_id", "sha1", "relpath",
                                               "given_class", "suggested_class"}),
                           ("after", after, {"review_path", "sha1"})):
        missing = sorted(cols - set(df.columns))
        if missing:
            raise ValueError(f"{name} listing lacks columns {missing}")
    # folder names are text; a class column read from CSV may hold numbers ("0" -> 0)
    before = before.astype({c: str for c in ("review_path", "sha1", "relpath", "given_class",
                                             "suggested_class")})
    class_set = {str(c) for c in classes}
    remove_dir, unsure_dir = specials or special_dirs(classes)
    if {remove_dir, unsure_dir} & class_set:
        raise ValueError(f"the review folders {remove_dir}/ and {unsure_dir}/ must not be "
                         f"class names; special_dirs(classes) gives names that are not")
    by_name = {PurePosixPath(p).name: row for p, row in zip(before["review_path"],
                                                            before.itertuples(index=False))}
    by_sha = {}
    for row in before.itertuples(index=False):
        by_sha.setdefault(row.sha1, []).append(row)

    problems: list[Problem] = []
    seen: dict[str, str] = {}  # review name -> where it is now
    for path, sha1 in zip(after["review_path"], after["sha1"]):
        p = PurePosixPath(path)
        folder = p.parts[0] if len(p.parts) > 1 else ""
        if len(p.parts) != 2 or (folder not in class_set and folder not in (remove_dir,
                                                                              unsure_dir)):
            where = "the top of the review folder" if len(p.parts) == 1 else f"folder '{p.parent}'"
            problems.append(Problem(path, f"file in {where}, which is not a class folder, "
                                          f"{remove_dir}/ or {unsure_dir}/",
                                    f"move it into a class folder, {remove_dir}/ or "
                                    f"{unsure_dir}/"))
            continue
        if p.name not in by_name:
            renamed = [r for r in by_sha.get(sha1, []) if r.review_path != path]
            if renamed:
                problems.append(Problem(path, "renamed: file names identify the images",
                                        f"rename it back to "
                                        f"'{PurePosixPath(renamed[0].review_path).name}'"))
            else:
                problems.append(Problem(path, "not a file this review exported",
                                        "remove it from the review folder (add new images to "
                                        "the dataset itself)"))
            continue
        if p.name in seen:
            problems.append(Problem(path, f"the same image is also at '{seen[p.name]}' "
                                          "(copied instead of moved?)",
                                    "keep one of the two files"))
            continue
        seen[p.name] = path

    rows = []
    for name, row in by_name.items():
        where = seen.get(name)
        if where is None:
            action, new = "confirm", row.given_class
        else:
            folder = PurePosixPath(where).parts[0]
            if folder == remove_dir:
                action, new = "remove", ""
            elif folder == unsure_dir:
                action, new = "unsure", row.given_class
            elif folder == row.given_class:
                action, new = "relabel", row.suggested_class
            else:
                action, new = "relabel", folder
        rows.append((row.sample_id, row.relpath, row.sha1, row.given_class, new, action))
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    # relabelling to the class it already has changes nothing (suggested class == given)
    same = (manifest["action"] == "relabel") & (manifest["new_label"] == manifest["old_label"])
    manifest.loc[same, "action"] = "unsure"
    return manifest.sort_values("sample_id", kind="stable").reset_index(drop=True), problems


# What a technician decides for one image in the browser triage (`dupes review serve`), and
# the file-manager move it stands for: the same manifest follows from either route.
DECISIONS = {"confirm": "delete the file", "accept": "leave it where it is",
             "relabel": "move it to another class folder", "remove": "move it into _remove/",
             "unsure": "move it into _unsure/"}


def decided_tree(before: pd.DataFrame, decisions: dict, classes: list[str], *,
                 specials: tuple[str, str]) -> pd.DataFrame:
    """The review tree as the file-manager route would leave it after `decisions`
    ({review_path: {"decision": ..., "label": ...}}), for the decided files only: the
    `after` listing `diff_review` reads (review_path, sha1).

    Raises ValueError for an unknown decision, an unknown review path, or a relabel to a
    class that is not one of `classes` or is the image's given class."""
    remove_dir, unsure_dir = specials
    rows = {r.review_path: r for r in before.itertuples(index=False)}
    after = []
    for path, d in decisions.items():
        if path not in rows:
            raise ValueError(f"{path} is not an exported image of this review")
        kind, label = d.get("decision"), d.get("label")
        if kind not in DECISIONS:
            raise ValueError(f"unknown decision {kind!r} for {path}: valid choices are "
                             f"{sorted(DECISIONS)}")
        row = rows[path]
        name = PurePosixPath(path).name
        if kind == "relabel" and (label not in classes or label == row.given_class):
            raise ValueError(f"relabel {path} to {label!r}: choose one of the classes other "
                             f"than its given class {row.given_class!r} ({sorted(classes)})")
        where = {"confirm": None, "accept": path, "relabel": f"{label}/{name}",
                 "remove": f"{remove_dir}/{name}", "unsure": f"{unsure_dir}/{name}"}[kind]
        if where is not None:
            after.append((where, row.sha1))
    return pd.DataFrame(after, columns=["review_path", "sha1"])


def decisions_manifest(before: pd.DataFrame, decisions: dict, classes: list[str], *,
                       specials: tuple[str, str]) -> pd.DataFrame:
    """The manifest of the decided images: exactly what `diff_review` makes of the tree the
    same decisions would leave in the file-manager route (images not decided yet are left
    out: they change nothing and are asked again)."""
    decided = before[before["review_path"].isin(list(decisions))]
    after = decided_tree(before, decisions, classes, specials=specials)
    manifest, problems = diff_review(decided, after, classes, specials=specials)
    assert not problems, problems  # decided_tree only makes valid moves
    return manifest


def manifest_summary(manifest: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """Counts per action (all ACTIONS, zeros included) and per (old -> new) relabel pair."""
    per_action = manifest["action"].value_counts().reindex(list(ACTIONS), fill_value=0)
    rel = manifest[manifest["action"] == "relabel"]
    pairs = (rel.groupby(["old_label", "new_label"]).size().rename("count").reset_index()
             .sort_values(["count", "old_label", "new_label"], ascending=[False, True, True]))
    return per_action, pairs.reset_index(drop=True)


def export_table(dupes: pd.DataFrame, sha1: pd.Series) -> pd.DataFrame:
    """The review's rows: one per dupe, with the path it gets in the review tree
    (`<given class>/<export name>`). `sha1` maps sample_id to the file's hash."""
    table = pd.DataFrame({
        "sample_id": dupes["sample_id"].to_numpy(), "relpath": dupes["relpath"].to_numpy(),
        "sha1": sha1.loc[dupes["sample_id"]].to_numpy(),
        "given_class": dupes["given_class"].to_numpy(),
        "suggested_class": dupes["suggested_class"].to_numpy(),
        "votes": dupes["top_wrong_votes"].to_numpy(), "n_evals": dupes["n_evals"].to_numpy()})
    for name in ("mean_prob_suggested", "second_class", "mean_prob_second"):
        if name in dupes:  # for the review page: the second choice beside the first
            table[name] = dupes[name].to_numpy()
    table["review_path"] = [f"{g}/{n}" for g, n in zip(table["given_class"], export_names(table))]
    return table


def unsafe_relpath(rel: str) -> str | None:
    """Why a manifest's `relpath` may not be used inside a dataset (None if it is fine, as
    far as the text goes: symlinks are the file system's to check)."""
    p = PurePosixPath(rel)
    if not p.parts:
        return "empty path"
    if p.is_absolute() or rel.startswith("\\") or ":" in p.parts[0]:
        return "absolute path"
    if any(part in ("..", ".", "") for part in p.parts):
        return "'..' or '.' in the path"
    return None


def safe_class(name: str) -> bool:
    """Whether a relabel target can be a class folder's name."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name \
        and not name.startswith(".")


CHANGES_COLUMNS = ["relpath", "new_relpath", "action", "old_label", "new_label", "sha1"]
# An apply's record goes into the corrected copy's hidden `.dupes/` folder, where the next
# scan does not see it (a file at the top would be listed as skipped); the record of the
# apply before it (a corrected copy of a corrected copy) becomes CHANGES.1.csv, and so on.
CHANGES_REL = ".dupes/CHANGES.csv"


def _older_changes(rel: str) -> str | None:
    """Where an earlier apply's record in the source goes in the copy, or None if `rel` is
    not one."""
    p = PurePosixPath(rel)
    if p.parent.as_posix() != ".dupes" or p.suffix != ".csv":
        return None
    parts = p.stem.split(".")
    if parts == ["CHANGES"]:
        return ".dupes/CHANGES.1.csv"
    if len(parts) == 2 and parts[0] == "CHANGES" and parts[1].isdigit():
        return f".dupes/CHANGES.{int(parts[1]) + 1}.csv"
    return None


def corrected_plan(files: list[str], manifest: pd.DataFrame) -> tuple[list[tuple[str, str]],
                                                                       pd.DataFrame]:
    """Where every file of the dataset goes in the corrected copy: [(relpath, new relpath)]
    (removed files are absent), and the CHANGES table. Untouched files keep their paths; a
    relabelled file moves to its new class folder, numbered when a namesake is there. The
    copy's own record is `CHANGES_REL`; earlier records in the source are shifted one up."""
    act = {r.relpath: r for r in manifest.itertuples(index=False)
           if r.action in ("relabel", "remove")}
    kept, relabelled, changes = [], [], []
    for rel in files:
        row = act.get(rel)
        if row is None:
            kept.append((rel, _older_changes(rel) or rel))
        elif row.action == "remove":
            changes.append((rel, "", "remove", row.old_label, "", row.sha1))
        else:
            new_rel = PurePosixPath(row.new_label, *PurePosixPath(rel).parts[1:]).as_posix()
            relabelled.append((rel, new_rel, row))
    placed = {target for _, target in kept}
    moves = list(kept)
    for rel, new_rel, row in relabelled:
        target, n = new_rel, 1
        while target in placed:  # a namesake already lives in the new class: number this one
            p = PurePosixPath(new_rel)
            target, n = str(p.with_name(f"{p.stem}__{n}{p.suffix}")), n + 1
        placed.add(target)
        moves.append((rel, target))
        changes.append((row.relpath, target, "relabel", row.old_label, row.new_label, row.sha1))
    return moves, pd.DataFrame(changes, columns=CHANGES_COLUMNS).sort_values("relpath")
