"""The image cache as a training reads it: uint8 shard files (`.npy`, N x H x W x C each,
memory-mappable, readable alone) and each sample's (shard, row). Numpy only, so the run
directory and the reports can hold it without torch."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ShardedImages:
    """The image cache: shard files plus each sample's (shard, row). Arrays are opened
    memory-mapped, so holding this costs no pixel memory."""

    DTYPE, NDIM = np.uint8, 4    # what every shard holds: N x H x W x C pixels

    paths: list[str]             # shard files, in shard-number order
    shard_of: np.ndarray         # int32 per sample_id
    row_of: np.ndarray           # int32 per sample_id

    def __post_init__(self):
        self._maps: dict[int, np.ndarray] = {}
        self.shard_of = np.asarray(self.shard_of, np.int32)
        self.row_of = np.asarray(self.row_of, np.int32)

    def __getstate__(self):  # memory maps are not sent between processes: reopened there
        return {k: v for k, v in self.__dict__.items() if k != "_maps"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._maps = {}

    def __len__(self) -> int:
        return len(self.shard_of)

    def __getitem__(self, sid: int) -> np.ndarray:
        """One sample's image (H x W x C)."""
        return self.gather(np.array([sid]))[0]

    @property
    def nbytes(self) -> int:
        h, w, c = self.image_shape
        return len(self) * h * w * c

    def shard(self, k: int) -> np.ndarray:
        if k not in self._maps:
            try:
                arr = np.load(self.paths[k], mmap_mode="r")
            except (OSError, ValueError) as e:
                raise CorruptShard(self.paths[k], e) from e
            if arr.dtype != self.DTYPE or arr.ndim != self.NDIM:
                raise CorruptShard(self.paths[k], f"dtype {arr.dtype}, shape {arr.shape}")
            self._maps[k] = arr
        return self._maps[k]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.shard(int(self.shard_of[0])).shape[1:])

    def _by_shard(self, sids: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """[(shard, positions in `sids`)], each shard's positions in row order (sequential
        reads)."""
        order = np.lexsort((self.row_of[sids], self.shard_of[sids]))
        shards = self.shard_of[sids[order]]
        cuts = np.flatnonzero(np.diff(shards)) + 1
        return [(int(shards[p[0]]), order[p[0]:p[0] + len(p)])
                for p in np.split(np.arange(len(order)), cuts) if len(p)]

    def groups(self, sids: np.ndarray) -> dict[int, np.ndarray]:
        """The samples of `sids` by shard, each group in row order (sequential reads)."""
        sids = np.asarray(sids, np.int64)
        return {k: sids[pos] for k, pos in self._by_shard(sids)}

    def read(self, k: int, sids: np.ndarray) -> np.ndarray:
        """The images of samples `sids` of shard `k`, in that order."""
        arr = self.shard(k)
        rows = self.row_of[sids]
        if len(rows) and rows.max() >= len(arr):
            raise CorruptShard(self.paths[k], f"row {int(rows.max())} of {len(arr)}")
        return np.asarray(arr[rows])

    def gather(self, sids: np.ndarray) -> np.ndarray:
        """The images of `sids`, in that order (any shards)."""
        sids = np.asarray(sids, np.int64)
        out = np.empty((len(sids), *self.image_shape), self.DTYPE)
        for k, pos in self._by_shard(sids):
            out[pos] = self.read(k, sids[pos])
        return out

    def load_all(self) -> np.ndarray:
        """Every sample's image, in sample order: the resident cache."""
        return self.gather(np.arange(len(self)))


@dataclass
class ShardedFeatures(ShardedImages):
    """A backbone's embeddings, sharded like the image cache they were computed from: shard
    k holds row r's features at row r (float16, N x D, memory-mappable)."""

    DTYPE, NDIM = np.float16, 2

    @property
    def dim(self) -> int:
        return self.image_shape[0]


class CorruptShard(OSError):
    """A shard of the image cache cannot be read; the message names it and the fix."""

    def __init__(self, path: str, why):
        super().__init__(f"image cache shard {path} is unreadable ({why}): delete it and "
                         "resume the run (`dupes run --resume RUN`), which decodes that shard "
                         "again from the dataset")
