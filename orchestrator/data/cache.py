"""The image cache of a run: uint8 shards decoded by a Ray Data job across the cluster's CPUs.

The driver lists the dataset and holds the index (paths, labels, sizes, hashes), never the
pixels. The files are dealt into shards in a seeded random order, so every shard mixes the
classes (a streamed training reads a few shards at a time and must see every class). Each shard
is one Ray Data task that reads, hashes, decodes and resizes its files and writes:

- `cache/shard-KKKKK.npy`: uint8 n x H x W x C, the shard's usable images (memory-mappable,
  readable alone);
- `cache/shard-KKKKK.json`: every file of the shard with its outcome (row in the shard, bytes,
  sha1, or why it was skipped), written after the `.npy`: its presence says the shard is whole.

Both are written atomically (temp + rename in a folder every node mounts; one PUT each in a
bucket). A scan that is interrupted and run again reuses every shard whose `.json` matches its
plan and decodes only the rest. `placement.parquet` (sample_id, shard, row) says where each
sample of the index lives. Why `.npy` and not Parquet of fixed-size tensors: measured in
`benchmarks/scale.py` (uint8 images barely compress, and a memory map reads a row without
decoding a column chunk).
"""
from __future__ import annotations

from typing import Callable

import io
import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from rich.console import Console

from orchestrator.data import scan as scanmod
from orchestrator.run.remote import ShardStore
from orchestrator.run.rundir import meta_name, shard_name
from trainers.shards import CorruptShard, ShardedImages
from orchestrator.errors import CacheError

SHARD_BYTES = 64 << 20  # decoded pixels per shard: a task's memory, a streamed read's unit
MIN_ROWS, MAX_ROWS = 256, 16384
PROGRESS_S = 10.0


@dataclass(frozen=True)
class Plan:
    """What every shard task needs to know, and what a reused shard must match."""

    root: str          # the dataset (a folder or a bucket prefix)
    size: int          # px, square
    channels: int      # 1 or 3
    aspect: str        # pad, crop or squash
    rows: int          # files per shard
    seed: int


