import numpy as np
import pytest

from analysis.thresholds import parse_threshold
from analysis.votes import (count_votes, dupes_per_threshold, heldout_accuracy, most_confused,
                            precision_recall, select_dupes)


def long_table(evals: dict[int, tuple[int, list[int]]]):
    """{sample: (given label, [predictions])} -> long-format arrays with losses/probs."""
    sid, label, pred = [], [], []
    for s, (given, preds) in evals.items():
        sid += [s] * len(preds)
        label += [given] * len(preds)
        pred += preds
    sid, label, pred = map(np.array, (sid, label, pred))
    loss = np.where(pred == label, 0.1, 2.0)
    prob_given = np.where(pred == label, 0.9, 0.1)
    return sid, label, pred, loss, prob_given


EVALS = {
    0: (0, [0] * 10),                      # always right
    1: (0, [2] * 10),                      # 10/10 for class 2
    2: (1, [2] * 8 + [1, 1]),              # 8 votes for 2
    3: (1, [0] * 4 + [2] * 4 + [1, 1]),    # 4 and 4: tie goes to the lower class
    4: (2, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]),  # 5 and 5, spread: not pooled
    5: (2, [0] * 9),                       # only 9 evaluations
}


def test_count_votes_hand_built():
    v = count_votes(*long_table(EVALS), num_samples=7)
    v = v.set_index("sample_id")
    assert v.loc[0, "top_wrong_class"] == -1 and v.loc[0, "top_wrong_votes"] == 0
    assert (v.loc[1, "top_wrong_class"], v.loc[1, "top_wrong_votes"]) == (2, 10)
    assert (v.loc[2, "top_wrong_class"], v.loc[2, "top_wrong_votes"]) == (2, 8)
    assert (v.loc[3, "top_wrong_class"], v.loc[3, "top_wrong_votes"]) == (0, 4)
    assert v.loc[3, "n_wrong"] == 8
    assert (v.loc[4, "top_wrong_class"], v.loc[4, "top_wrong_votes"]) == (0, 5)
    assert v.loc[4, "n_wrong"] == 10
    assert v.loc[5, "n_evals"] == 9 and v.loc[5, "top_wrong_votes"] == 9
    assert v.loc[6, "n_evals"] == 0  # never evaluated
    assert v.loc[2, "mean_loss"] == pytest.approx((8 * 2.0 + 2 * 0.1) / 10)
    assert v.loc[1, "mean_prob_given"] == pytest.approx(0.1)
    assert v.loc[0, "mean_prob_given"] == pytest.approx(0.9)
    assert v["label"].tolist()[:6] == [0, 0, 1, 1, 2, 2]


def test_count_votes_matches_brute_force_on_random_tables():
    rng = np.random.default_rng(3)
    n, runs, c = 300, 10, 5
    label = rng.integers(0, c, n)
    sid = np.tile(np.arange(n), runs)
    lab = label[sid]
    pred = np.where(rng.random(len(sid)) < 0.7, lab, rng.integers(0, c, len(sid)))
    loss = rng.random(len(sid))
    v = count_votes(sid, lab, pred, loss, rng.random(len(sid)))
    for s in range(n):
        wrong = pred[(sid == s) & (pred != label[s])]
        counts = np.bincount(wrong, minlength=c)
        assert v.loc[s, "top_wrong_votes"] == counts.max()
        if counts.max():
            assert v.loc[s, "top_wrong_class"] == int(np.argmax(counts))
        assert v.loc[s, "mean_loss"] == pytest.approx(loss[sid == s].mean(), rel=1e-5)


def test_count_votes_validates_inputs():
    with pytest.raises(ValueError, match="equal length"):
        count_votes(np.arange(3), np.zeros(3), np.zeros(2), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="num_samples"):
        count_votes(np.array([5]), np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1),
                    num_samples=3)


def test_select_dupes_sorted_by_loss_then_votes():
    v = count_votes(*long_table(EVALS), num_samples=6)
    d = select_dupes(v, parse_threshold(">=8"), min_ratio=0)
    assert d["sample_id"].tolist() == [1, 5, 2]  # loss 2.0 (10 votes, then 9), then 1.62
    assert select_dupes(v, parse_threshold("==9"), min_ratio=0)["sample_id"].tolist() == [5]
    assert dupes_per_threshold(v, [parse_threshold(t) for t in ("10", ">=9", ">=8")], min_ratio=0) == \
        {">=10": 1, ">=9": 2, ">=8": 3}
    pairs = most_confused(d)
    assert pairs.to_numpy().tolist() == [[0, 2, 1], [1, 2, 1], [2, 0, 1]]


