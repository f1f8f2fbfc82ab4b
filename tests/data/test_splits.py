import numpy as np
import pytest

from orchestrator.data.splits import make_splits

LABELS = np.repeat(np.arange(4), [7, 10, 2, 31])  # odd and even classes, a tiny one


def folds_of(df, repeats, n):
    f = np.full((repeats, n), -1)
    f[df["repeat"], df["sample_id"]] = df["fold"]
    return f


def test_exactly_once_per_repeat_and_disjoint():
    df = make_splits(LABELS, repeats=5, seed=1)
    assert len(df) == 5 * len(LABELS)
    assert not df.duplicated(["sample_id", "repeat"]).any()  # held out exactly once per repeat
    assert set(df["fold"].unique()) == {0, 1}
    assert df.dtypes.to_dict() == {"sample_id": np.int64, "repeat": np.int16, "fold": np.int8}


def test_stratified_with_extra_image_in_fold_0():
    f = folds_of(make_splits(LABELS, repeats=3, seed=2), 3, len(LABELS))
    for r in range(3):
        for c, n in enumerate([7, 10, 2, 31]):
            in0 = int((f[r][LABELS == c] == 0).sum())
            assert in0 == (n + 1) // 2 and n - in0 == n // 2


def test_fresh_differs_between_repeats_fixed_does_not():
    fresh = folds_of(make_splits(LABELS, repeats=4, seed=3, mode="fresh"), 4, len(LABELS))
    fixed = folds_of(make_splits(LABELS, repeats=4, seed=3, mode="fixed"), 4, len(LABELS))
    assert all((fresh[0] != fresh[r]).any() for r in (1, 2, 3))
    assert all((fixed[0] == fixed[r]).all() for r in (1, 2, 3))
    assert (fixed[0] == fresh[0]).all()  # fixed is repeat 0 of fresh, every time


def test_seeded_and_reproducible():
    a = make_splits(LABELS, repeats=2, seed=5)
    assert a.equals(make_splits(LABELS, repeats=2, seed=5))
    assert not a.equals(make_splits(LABELS, repeats=2, seed=6))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="fresh"):
        make_splits(LABELS, mode="random")
    with pytest.raises(ValueError, match="fewer than 2"):
        make_splits(np.array([0, 0, 1]))
