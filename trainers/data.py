"""How one training sees its images: resident on the device, or streamed from shards.

The image cache is a set of uint8 shards (`.npy`, N x H x W x C each, readable alone) and a
placement: which shard and row each sample lives in. A training gets a `Feed`:

- `ResidentFeed`: the whole cache as one uint8 tensor on the device, gathered per batch (the
  fast path when it fits: nothing is read after the start);
- `StreamFeed`: the training half read from the shards a window of shards at a time, in a
  shuffled shard order, shuffled within the window, with the next window read by a background
  thread while this one trains. Memory holds two windows, whatever the dataset's size.

Both yield uint8 NCHW batches on the device; augmentation stays on the device either way. Nothing
here knows where the shards came from (a run folder, a node-local copy of a bucket's).
"""
from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch

from trainers.hyp import DATA_MODES
from trainers.shards import CorruptShard, ShardedImages

STATS_SAMPLE = 2048  # images a streamed training normalises with (mean and std per channel)
STATS_BYTES = 256 << 20  # a resident training's statistics in one pass up to this much float32,
                         # else summed in chunks of this much float64


def _u8_tensor(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only arrays: never written
        return torch.from_numpy(np.ascontiguousarray(arr)).to(device)


class ResidentFeed:
    """The whole cache on the device (uint8), NCHW view."""

    mode = "resident"

    def __init__(self, images: np.ndarray | torch.Tensor | ShardedImages, device):
        if isinstance(images, ShardedImages):
            images = images.load_all()
        x = images if torch.is_tensor(images) else _u8_tensor(images, device)
        self.x = x.to(device).permute(0, 3, 1, 2)
        self.device = torch.device(device)

    @property
    def shape(self) -> tuple[int, int, int]:  # C, H, W
        return tuple(self.x.shape[1:])

    def stats(self, train_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std per channel of the training half (the held-out half stays unseen)."""
        per_image = 4 * self.x[0].numel()
        if len(train_idx) * per_image <= STATS_BYTES:
            x_tr = self.x[train_idx].float() / 255.0
            return (x_tr.mean(dim=(0, 2, 3), keepdim=True),
                    x_tr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3))
        # chunk by chunk: the whole half in float32 is 4x the cache (6 GB a worker at 60k
        # images of 128 px; killed by Ray's OOM monitor), for two numbers per channel
        chunk = max(1, STATS_BYTES // (2 * per_image))
        total = torch.zeros(self.x.shape[1], dtype=torch.float64, device=self.x.device)
        squares = torch.zeros_like(total)
        for i in range(0, len(train_idx), chunk):
            x = self.x[train_idx[i:i + chunk]].double() / 255.0
            total += x.sum(dim=(0, 2, 3))
            squares += (x * x).sum(dim=(0, 2, 3))
        n = len(train_idx) * self.x.shape[2] * self.x.shape[3]
        mean = total / n
        std = ((squares - n * mean * mean) / (n - 1)).clamp_min(0).sqrt()
        return (mean.float().view(1, -1, 1, 1),
                std.float().view(1, -1, 1, 1).clamp_min(1e-3))

    def epoch(self, train_idx: torch.Tensor, batch: int, gen: torch.Generator
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(sample indices, uint8 images) per step, in a fresh random order."""
        order = train_idx[torch.randperm(len(train_idx), device=train_idx.device, generator=gen)]
        steps = max(1, -(-len(order) // batch))
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            if len(idx) < 2 and steps > 1:
                continue  # a 1-image batch breaks BatchNorm statistics
            yield idx, self.x[idx]

    def ordered(self, idx: torch.Tensor, batch: int
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(positions in `idx`, uint8 images) covering `idx` once."""
        for i in range(0, len(idx), batch):
            yield torch.arange(i, min(i + batch, len(idx)), device=idx.device), \
                self.x[idx[i:i + batch]]


class StreamFeed:
    """A training's half read from the shards: shuffled shard order, `window` shards at a
    time, shuffled within the window, the next window prefetched by a thread."""

    mode = "streamed"

    def __init__(self, images: ShardedImages, device, *, window: int = 4, seed: int = 0):
        self.images, self.device, self.window = images, torch.device(device), max(1, window)
        h, w, c = images.image_shape
        self._shape = (c, h, w)
        self.rng = np.random.default_rng(seed)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-prefetch")
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    def _to_device(self, arr: np.ndarray) -> torch.Tensor:
        return _u8_tensor(arr, self.device).permute(0, 3, 1, 2)

    def stats(self, train_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std per channel of a sample of the training half."""
        tr = train_idx.cpu().numpy()
        pick = np.sort(self.rng.choice(tr, size=min(STATS_SAMPLE, len(tr)), replace=False))
        x = self._to_device(self.images.gather(pick)).float() / 255.0
        return (x.mean(dim=(0, 2, 3), keepdim=True),
                x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3))

    def _load(self, window: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            parts = [(sids, self.images.read(k, sids)) for k, sids in window]
        return (np.concatenate([s for s, _ in parts]),
                np.concatenate([x for _, x in parts]))

    def _windows(self, groups: dict[int, np.ndarray], order: np.ndarray):
        keys = list(groups)
        wins = [[(keys[j], groups[keys[j]]) for j in order[i:i + self.window]]
                for i in range(0, len(order), self.window)]
        if not wins:
            return
        nxt = self.pool.submit(self._load, wins[0])
        for i in range(len(wins)):
            sids, x = nxt.result()
            if i + 1 < len(wins):
                nxt = self.pool.submit(self._load, wins[i + 1])  # read while this one trains
            yield sids, x

    def epoch(self, train_idx: torch.Tensor, batch: int, gen: torch.Generator
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        groups = self.images.groups(train_idx.cpu().numpy())
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device))
        rng = np.random.default_rng(seed)
        carry_s = carry_x = None
        for sids, x in self._windows(groups, rng.permutation(len(groups))):
            perm = rng.permutation(len(sids))
            sids, x = sids[perm], x[perm]
            if carry_s is not None:  # a short batch left by the last window goes first
                sids, x = np.concatenate([carry_s, sids]), np.concatenate([carry_x, x])
            full = len(sids) // batch * batch
            for i in range(0, full, batch):
                yield (torch.as_tensor(sids[i:i + batch], device=self.device),
                       self._to_device(x[i:i + batch]))
            carry_s, carry_x = (sids[full:], x[full:]) if full < len(sids) else (None, None)
        if carry_s is not None and len(carry_s) >= 2:
            yield torch.as_tensor(carry_s, device=self.device), self._to_device(carry_x)

    def ordered(self, idx: torch.Tensor, batch: int
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ids = idx.cpu().numpy()
        pos = np.empty(int(ids.max()) + 1 if len(ids) else 0, np.int64)
        pos[ids] = np.arange(len(ids))
        groups = self.images.groups(ids)
        for sids, x in self._windows(groups, np.arange(len(groups))):
            for i in range(0, len(sids), batch):
                yield (torch.as_tensor(pos[sids[i:i + batch]], device=self.device),
                       self._to_device(x[i:i + batch]))

    def close(self) -> None:
        self.pool.shutdown(wait=False)


RESIDENT_SHARE = 0.5  # of the memory a training may use: the rest is the model's and the OS's


def choose_mode(mode: str, cache_bytes: int, device, *, share: float = 1.0) -> str:
    """`resident` when the whole cache fits in RESIDENT_SHARE of this training's part
    (`share`) of its device's memory (a GPU's, or the node's RAM on CPU), else `streamed`;
    a forced mode as it is."""
    if mode not in DATA_MODES:
        raise ValueError(f"data mode must be one of {DATA_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    device = torch.device(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        import os
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return "resident" if cache_bytes <= RESIDENT_SHARE * total * share else "streamed"


def make_feed(images, device, *, mode: str = "resident", seed: int = 0, window: int = 4):
    """A `ResidentFeed` or `StreamFeed` for `images` (an array, a tensor or ShardedImages)."""
    if mode == "streamed":
        if not isinstance(images, ShardedImages):
            raise ValueError("a streamed training reads a ShardedImages cache, got "
                             f"{type(images).__name__}")
        return StreamFeed(images, device, seed=seed, window=window)
    if mode != "resident":
        raise ValueError(f"data mode must be 'resident' or 'streamed', got {mode!r}")
    return ResidentFeed(images, device)


__all__ = ["ShardedImages", "CorruptShard", "ResidentFeed", "StreamFeed", "make_feed",
           "choose_mode", "DATA_MODES"]
