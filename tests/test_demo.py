"""`dupes demo` end to end: the acceptance lines of the foundation, on a real local Ray."""
import json

import pytest

from orchestrator import rundir
from orchestrator.cli import main

pytestmark = pytest.mark.slow


def test_demo_finds_the_planted_noise(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["n_samples"] == 1797 and summary["n_trainings"] == 20
    assert summary["n_prediction_rows"] == 17970
    preds = rundir.read_predictions(out / "run", columns=["sample_id"]).to_pandas()
    assert (preds.groupby("sample_id").size() == 10).all()
    assert summary["planted_recall"] >= 0.85, summary
    assert summary["planted_precision"] >= 0.70, summary
    for key in ("data_dir", "run_dir", "n_dupes", "threshold", "wall_s", "heldout_accuracy_mean"):
        assert key in summary
    # the planted truth lives beside the data, never inside a class folder
    assert (out / "planted.csv").exists() and not list((out / "data").glob("*.csv"))
