"""The sharded image cache on a real local Ray: a scan into shards that resumes, the two ways a
training reads it, aspect policies, a corrupt shard named with its fix."""
import json

import numpy as np
import pandas as pd
import pytest
import ray
import torch
from PIL import Image

from orchestrator.data import cache as cachemod
from orchestrator.data.cache import build_cache, sharded_images, stratified_sample
from orchestrator.cli.main import main
from orchestrator.data.scan import fit_square, scan_dataset
from orchestrator.run.remote import ShardStore
from tests.conftest import tree_hash
from tests.pipeline.test_end_to_end import FAST, check_predictions
from trainers.data import ResidentFeed, ShardedImages, StreamFeed, make_feed
from trainers.hyp import Hyp
from trainers.train import train


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_scan_into_shards_equals_the_in_memory_scan_and_resumes(local_ray, digit_data,
                                                                tmp_path, monkeypatch):
    monkeypatch.setattr(cachemod, "rows_per_shard", lambda size, channels: 10)
    before = tree_hash(digit_data)
    store = ShardStore(tmp_path / "cache")
    c = build_cache(digit_data, store, image_size=None, aspect="pad", min_per_class=None,
                    seed=0)
    assert tree_hash(digit_data) == before
    assert (c.n_shards, c.decoded_shards) == (9, 9)
    images = sharded_images(store, c.placement, c.n_shards)
    ref = scan_dataset(digit_data)
    assert c.index.equals(ref.index)  # the same index, sample for sample
    np.testing.assert_array_equal(images.load_all(), ref.images)
    # every shard mixes the classes (a streamed training reads a few shards at a time)
    first = c.placement[c.placement["shard"] == 0]["sample_id"]
    assert c.index.loc[first, "label"].nunique() == 3

    # an interrupted scan: two shards never written (one lost its .npy, one never began)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()}
    (tmp_path / "cache" / "shard-00003.npy").unlink()
    for name in ("shard-00005.npy", "shard-00005.json"):
        (tmp_path / "cache" / name).unlink()
    again = build_cache(digit_data, store, image_size=None, aspect="pad", min_per_class=None,
                        seed=0)
    assert again.decoded_shards == 2 and again.index.equals(c.index)
    now = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()}
    rewritten = {n for n in now if now[n] != stamps.get(n)}
    assert rewritten == {"shard-00003.npy", "shard-00003.json", "shard-00005.npy",
                         "shard-00005.json"}  # the finished shards were not decoded again
    np.testing.assert_array_equal(sharded_images(store, again.placement, 9).load_all(),
                                  ref.images)


