"""Rounds of review compared: the numbers, the table and the advice (pure functions)."""
import pandas as pd
import pytest
from rich.console import Console

from analysis.rounds import RoundStats, compare_table, next_round, review_of


def render(renderable) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


R1 = RoundStats("runs/r1", 1, 10_000, 0.726, 0.86, 1_290, 1_286, 0)
R2 = RoundStats("runs/r2", 2, 9_990, 0.760, 0.88, 700, 690, 380)


def test_a_manifest_counts_as_a_review():
    manifest = pd.DataFrame({"action": ["relabel"] * 6 + ["remove", "confirm", "confirm",
                                                          "unsure"]})
    review = review_of(manifest)
    assert (review.reviewed, review.relabelled, review.removed, review.confirmed) == (9, 6, 1, 2)
    assert review.precision == pytest.approx(7 / 9)
    with pytest.raises(ValueError, match="action"):
        review_of(pd.DataFrame({"x": [1]}))


def test_the_table_has_a_row_per_round_with_the_review_between():
    review = review_of(pd.DataFrame({"action": ["relabel"] * 400 + ["confirm"] * 200}))
    text = render(compare_table([R1, R2], [review, None]))
    assert "runs/r1" in text and "runs/r2" in text
    assert "1,290 (12.9%)" in text and "400 (67%)" in text and "0.760" in text


def test_another_round_is_advised_while_reviews_find_errors_and_not_after():
    good = review_of(pd.DataFrame({"action": ["relabel"] * 400 + ["confirm"] * 200}))
    worth = render(next_round([R1, R2], [good, None]))
    # 67% found last time, 700 of 1,290 estimated errors left: about 36% of 600
    assert "another round is worth it" in worth and "+3.4 points" in worth, worth
    poor = review_of(pd.DataFrame({"action": ["relabel"] * 40 + ["confirm"] * 560}))
    done = RoundStats("runs/r2", 2, 9_990, 0.727, 0.86, 80, 75, 560)
    stop = render(next_round([R1, done], [poor, None]))
    assert "stop here" in stop, stop
    first = render(next_round([R1]))
    assert "no review has measured yet" in first
    with pytest.raises(ValueError):
        next_round([])


def test_the_next_review_continues_where_the_last_ones_precision_was_falling():
    from analysis.rounds import Review, expected_precision

    # round 1 of CIFAR-10N aggregate: 0.91, 0.85, 0.75, 0.58, 0.52 per 100 reviewed
    hits = []
    for p in (0.91, 0.85, 0.75, 0.58, 0.52):
        hits += [1] * round(100 * p) + [0] * (100 - round(100 * p))
    review = Review(500, sum(hits), 0, 500 - sum(hits), tuple(hits))
    assert expected_precision(review, 500) == pytest.approx(0.35, abs=0.01)  # found: 0.37
    assert expected_precision(review, 100) > expected_precision(review, 500)
    flat = Review(500, 250, 0, 250, tuple([1, 0] * 250))
    assert expected_precision(flat, 500) == pytest.approx(0.5)  # no fall, no change
    unordered = Review(500, 360, 0, 140)
    assert expected_precision(unordered, 500) == pytest.approx(0.72)
    manifest = pd.DataFrame({"sample_id": [3, 1, 2], "action": ["relabel", "confirm", "unsure"]})
    exported = pd.DataFrame({"sample_id": [1, 2, 3]})
    assert review_of(manifest, exported).in_order == (0, 1)  # listed order, unsure left out
