"""Confident learning's per-row test equals cleanlab's confident joint, and per-training
thresholds make it a test of one row at a time."""
import numpy as np
import pytest

from analysis.confident import confident_thresholds, confidently_wrong, off_diagonal


def random_predictions(seed, n=400, c=6, concentration=0.7):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(c, concentration), n).astype(np.float32)
    labels = rng.integers(0, c, n)
    labels[:c] = np.arange(c)  # every class labelled at least once, as cleanlab needs
    return labels, probs


@pytest.mark.parametrize("seed", range(4))
def test_off_diagonal_rows_and_the_count_are_cleanlabs(seed):
    from cleanlab.count import compute_confident_joint

    from analysis.scores import label_quality, off_diagonal_rows
    labels, probs = random_predictions(seed, concentration=0.4 + 0.4 * seed)
    probs[:20] = np.round(probs[:20], 1)  # ties with a threshold and between classes
    probs[:20] /= probs[:20].sum(1, keepdims=True)
    t = confident_thresholds(labels, probs, 6)
    _, off = compute_confident_joint(labels, probs, calibrate=False,
                                     return_indices_of_off_diagonals=True)
    mine = off_diagonal(labels, probs, t)
    assert 0 < mine.sum() < len(labels)
    assert np.flatnonzero(mine).tolist() == sorted(np.asarray(off).tolist())
    wrong = confidently_wrong(labels, probs, t)
    assert np.flatnonzero(wrong).tolist() == sorted(off_diagonal_rows(labels, probs, off))
    assert wrong.sum() == label_quality(labels, probs)[3]  # the analysis's num_confident


def test_each_training_s_rows_are_tested_against_its_own_thresholds():
    from analysis.confident import flags_by_training, thresholds_by_training
    labels_a, probs_a = random_predictions(0)
    labels_b, probs_b = random_predictions(1, concentration=2.0)
    probs_b = 0.5 * probs_b + 0.5 * np.eye(6, dtype=np.float32)[labels_b]  # a better model
    labels, probs = np.concatenate([labels_a, labels_b]), np.concatenate([probs_a, probs_b])
    ta, tb = confident_thresholds(labels_a, probs_a, 6), confident_thresholds(labels_b, probs_b, 6)
    repeat = np.repeat([0, 1], [len(labels_a), len(labels_b)])
    fold = np.zeros(len(labels), int)
    got = flags_by_training(labels, probs, repeat, fold, {(0, 0): ta, (1, 0): tb})
    assert got.tolist() == (confidently_wrong(labels_a, probs_a, ta).tolist()
                            + confidently_wrong(labels_b, probs_b, tb).tolist())
    by_rows = thresholds_by_training(labels, probs, repeat, fold, 6)  # a table held whole
    assert sorted(by_rows) == [(0, 0), (1, 0)]
    np.testing.assert_array_equal(by_rows[(0, 0)], ta)
    np.testing.assert_array_equal(by_rows[(1, 0)], tb)
    assert flags_by_training(labels, probs, repeat, fold, {(0, 0): ta}) is None  # (1, 0)?
    # one threshold set for both would be another test
    assert got.tolist() != confidently_wrong(labels, probs, confident_thresholds(
        labels, probs, 6)).tolist()


def test_a_class_nobody_is_labelled_is_never_claimed():
    labels, probs = random_predictions(2, c=4)
    labels[labels == 3] = 0
    t = confident_thresholds(labels, probs, 4)
    assert np.isinf(t[3]) and np.isfinite(t[:3]).all()
    probs[:10] = np.eye(4, dtype=np.float32)[3]  # sure of the class nobody is labelled
    assert not confidently_wrong(labels, probs, t)[:10].any()


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match="one row per label"):
        confident_thresholds(np.zeros(3, int), np.zeros((4, 2)), 2)


def test_thresholds_go_through_json_and_back():
    import json

    from analysis.confident import thresholds_from_json, thresholds_json
    t = np.array([0.25, np.inf, 0.5])
    text = json.dumps(thresholds_json(t), allow_nan=False)  # strict JSON: no Infinity
    np.testing.assert_array_equal(thresholds_from_json(json.loads(text)), t)
