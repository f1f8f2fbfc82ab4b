"""A head on embeddings kept on disk: streamed (a chunk at a time) it fits the same model as
resident, and never reads more than a chunk of the training half at once."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from trainers.heads import train_head
from trainers.hyp import Hyp
from trainers.shards import ShardedFeatures


class CountingFeatures(ShardedFeatures):
    """ShardedFeatures that remember the largest read (rows)."""

    def gather(self, sids):
        self.largest = max(getattr(self, "largest", 0), len(sids))
        return super().gather(sids)


def digits_on_disk(tmp_path, shards=3):
    """The digits' 64 pixels as float16 'embeddings' in `shards` .npy shards, rows shuffled
    across them as an embedding pass writes them (by image shard)."""
    d = load_digits()
    x, y = d.data.astype(np.float16), d.target
    rng = np.random.default_rng(0)
    shard_of = rng.integers(0, shards, len(y)).astype(np.int32)
    row_of = np.empty(len(y), np.int32)
    paths = []
    for k in range(shards):
        mine = np.flatnonzero(shard_of == k)
        row_of[mine] = np.arange(len(mine))
        paths.append(str(tmp_path / f"features-{k:05d}.npy"))
        np.save(paths[-1], x[mine])
    return paths, shard_of, row_of, x, y


@pytest.mark.parametrize("hidden", [0, 32])
def test_a_streamed_head_fits_the_resident_heads_model_a_chunk_at_a_time(tmp_path, hidden):
    paths, shard_of, row_of, x, y = digits_on_disk(tmp_path)
    order = np.random.default_rng(1).permutation(len(y))
    tr, ev = order[:900], order[900:]
    hyp = Hyp(mode="frozen", head_hidden=hidden, head_l2=30.0, head_epochs=20, head_batch=64,
              head_lr=3e-3, head_prune=False)
    resident = train_head(hyp, x, y, tr, ev, seed=3, num_classes=10)
    disk = CountingFeatures(paths, shard_of, row_of)
    streamed = train_head(hyp, disk, y, tr, ev, seed=3, num_classes=10, streamed=True,
                          chunk_rows=128)
    # the statistics, the optimiser's passes, the predictions: a chunk; an MLP's mini-batch
    assert disk.largest <= (128 if hidden == 0 else max(128, hyp.head_batch))
    assert (resident.pred == y[ev]).mean() > 0.9  # a real model, not a constant
    if hidden == 0:  # the same convex objective, summed in another order
        assert np.abs(resident.probs - streamed.probs).max() < 5e-3  # L-BFGS tolerances
        assert (resident.pred == streamed.pred).mean() > 0.995
    else:  # the same mini-batches in the same order; float sums differ in the last bits
        assert (resident.pred == streamed.pred).mean() > 0.97
    # resident from the same shards: the same model as from the array
    again = train_head(hyp, CountingFeatures(paths, shard_of, row_of), y, tr, ev, seed=3,
                       num_classes=10)
    assert np.abs(again.probs - resident.probs).max() < 1e-5


def test_a_pruned_head_streams_too(tmp_path):
    paths, shard_of, row_of, x, y = digits_on_disk(tmp_path)
    order = np.random.default_rng(1).permutation(len(y))
    tr, ev = order[:900], order[900:]
    hyp = Hyp(mode="frozen", head_l2=30.0)
    resident = train_head(hyp, x, y, tr, ev, seed=3, num_classes=10)
    disk = CountingFeatures(paths, shard_of, row_of)
    streamed = train_head(hyp, disk, y, tr, ev, seed=3, num_classes=10, streamed=True,
                          chunk_rows=128)
    assert disk.largest <= 128  # the cross-fit's heads stream as the last one does
    assert resident.left_out is not None and streamed.left_out is not None
    # a borderline image may flip in or out between the two sums' last bits
    assert abs(resident.left_out - streamed.left_out) <= 2
    assert (resident.pred == streamed.pred).mean() > 0.99


def noisy_digits(rate=0.2, seed=0):
    d = load_digits()
    x, true = d.data.astype(np.float32), d.target
    rng = np.random.default_rng(seed)
    given = true.copy()
    flip = rng.random(len(true)) < rate
    given[flip] = (true[flip] + rng.integers(1, 10, flip.sum())) % 10
    return x, true, given, flip


def test_a_pruned_head_leaves_out_the_wrong_labels_and_predicts_better():
    from dataclasses import replace
    x, true, given, flip = noisy_digits()
    order = np.random.default_rng(1).permutation(len(given))
    tr, ev = order[:900], order[900:]
    hyp = Hyp(mode="frozen", head_l2=30.0)
    assert hyp.head_prune  # the default
    pruned = train_head(hyp, x, given, tr, ev, seed=3, num_classes=10)
    plain = train_head(replace(hyp, head_prune=False), x, given, tr, ev, seed=3,
                       num_classes=10)
    assert plain.left_out is None and pruned.left_out > 0
    from trainers.heads import prune_mask
    drop = prune_mask(hyp, x, given, np.sort(tr), seed=3, num_classes=10)
    assert drop.sum() == pruned.left_out
    wrong = flip[np.sort(tr)]
    assert wrong[drop].mean() > 0.7       # what it leaves out is mostly mislabelled ...
    assert drop[wrong].mean() > 0.6       # ... and most of the mislabelled go
    # cleaner training: better against the truth, and the wrong labels stand out more
    assert (pruned.pred == true[ev]).mean() > (plain.pred == true[ev]).mean()
    def mean_given(out):
        return out.probs[np.arange(len(ev)), given[ev]][flip[ev]].mean()
    assert mean_given(pruned) < mean_given(plain)


def test_the_prune_keeps_half_of_a_class_and_every_image_of_a_rare_one():
    from trainers.heads import PRUNE_MIN_CLASS, prune_mask

    def labelled(rare: int):
        """Features that say the true class (10 of each, noisy one-hots); class 8 is 10 true
        8s and 40 true 6s (so most of it is flagged), class 3 is `rare` true 0s alone."""
        true = np.repeat(np.arange(10), [100, 60, 60, 0, 60, 60, 140, 60, 10, 60])
        rng = np.random.default_rng(0)
        x = (5 * np.eye(10)[true] + rng.normal(0, 1, (len(true), 10))).astype(np.float32)
        y = true.copy()
        y[np.flatnonzero(true == 6)[:40]] = 8
        y[np.flatnonzero(true == 0)[:rare]] = 3
        return x, y, true

    x, y, _ = labelled(PRUNE_MIN_CLASS - 1)
    idx = np.arange(len(y))
    drop = prune_mask(Hyp(mode="frozen", head_l2=30.0), x, y, idx, seed=0, num_classes=10)
    for k in range(10):
        members = y == k
        assert drop[members].sum() <= members.sum() // 2, k
    assert drop[y == 8].sum() == (y == 8).sum() // 2  # 40 of 50 flagged: the cap holds
    assert not drop[y == 3].any()  # the rare class loses nothing ...
    x, y, _ = labelled(PRUNE_MIN_CLASS)  # ... though one a little larger does
    drop = prune_mask(Hyp(mode="frozen", head_l2=30.0), x, y, idx, seed=0, num_classes=10)
    assert drop[y == 3].any()
