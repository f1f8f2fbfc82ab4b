import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from rich.console import Console

from analysis.report import report
from analysis.run_analysis import analyze, dupes_export_table


def render(renderable) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()


@pytest.fixture
def tables():
    """4 samples, 2 repeats x 2 folds; sample 3 ('b/x.png', given b) is always called 'a'."""
    classes = ["a", "b"]
    index = pd.DataFrame({"sample_id": np.arange(4), "relpath": ["a/1.png", "a/2.png", "b/3.png",
                          "b/x.png"], "label": np.array([0, 0, 1, 1], np.int16),
                          "class_name": ["a", "a", "b", "b"]})
    rows = []
    for r in range(2):
        for f, held in ((0, [0, 2]), (1, [1, 3])):
            for s in held:
                label = int(index.label[s])
                pred = 0 if s == 3 else label
                p = np.array([0.95, 0.05]) if pred == 0 else np.array([0.1, 0.9])
                rows.append((s, r, f, label, pred, float(-np.log(p[label])), p))
    s, r, f, label, pred, loss, probs = zip(*rows)
    table = pa.table({
        "sample_id": pa.array(s, pa.int64()), "repeat": pa.array(r, pa.int16()),
        "fold": pa.array(f, pa.int8()), "label": pa.array(label, pa.int16()),
        "pred": pa.array(pred, pa.int16()), "loss": pa.array(loss, pa.float32()),
        "probs": pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(probs), pa.float32()), 2),
    })
    return index, table, classes


def test_analysis_and_report_render(tables):
    index, preds, classes = tables
    a = analyze(index, preds, classes, threshold="2")
    assert a.dupes["relpath"].tolist() == ["b/x.png"]
    assert a.per_threshold == {">=10": 0, ">=9": 0, ">=8": 0, ">=2": 1}
    assert a.accuracy["accuracy"].tolist() == [1.0, 0.5, 1.0, 0.5]
    row = dupes_export_table(a.dupes).iloc[0]
    assert (row.given_class, row.suggested_class, row.votes, row.n_evals) == ("b", "a", 2, 2)
    assert row.mean_prob_given == pytest.approx(0.05)
    text = render(report(a, seconds={(0, 0): 1.5}))
    assert "1.0000 (1.5s)" in text and "0.5000" in text
    assert ">=2  <- selected" in text
    assert "b/x.png" in text and "2/2" in text and "0.050" in text
    assert "top 20 dupes (>=2, of 1)" in text


def test_analyze_rejects_incomplete_tables(tables):
    index, preds, classes = tables
    with pytest.raises(ValueError, match="probs"):
        analyze(index, preds.drop_columns(["probs"]), classes)
    with pytest.raises(ValueError, match="valid forms"):
        analyze(index, preds, classes, threshold="most")
