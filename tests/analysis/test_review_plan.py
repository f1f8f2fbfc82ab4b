"""The technician review as pure functions (analysis/review_plan.py): names, the diff of a
review tree into a manifest, the browser route's equivalence, and the corrected copy's plan.
No files, no Ray: tables in, tables out."""
import pandas as pd
import pytest

from analysis.review_plan import (ACTIONS, CHANGES_REL, MANIFEST_COLUMNS, corrected_plan,
                                  decided_tree, decisions_manifest, diff_review, export_table,
                                  manifest_summary, safe_class, special_dirs, unsafe_relpath)

CLASSES = ["cat", "dog", "fox"]


def dupes(n=4) -> pd.DataFrame:
    return pd.DataFrame({
        "sample_id": [10, 11, 12, 13][:n], "relpath": ["cat/a.png", "cat/b.png", "dog/c.png",
                                                         "dog/d.png"][:n],
        "given_class": ["cat", "cat", "dog", "dog"][:n],
        "suggested_class": ["dog", "fox", "cat", "cat"][:n],
        "top_wrong_votes": [10, 9, 8, 8][:n], "n_evals": [10] * n})


def before() -> pd.DataFrame:
    sha1 = pd.Series([f"h{i}" for i in range(10, 14)], index=range(10, 14))
    return export_table(dupes(), sha1)


def test_export_names_rank_the_most_suspect_first_and_are_unique():
    b = before()
    assert list(b["review_path"]) == ["cat/1__dog__10of10__a.png", "cat/2__fox__9of10__b.png",
                                      "dog/3__cat__8of10__c.png", "dog/4__cat__8of10__d.png"]
    assert b["review_path"].is_unique and list(b["sha1"]) == ["h10", "h11", "h12", "h13"]


def test_the_diff_reads_each_move_as_its_action():
    b = before()
    after = pd.DataFrame({"review_path": ["cat/1__dog__10of10__a.png",      # left: relabel
                                          "dog/2__fox__9of10__b.png",       # moved: relabel
                                          "_remove/3__cat__8of10__c.png"],  # removed
                          "sha1": ["h10", "h11", "h12"]})                   # d deleted
    manifest, problems = diff_review(b, after, CLASSES)
    assert problems == [] and list(manifest.columns) == MANIFEST_COLUMNS
    got = {r.relpath: (r.action, r.new_label) for r in manifest.itertuples()}
    assert got == {"cat/a.png": ("relabel", "dog"), "cat/b.png": ("relabel", "dog"),
                   "dog/c.png": ("remove", ""), "dog/d.png": ("confirm", "dog")}
    per_action, pairs = manifest_summary(manifest)
    assert list(per_action.index) == list(ACTIONS) and per_action["relabel"] == 2
    assert pairs.iloc[0].tolist() == ["cat", "dog", 2]


def test_a_tree_that_cannot_be_read_names_every_problem_and_its_fix():
    b = before()
    after = pd.DataFrame({"review_path": ["cat/renamed.png", "stray.png", "new/x.png",
                                          "cat/1__dog__10of10__a.png",
                                          "fox/1__dog__10of10__a.png"],
                          "sha1": ["h11", "zz", "zz", "h10", "h10"]})
    _, problems = diff_review(b, after, CLASSES)
    issues = {p.path: (p.issue, p.fix) for p in problems}
    assert "renamed" in issues["cat/renamed.png"][0]
    assert "2__fox__9of10__b.png" in issues["cat/renamed.png"][1]
    assert "not a class folder" in issues["stray.png"][0]
    assert "not a class folder" in issues["new/x.png"][0]
    assert "copied instead of moved" in issues["fox/1__dog__10of10__a.png"][0]
    with pytest.raises(ValueError, match="lacks columns"):
        diff_review(b.drop(columns="sha1"), after, CLASSES)


def test_a_class_named_like_a_special_folder_moves_the_special_folder_aside():
    assert special_dirs(CLASSES) == ("_remove", "_unsure")
    assert special_dirs(["_remove", "b"]) == ("__remove", "_unsure")


def test_browser_decisions_give_the_manifest_of_the_same_file_moves():
    b, specials = before(), special_dirs(CLASSES)
    decisions = {"cat/1__dog__10of10__a.png": {"decision": "accept"},
                 "cat/2__fox__9of10__b.png": {"decision": "relabel", "label": "dog"},
                 "dog/3__cat__8of10__c.png": {"decision": "remove"},
                 "dog/4__cat__8of10__d.png": {"decision": "confirm"}}
    tree = decided_tree(b, decisions, CLASSES, specials=specials)
    assert sorted(tree["review_path"]) == ["_remove/3__cat__8of10__c.png",
                                           "cat/1__dog__10of10__a.png",
                                           "dog/2__fox__9of10__b.png"]
    by_moves, _ = diff_review(b, tree, CLASSES, specials=specials)
    assert decisions_manifest(b, decisions, CLASSES, specials=specials).equals(by_moves)
    # undecided images are left out; a bad decision is refused with the valid choices
    assert len(decisions_manifest(b, dict(list(decisions.items())[:1]), CLASSES,
                                  specials=specials)) == 1
    with pytest.raises(ValueError, match="valid choices"):
        decided_tree(b, {"cat/1__dog__10of10__a.png": {"decision": "maybe"}}, CLASSES,
                     specials=specials)
    with pytest.raises(ValueError, match="other than its given class"):
        decided_tree(b, {"cat/1__dog__10of10__a.png": {"decision": "relabel", "label": "cat"}},
                     CLASSES, specials=specials)


def test_the_corrected_plan_moves_relabels_numbers_namesakes_and_shifts_old_records():
    manifest = pd.DataFrame([(10, "cat/a.png", "h10", "cat", "dog", "relabel"),
                             (12, "dog/c.png", "h12", "dog", "", "remove"),
                             (13, "dog/d.png", "h13", "dog", "dog", "confirm")],
                            columns=MANIFEST_COLUMNS)
    files = ["cat/a.png", "dog/a.png", "dog/c.png", "dog/d.png", CHANGES_REL]
    moves, changes = corrected_plan(files, manifest)
    assert dict(moves) == {"cat/a.png": "dog/a__1.png", "dog/a.png": "dog/a.png",
                           "dog/d.png": "dog/d.png", CHANGES_REL: ".dupes/CHANGES.1.csv"}
    assert sorted(changes["action"]) == ["relabel", "remove"]


@pytest.mark.parametrize("rel, ok", [("cat/a.png", True), ("../a.png", False),
                                     ("/etc/passwd", False), ("C:/x.png", False),
                                     ("cat/./a.png", True), ("", False)])
def test_manifest_paths_stay_inside_the_dataset(rel, ok):
    assert (unsafe_relpath(rel) is None) == ok


def test_relabel_targets_must_be_folder_names():
    assert safe_class("dog") and not safe_class("../dog") and not safe_class(".hidden")
    assert not safe_class("") and not safe_class("a/b")