def rows_per_shard(size: int, channels: int) -> int:
    return int(np.clip(SHARD_BYTES // (size * size * channels), MIN_ROWS, MAX_ROWS))


def deal(n: int, rows: int, seed: int) -> list[np.ndarray]:
    """Candidate positions per shard: a seeded permutation cut into runs of `rows`."""
    order = np.random.default_rng([seed, 0x5AAD]).permutation(n)
    return [np.sort(order[i:i + rows]) for i in range(0, n, rows)]


def decode_shard(item: dict) -> dict:
    """Ray Data task: decode one shard's files and write the shard (or reuse a whole one)."""
    plan, store, k = Plan(**item["plan"]), ShardStore(item["store"]), int(item["shard"])
    relpaths = list(item["relpaths"])
    old = store.get(meta_name(k))
    if old is not None:
        meta = json.loads(old)
        if meta["relpaths"] == relpaths and meta["plan"] == asdict(plan) \
                and store.exists(shard_name(k)):
            return {"shard": k, "meta": old.decode(), "reused": True}
    outcome = {"relpaths": relpaths, "plan": asdict(plan), "row": [], "bytes": [], "sha1": [],
               "reason": []}
    pixels = []
    for rel in relpaths:
        px, nbytes, sha1, reason = scanmod._decode(plan.root, rel, plan.size,
                                                   aspect=plan.aspect, channels=plan.channels)
        outcome["row"].append(len(pixels) if px is not None else -1)
        outcome["bytes"].append(int(nbytes))
        outcome["sha1"].append(sha1)
        outcome["reason"].append(reason)
        if px is not None:
            pixels.append(px if px.ndim == 3 else px[..., None])
    shape = (0, plan.size, plan.size, plan.channels)
    arr = np.stack(pixels) if pixels else np.zeros(shape, np.uint8)
    buf = io.BytesIO()
    np.save(buf, arr)
    store.put(shard_name(k), buf.getvalue())
    text = json.dumps(outcome)
    store.put(meta_name(k), text.encode())  # last: the shard is whole
    return {"shard": k, "meta": text, "reused": False}


@dataclass
class Cache:
    """The result of a scan into shards."""

    index: pd.DataFrame
    classes: list[str]
    skipped: pd.DataFrame
    dropped_classes: dict[str, int]
    placement: pd.DataFrame       # sample_id, shard, row
    plan: Plan
    n_shards: int
    decoded_shards: int           # shards decoded now (the rest were reused)
    n_listed: int = 0             # image files listed (with `sample`: before sampling)
    n_sampled: int = 0            # ... of which decoded (all of them without `sample`)


def build_cache(root, store: ShardStore, *, image_size: int | None, aspect: str,
                min_per_class: int | None, seed: int, console: Console | None = None,
                task_options: dict | None = None, max_auto_size: int = scanmod.AUTO_MAX,
                sample: int | None = None, local: bool = False,
                aspect_for: Callable[[int, int], str] = lambda size, channels: "pad"
                ) -> Cache:
    """Scan `root` into shards in `store` with a Ray Data job (Ray must be initialised);
    `task_options` are the Ray options of its tasks (e.g. a scheduling strategy); without an
    `image_size`, the images' median size up to `max_auto_size`. With `sample`, only up to
    that many files, every class in proportion (a preflight check: its cost must not grow
    with the dataset); with `local`, every shard is decoded in this process, without Ray.
    `aspect` "auto" is settled by `aspect_for(size, channels)` once the headers are read."""
    found, rejects, classes = scanmod.list_files(root)
    n_listed = len(found)
    found = scanmod.sample_files(found, sample)
    size, channels = scanmod.header_sample(root, [rel for _, rel in found],
                                           max_side=max_auto_size)
    size = image_size or size
    if aspect == "auto":  # settled from what the headers say (the mode depends on it)
        aspect = aspect_for(int(size), int(channels))
    plan = Plan(str(root), int(size), int(channels), aspect, rows_per_shard(size, channels),
                int(seed))
    groups = deal(len(found), plan.rows, plan.seed)
    items = [{"shard": k, "relpaths": [found[p][1] for p in g], "plan": asdict(plan),
              "store": store.root} for k, g in enumerate(groups)]
    metas: dict[int, dict] = {}
    reused, t0, t_line = 0, time.perf_counter(), time.perf_counter()
    if len(items) <= 1 or local:
        # One shard has nothing to spread: it is decoded here (same code, same files), as a
        # Ray Data job costs seconds to start (the demo's scan: 4.0 s as a job)
        rows = (decode_shard(item) for item in items)
    else:
        import ray.data  # only here: a local scan (`dupes sanity`) runs without Ray

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        rows = ray.data.from_items(items, override_num_blocks=len(items)).map(
            decode_shard, num_cpus=1, **(task_options or {})).iter_rows()
    for row in rows:
        metas[int(row["shard"])] = json.loads(row["meta"])
        reused += bool(row["reused"])
        if console is not None and time.perf_counter() - t_line > PROGRESS_S:
            t_line = time.perf_counter()
            files = sum(len(m["relpaths"]) for m in metas.values())
            console.print(f"scan: {len(metas)}/{len(items)} shards, {files:,}/{len(found):,}"
                          f" files, {files / (t_line - t0):,.0f} files/s", highlight=False)
    shard_of = np.full(len(found), -1, np.int32)
    row_of = np.full(len(found), -1, np.int32)
    meta = [None] * len(found)
    for k, g in enumerate(groups):
        m = metas[k]
        for j, p in enumerate(g):
            shard_of[p], row_of[p] = k, m["row"][j]
            meta[p] = (m["row"][j] >= 0, m["bytes"][j], m["sha1"][j], m["reason"][j])
    index, kept, skipped, dropped, keep = scanmod.build_index(root, found, meta, rejects,
                                                              classes, min_per_class)
    keep = np.asarray(keep, np.int64)
    placement = pd.DataFrame({"sample_id": index["sample_id"].to_numpy(),
                              "shard": shard_of[keep] if len(keep) else np.zeros(0, np.int32),
                              "row": row_of[keep] if len(keep) else np.zeros(0, np.int32)})
    return Cache(index, kept, skipped, dropped, placement, plan, len(groups),
                 len(groups) - reused, n_listed, len(found))


def sharded_images(store: ShardStore, placement: pd.DataFrame, n_shards: int) -> ShardedImages:
    """The cache as `ShardedImages` on this node (a bucket's shards are copied here)."""
    return ShardedImages([store.local(shard_name(k)) for k in range(n_shards)],
                         placement["shard"].to_numpy(), placement["row"].to_numpy())


def verify(images: ShardedImages) -> None:
    """Every shard opens as uint8 images with all the rows its samples need: checked from the
    headers (no pixel is read), before a training is spent."""
    last_row = np.full(len(images.paths), -1, np.int64)
    np.maximum.at(last_row, images.shard_of, images.row_of)
    for k, last in enumerate(last_row):
        if last < 0:
            continue  # a shard whose images were all dropped (a class below --min-per-class)
        try:
            arr = images.shard(int(k))
        except CorruptShard as e:
            raise CacheError(str(e)) from None
        if last >= len(arr):
            raise CacheError(str(CorruptShard(images.paths[int(k)],
                                              f"{len(arr)} rows, row {last} needed")))


def usable_images(cache: Cache) -> int:
    """The dataset's usable images: counted, or estimated from a sample's share."""
    return round(len(cache.index) * cache.n_listed / max(1, cache.n_sampled))


def stratified_sample(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Up to `k` sample ids with every class in proportion (sorted)."""
    labels = np.asarray(labels)
    if len(labels) <= k:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        ids = np.flatnonzero(labels == c)
        take = max(2, int(round(k * len(ids) / len(labels))))
        picked.append(rng.choice(ids, size=min(take, len(ids)), replace=False))
    return np.sort(np.concatenate(picked))