def test_heldout_accuracy_and_precision_recall():
    acc = heldout_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 0]),
                           np.array([1, 2, 3, 4]), np.array([1, 0, 3, 4]))
    assert acc["accuracy"].tolist() == [0.5, 1.0, 1.0] and acc["n"].tolist() == [2, 1, 1]
    assert precision_recall(np.array([1, 2, 3, 4]), np.array([2, 4, 6])) == (0.5, 2 / 3)


def test_loss_stats_and_top_losses():
    from analysis.losses import loss_stats, top_losses
    sid = np.array([0, 0, 1, 1, 2, 2, 2])
    loss = np.array([1.0, 3.0, 0.5, 0.1, 4.0, 0.0, 2.0])
    s = loss_stats(sid, loss, num_samples=4).set_index("sample_id")
    assert s["mean_loss"].round(4).tolist()[:3] == [2.0, 0.3, 2.0]
    assert s["max_loss"].tolist()[:3] == [3.0, 0.5, 4.0]
    assert s.loc[3, "n_evals"] == 0 and s.loc[3, "rank"] == -1
    assert sorted(s["rank"].tolist()[:3]) == [1, 2, 3] and s.loc[1, "rank"] == 3
    top = top_losses(s.reset_index(), k=2)
    assert top["sample_id"].tolist() == [0, 2]  # equal means: the stable order keeps id order
    per = top_losses(s.reset_index(), k=1, by=np.array([0, 1, 1, 0]))
    assert per["sample_id"].tolist() == [0, 2] and per["group"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="k must be"):
        top_losses(s.reset_index(), k=0)


def test_probability_ratio_keeps_undecided_look_alikes_out_of_the_dupes():
    from analysis.votes import dupe_mask, dupes_per_threshold, select_dupes
    # sample 0: 10/10 votes for class 1, but the models are undecided (45% label, 55% other);
    # sample 1: 10/10 votes, label 25% vs 70% (a class pair often swapped): a wrong label
    sid = np.repeat([0, 1], 10)
    label, pred = np.zeros(20, int), np.ones(20, int)
    prob_given = np.r_[np.full(10, 0.45), np.full(10, 0.25)]
    votes = count_votes(sid, label, pred, -np.log(prob_given), prob_given)
    votes["mean_prob_suggested"] = [0.55, 0.70]
    thr = parse_threshold(">=8")
    assert select_dupes(votes, thr, min_ratio=2)["sample_id"].tolist() == [1]
    assert sorted(select_dupes(votes, thr, min_ratio=0)["sample_id"]) == [0, 1]  # 0 = votes alone
    assert dupes_per_threshold(votes, [thr], min_ratio=2) == {">=8": 1}
    assert dupes_per_threshold(votes, [thr], min_ratio=3) == {">=8": 0}
    with pytest.raises(ValueError, match=">= 0"):
        dupe_mask(votes, thr, min_ratio=-1)
    with pytest.raises(ValueError, match="min_ratio=0"):
        dupe_mask(votes.drop(columns="mean_prob_suggested"), thr, min_ratio=2)


def test_the_dupes_order_follows_the_chosen_rank():
    import pandas as pd

    from analysis.thresholds import parse_threshold
    from analysis.votes import RANKINGS, select_dupes

    votes = pd.DataFrame({"sample_id": [0, 1, 2, 3], "top_wrong_votes": [9, 9, 9, 5],
                          "mean_loss": [1.0, 3.0, 2.0, 9.0],
                          "self_confidence": [0.1, 0.3, 0.05, 0.0],
                          "combined": [0.5, 0.9, 0.7, 1.0],
                          "mean_prob_given": [0.1] * 4, "mean_prob_suggested": [0.8] * 4})
    pick = lambda rank: select_dupes(votes, parse_threshold(">=5"), min_ratio=2,  # noqa: E731
                                     rank=rank)["sample_id"].tolist()
    # the score orders (votes only select and break ties): 5 votes but the most suspect first
    assert pick("combined") == [3, 1, 2, 0]
    assert pick("mean_loss") == [3, 1, 2, 0]
    assert pick("self_confidence") == [3, 2, 0, 1]  # a low quality score is suspect
    tied = votes.assign(combined=0.5)
    assert select_dupes(tied, parse_threshold(">=5"), min_ratio=2,
                        rank="combined")["sample_id"].tolist() == [0, 1, 2, 3]  # votes break ties
    assert pick("aum") == pick("mean_loss")  # no such column: the mean loss
    with pytest.raises(ValueError, match="valid choices"):
        pick("loudness")
    assert set(RANKINGS) >= {"combined", "mean_loss", "self_confidence", "normalized_margin"}