def test_streamed_and_resident_trainings_see_the_same_images(digit_data, tmp_path):
    ref = scan_dataset(digit_data)
    n = len(ref.index)
    order = np.random.default_rng(1).permutation(n)
    paths = []
    for k, part in enumerate(np.array_split(order, 4)):
        np.save(tmp_path / f"s{k}.npy", ref.images[np.sort(part)])
        paths.append(str(tmp_path / f"s{k}.npy"))
    shard_of, row_of = np.zeros(n, np.int32), np.zeros(n, np.int32)
    for k, part in enumerate(np.array_split(order, 4)):
        shard_of[np.sort(part)], row_of[np.sort(part)] = k, np.arange(len(part))
    images = ShardedImages(paths, shard_of, row_of)
    np.testing.assert_array_equal(images.gather(np.array([5, 0, 77])), ref.images[[5, 0, 77]])
    np.testing.assert_array_equal(images.gather(np.array([5, 5])), ref.images[[5, 5]])
    stream = make_feed(images, "cpu", mode="streamed")
    assert isinstance(stream, StreamFeed)
    tr = torch.arange(0, n, 2)
    seen = torch.cat([idx for idx, _ in stream.epoch(tr, 16, torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == tr.tolist()  # each training image once per epoch
    for idx, x in stream.epoch(tr, 16, torch.Generator().manual_seed(0)):
        np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), ref.images[idx.numpy()])
    ev = torch.arange(1, n, 2)
    got = dict(zip(*[torch.cat(t).tolist() for t in zip(*[(p, ev[p]) for p, _ in
                                                          stream.ordered(ev, 7)])]))
    assert sorted(got) == list(range(len(ev)))
    labels = ref.index["label"].to_numpy()
    hyp = Hyp(epochs=6, batch_size=16, flip=False, translate=1, width=8)
    a = train(hyp, ResidentFeed(images, "cpu"), labels, tr.numpy(), ev.numpy(), seed=0)
    b = train(hyp, stream, labels, tr.numpy(), ev.numpy(), seed=0)
    assert a.probs.shape == b.probs.shape == (len(ev), 3)
    assert (a.pred == labels[ev.numpy()]).mean() > 0.8 and (b.pred == labels[ev.numpy()]).mean() > 0.8


def test_a_streamed_pass_equals_a_resident_pass_in_counts(digit_data, tmp_path):
    tables = {}
    for mode in ("resident", "streamed"):
        run = tmp_path / mode
        assert main(["run", str(digit_data), "--out", str(run), "--repeats", "2",
                     "--no-sanity", "--data-mode", mode, *FAST]) == 0
        check_predictions(run, 90, 2)
        modes = {json.loads(p.read_text())["data_mode"] for p in (run / "trainings").iterdir()}
        assert modes == {mode}
        tables[mode] = pd.read_parquet(run / "predictions")
    r, s = tables["resident"], tables["streamed"]
    assert r.dtypes.to_dict() == s.dtypes.to_dict()
    assert (r.groupby("sample_id").size().sort_index()
            .equals(s.groupby("sample_id").size().sort_index()))


def test_a_corrupt_shard_is_named_with_its_fix_and_a_resume_decodes_it_again(digit_data,
                                                                          tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", str(digit_data), "--out", str(run), "--repeats", "1", "--no-sanity",
                 *FAST]) == 0
    shard = run / "cache" / "shard-00000.npy"
    good = shard.read_bytes()
    shard.write_bytes(good[:200])  # truncated
    capsys.readouterr()
    assert main(["run", "--resume", str(run)]) == 2
    out = capsys.readouterr().out
    assert str(shard) in out and "delete it" in out and "--resume" in out
    shard.unlink()
    assert main(["run", "--resume", str(run)]) == 0
    assert "decoding 1 missing shard(s)" in capsys.readouterr().out
    assert shard.read_bytes() == good


@pytest.mark.parametrize("aspect", ["pad", "crop", "squash"])
def test_aspect_policies(aspect):
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, :20] = 200  # left half bright
    out = np.asarray(fit_square(Image.fromarray(wide), 20, aspect))
    assert out.shape == (20, 20, 3)
    if aspect == "pad":  # all of it, proportions kept: a band in the middle, padded
        assert out[0].std() < 1 and out[10, :8].mean() > 150 and out[10, 12:].mean() < 50
    elif aspect == "crop":  # the centre square: half bright, half dark, full height
        assert out[0, :8].mean() > 150 and out[0, 12:].mean() < 50
    else:  # stretched: every row has both halves
        assert out[0, :8].mean() > 150 and out[19, 12:].mean() < 50


def test_stratified_sample_keeps_every_class():
    labels = np.repeat([0, 1, 2], [5000, 300, 20])
    pick = stratified_sample(labels, 1000)
    assert len(pick) <= 1010 and set(labels[pick]) == {0, 1, 2}
    assert np.array_equal(stratified_sample(labels[:50], 1000), np.arange(50))


def test_resident_feed_accepts_arrays_tensors_and_shards(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (6, 4, 4, 1), dtype=np.uint8)
    np.save(tmp_path / "a.npy", x)
    shards = ShardedImages([str(tmp_path / "a.npy")], np.zeros(6), np.arange(6))
    for source in (x, torch.from_numpy(x), shards):
        feed = ResidentFeed(source, "cpu")
        assert feed.shape == (1, 4, 4)
        np.testing.assert_array_equal(feed.x.permute(0, 2, 3, 1).numpy(), x)
    with pytest.raises(ValueError, match="resident"):
        make_feed(x, "cpu", mode="fast")


def test_resident_statistics_in_chunks_equal_the_one_pass_ones(monkeypatch):
    import trainers.data as data
    x = np.random.default_rng(0).integers(0, 255, (300, 6, 6, 3), dtype=np.uint8)
    feed, idx = ResidentFeed(x, "cpu"), torch.arange(0, 300, 2)
    whole = feed.stats(idx)
    monkeypatch.setattr(data, "STATS_BYTES", 64 * 6 * 6 * 3 * 4)  # 150 images: 5 chunks
    chunked = feed.stats(idx)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
