"""Label-quality scores (cleanlab), training dynamics, the combined ranking, error analysis."""
import numpy as np
import pandas as pd
import pytest

from analysis.dynamics import dynamics_scores
from analysis.errors import confused_pairs, confusion_matrix, fit_table, per_class_errors
from analysis.scores import combined_score, label_issues, label_quality, label_quality_scores


def noisy_probs(n=600, k=3, flip=0.1, seed=0):
    """Probabilities that point at the true class; labels with a share flipped."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k) * 0.3, n) * 0.3
    probs[np.arange(n), true] += 0.7
    labels = true.copy()
    flipped = rng.choice(n, int(flip * n), replace=False)
    labels[flipped] = (true[flipped] + rng.integers(1, k, len(flipped))) % k
    return labels, probs.astype(np.float32), np.isin(np.arange(n), flipped)


def test_quality_scores_are_low_for_flipped_labels_and_nan_for_unpredicted():
    labels, probs, flipped = noisy_probs()
    probs[5] = np.nan
    scores = label_quality_scores(labels, probs)
    assert list(scores.columns) == ["self_confidence", "normalized_margin",
                                    "confidence_weighted_entropy"]
    assert np.isnan(scores.loc[5]).all() and not np.isnan(scores.drop(index=5)).any().any()
    sc = scores["self_confidence"].to_numpy()
    ok = ~np.isnan(sc)
    np.testing.assert_allclose(sc[ok], probs[ok][np.arange(ok.sum()), labels[ok]], rtol=1e-5)
    assert np.nanmax(sc[flipped]) < np.nanmin(sc[~flipped])
    with pytest.raises(ValueError, match="valid methods"):
        label_quality_scores(labels, probs, methods=("entropy",))
    with pytest.raises(ValueError, match="one row per label"):
        label_quality_scores(labels[:-1], probs)


def test_confident_learning_flags_the_flipped_labels():
    labels, probs, flipped = noisy_probs()
    flags, estimate = label_issues(labels, probs)
    assert flags.shape == labels.shape
    assert (flags == flipped).mean() > 0.97
    assert 0.5 * flipped.sum() <= estimate <= 1.2 * flipped.sum()  # its estimate runs low
    with pytest.raises(ValueError, match="valid choices"):
        label_issues(labels, probs, filter_by="nope")
    # a class that no label names: no estimate rather than a wrong one
    flags, estimate = label_issues(np.zeros(10, int), np.full((10, 2), 0.5, np.float32))
    assert not flags.any() and estimate == 0


def test_dynamics_count_forgetting_within_a_training_only():
    # sample 0, given label 1: training 0 predicts 1,0,1,0 (forgotten twice), training 1: 0,1
    rows = [(0, 0, 1, 0.5, 1), (0, 0, 2, -0.2, 0), (0, 0, 3, 0.4, 1), (0, 0, 4, -0.6, 0),
            (0, 1, 1, -0.1, 0), (0, 1, 2, 0.3, 1),
            (1, 0, 1, 0.9, 2), (1, 0, 2, 0.8, 2)]  # sample 1, label 2: never wrong
    sid, training, epoch, margin, pred = map(np.array, zip(*rows))
    shuffle = np.random.default_rng(0).permutation(len(rows))  # input order does not matter
    out = dynamics_scores(sid[shuffle], training[shuffle], epoch[shuffle], margin[shuffle],
                          pred[shuffle], np.array([1, 2, 0]), num_samples=3)
    assert out["forgetting"].tolist() == [2, 0, 0]
    assert out["epoch_evals"].tolist() == [6, 2, 0]
    np.testing.assert_allclose(out["aum"][:2], [np.mean([.5, -.2, .4, -.6, -.1, .3]), 0.85])
    assert np.isnan(out["aum"][2])
    # fed one training at a time (as `dupes report` streams RUN/epochs/): the same scores
    from analysis.dynamics import DynamicsSums
    sums = DynamicsSums(np.array([1, 2, 0]), num_samples=3)
    for t in (1, 0):
        m = training == t
        sums.add(sid[m], training[m], epoch[m], margin[m], pred[m])
    pd.testing.assert_frame_equal(sums.scores(), out)
    with pytest.raises(ValueError, match="equal"):
        dynamics_scores(sid, training[:-1], epoch, margin, pred, np.zeros(3), num_samples=3)
    with pytest.raises(ValueError, match="one entry per sample"):
        dynamics_scores(sid, training, epoch, margin, pred, np.zeros(2), num_samples=3)


def test_combined_score_ranks_by_every_signal_and_skips_missing_ones():
    scores = pd.DataFrame({"votes": [10, 0, 5, 10], "mean_loss": [5.0, 0.1, 1.0, 6.0],
                           "aum": [-0.9, 0.9, 0.0, np.nan]})
    c = combined_score(scores)
    assert np.argsort(-c).tolist()[:2] == [3, 0] and c[1] == c.min()
    assert ((0 <= c) & (c <= 1)).all()
    np.testing.assert_allclose(combined_score(scores[["votes"]]),
                               scores["votes"].rank(pct=True))
    assert np.isnan(combined_score(pd.DataFrame({"x": [1, 2]}))).all()
    # with cleanlab's self-confidence present, the default is the measured best worst case:
    # it alone (a low confidence in the given label is suspect)
    with_confidence = scores.assign(self_confidence=[0.1, 0.9, 0.05, 0.3],
                                    normalized_margin=[0.9, -0.5, 0.1, 0.3])
    np.testing.assert_allclose(combined_score(with_confidence), [0.75, 0.25, 1.0, 0.5])
    with pytest.raises(ValueError, match="valid inputs"):
        combined_score(scores, inputs=("votes", "loss"))


def test_error_analysis_tables():
    label = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 0])
    cm = confusion_matrix(label, pred, num_classes=3)
    assert cm.tolist() == [[2, 2, 0], [0, 2, 0], [1, 0, 3]]
    per = per_class_errors(cm, ["a", "b", "c"])
    assert per["class"].tolist() == ["a", "c", "b"]  # worst first
    assert per.loc[0, "error_rate"] == 0.5 and per.loc[0, "most_taken_for"] == "b"
    assert per.loc[2, "most_taken_for"] == "" and per.loc[2, "precision"] == 0.5
    pairs = confused_pairs(cm, ["a", "b", "c"])
    assert pairs[["given", "predicted", "count"]].values.tolist() == [["a", "b", 2], ["c", "a", 1]]
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix(label, pred, num_classes=2)
    acc = pd.DataFrame({"repeat": [0, 0], "fold": [0, 1], "accuracy": [0.8, 0.9]})
    fit = fit_table(acc, {(0, 0): 0.95})
    assert fit["gap"].round(3).tolist()[0] == 0.15 and np.isnan(fit["gap"][1])


def test_label_quality_equals_cleanlabs_public_entry_points():
    # our shortcut (one validation, one confident joint, in-process) must give cleanlab's own
    # answers; NaN rows (never predicted) are left out of both
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels, probs, _ = noisy_probs(n=2000, k=5, flip=0.15, seed=3)
    probs[[7, 11]] = np.nan
    scores, flags, estimate, confident = label_quality(labels, probs)
    ok = ~np.isnan(probs).any(1)
    y, p = labels[ok], probs[ok]
    for method in scores:
        np.testing.assert_allclose(scores[method].to_numpy()[ok],
                                   get_label_quality_scores(y, p, method=method), rtol=1e-6)
    assert np.isnan(scores.to_numpy()[~ok]).all() and not flags[~ok].any()
    np.testing.assert_array_equal(flags[ok], find_label_issues(y, p))
    assert estimate == num_label_issues(y, p, estimation_method="off_diagonal_calibrated") > 0
    assert confident == num_label_issues(y, p, estimation_method="off_diagonal") > 0
