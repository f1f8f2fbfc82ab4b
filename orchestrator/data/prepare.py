"""The data a pass trains on: the dataset scanned into the run's image cache and split once,
or, on a resumed run, what the first attempt wrote (a scan cut short goes on: finished shards
are not decoded again)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rich.console import Console

from orchestrator.config import RunConfig
from orchestrator.data.cache import Cache, build_cache, verify
from orchestrator.data.splits import make_splits
from orchestrator.errors import CacheError
from orchestrator.run.directory import Run
from trainers.shards import ShardedImages


@dataclass
class Prepared:
    index: pd.DataFrame
    classes: list[str]
    images: ShardedImages        # memory-mapped (or, in tests, an array)
    folds: np.ndarray            # repeats x N, int8
    timings: dict = field(default_factory=dict)


def prepare(run: Run, cfg: RunConfig, console: Console, *, task_options: dict,
            max_auto_size: int, aspect_for=None) -> Prepared:
    """Scan into the sharded cache and split once; on a resumed run, load what the first
    attempt wrote. `task_options` place the scan's Ray tasks; `max_auto_size` caps the
    automatic image size (it depends on the cluster's GPUs); `aspect_for(size, channels)`
    settles `--aspect auto` (it depends on the mode the data will get)."""
    t0 = time.perf_counter()
    timings: dict = {}

    def scan() -> Cache:
        if task_options:
            console.print(f"the dataset {cfg.data_dir} is only readable on this node: the scan "
                          "runs here (a shared mount or a bucket lets every node decode)",
                          highlight=False)
        aspect = run.scan_info().aspect if run.has_scan() else cfg.scan.aspect
        return build_cache(cfg.data_dir, run.shard_store(), image_size=cfg.scan.image_size,
                           aspect=aspect, min_per_class=cfg.scan.min_per_class,
                           seed=cfg.seed, console=console, task_options=task_options,
                           max_auto_size=max_auto_size,
                           **({"aspect_for": aspect_for} if aspect_for else {}))

    if run.has_scan() and run.has_splits():
        index, classes, splits = run.index(), run.classes(), run.splits()
        console.print(f"loaded {len(index):,} images from {run} (scan and splits of the first "
                      "attempt)", highlight=False)
        missing = sorted(set(run.shard_names()) - run.shard_store().names())
        if missing and run.scan_info().shards:  # deleted (corrupt): decode again
            console.print(f"decoding {len(missing)} missing shard(s) of the image cache again: "
                          f"{', '.join(missing[:5])}", highlight=False)
            cache = scan()
            if not cache.index[["relpath", "sha1"]].equals(index[["relpath", "sha1"]]):
                raise CacheError(f"the dataset {cfg.data_dir} changed since the run began, so "
                                 f"its missing shard(s) cannot be decoded again: start a new "
                                 "run")
            run.save_cache(cache)
    else:
        cache = scan()
        run.save_cache(cache)
        timings["scan_s"] = time.perf_counter() - t0
        index, classes = cache.index, cache.classes
        t1 = time.perf_counter()
        splits = make_splits(index["label"].to_numpy(), repeats=cfg.repeats, seed=cfg.seed,
                             mode=cfg.split)
        run.save_splits(splits)
        timings["splits_s"] = time.perf_counter() - t1
        p = cache.plan
        console.print(f"scanned {cfg.data_dir}: {len(index):,} images in {len(classes)} classes "
                      f"at {p.size}x{p.size}x{p.channels} ({p.aspect}), "
                      f"{len(cache.skipped)} skipped (see {run.path_of('skipped.csv')}); "
                      f"{cache.n_shards} shard(s), {cache.decoded_shards} decoded now",
                      highlight=False)
        for cls, n in cache.dropped_classes.items():
            console.print(f"[yellow]dropped class '{cls}' ({n} usable images)[/]")
    images = run.images()
    verify(images)
    timings.setdefault("scan_s", time.perf_counter() - t0)
    folds = np.empty((cfg.repeats, len(index)), dtype=np.int8)
    folds[splits["repeat"].to_numpy(), splits["sample_id"].to_numpy()] = splits["fold"].to_numpy()
    return Prepared(index, classes, images, folds, timings)
