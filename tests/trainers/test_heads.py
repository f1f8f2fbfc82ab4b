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
              head_lr=3e-3)
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
