"""`dupes demo --review-simulate` end to end on a real local Ray: the acceptance lines of the
foundation (round 1) and of the review loop (round 2 on the corrected dataset)."""
import json

import pandas as pd
import pytest


from orchestrator.run import partitions
from orchestrator.cli.main import main
from tests.conftest import tree_hash

pytestmark = pytest.mark.slow


def test_demo_finds_the_planted_noise_and_a_review_round_fixes_it(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--review-simulate"]) == 0
    s1 = json.loads((out / "run" / "summary.json").read_text())
    assert s1["n_samples"] == 1797 and s1["n_trainings"] == 20
    assert s1["n_prediction_rows"] == 17970
    preds = partitions.read_predictions(out / "run", columns=["sample_id"]).to_pandas()
    assert (preds.groupby("sample_id").size() == 10).all()
    assert s1["planted_recall"] >= 0.85, s1
    assert s1["planted_precision"] >= 0.70, s1
    for key in ("data_dir", "run_dir", "n_dupes", "threshold", "wall_s", "heldout_accuracy_mean"):
        assert key in s1
    # the planted truth lives beside the data, never inside a class folder
    assert (out / "planted.csv").exists() and not list((out / "data").glob("*.csv"))

    # round 2 runs on the corrected copy; the original data is left as it was
    s2 = json.loads((out / "run2" / "summary.json").read_text())
    assert s2["heldout_accuracy_mean"] >= s1["heldout_accuracy_mean"]
    assert s2["n_dupes"] < s1["n_dupes"]
    assert s1["review"]["round2"]["n_dupes"] == s2["n_dupes"]
    manifest = pd.read_csv(out / "review" / "manifest.csv", dtype=str)
    assert set(manifest["action"]) <= {"confirm", "relabel"}
    planted = pd.read_csv(out / "planted.csv", dtype=str)
    fixed = manifest[manifest["action"] == "relabel"]
    assert set(fixed["relpath"]) <= set(planted["relpath"])  # the technician knew the truth
    assert len(fixed) == round(s1["planted_recall"] * len(planted))
    assert (out / "dupes-ledger.csv").exists()  # false alarms were confirmed and remembered
    original = tree_hash(out / "data")
    assert len(original) == 1797 and ".dupes/CHANGES.csv" in tree_hash(out / "data-round2")
    # the record of the changes is not a stray file to the round-2 scan
    assert pd.read_csv(out / "run2" / "skipped.csv").empty

    # round 2 knows it is round 2, from the corrected copy's provenance, from any folder
    prov = json.loads((out / "data-round2" / ".dupes" / "provenance.json").read_text())
    assert prov["round"] == 1 and prov["changes"]["relabel"] == len(fixed)
    assert prov["run"] == s1["run_dir"] and prov["ledger"] == str(out / "dupes-ledger.csv")
    history = json.loads((out / "run2" / "history.json").read_text())
    assert history["round"] == 2 and history["after"]["manifest"] == prov["manifest"]
    # round 2 never re-flags a confirmed image: the ledger marks them, the review leaves them out
    from orchestrator.review.files import export_review
    from orchestrator.run.directory import Run
    confirmed = set(manifest.loc[manifest["action"] == "confirm", "relpath"])
    votes2 = Run.open(out / "run2").analysis()[0].votes
    assert confirmed and set(votes2.loc[votes2["confirmed"], "relpath"]) == confirmed
    exported2 = export_review(Run.open(out / "run2"), tmp_path / "review2")
    assert not confirmed & set(exported2["relpath"])
    # the two rounds side by side, with the review between them and the advice
    capsys.readouterr()
    assert main(["compare", str(out / "run"), str(out / "run2")]) == 0
    text = capsys.readouterr().out
    assert "rounds compared" in text and "next round:" in text, text
    assert f"{len(fixed)} (" in text  # the real errors the review between them found
