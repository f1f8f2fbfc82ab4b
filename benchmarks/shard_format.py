"""Which file format the image cache's shards use: .npy (memory-mapped) or Parquet of
fixed-size tensors, on one shard of the size the scan writes (64 MB of 128 px RGB images).

    .venv/bin/python benchmarks/shard_format.py

Measured per format: write time, size on disk, reading the whole shard, and reading 128 random
rows (what a resident load and a streamed window do, and what a live contact sheet or a
sanity sample does). Images are CIFAR-10 upscaled to 128 px (../shared/data/cifar10_train.npz),
so their compressibility is a photo's. Prints a table and writes
benchmarks/results/shard_format.json.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
CIFAR = ROOT.parent / "shared" / "data" / "cifar10_train.npz"
OUT = ROOT / "benchmarks" / "results" / "shard_format.json"


def drop_cache(path: Path) -> None:
    """Ask the kernel to forget the file's pages, so a read comes from disk (best effort)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    d = np.load(CIFAR)["images"][:1365]
    x = np.stack([np.asarray(Image.fromarray(im).resize((128, 128), Image.BICUBIC)) for im in d])
    n, shape = len(x), x.shape[1:]
    rows = np.sort(np.random.default_rng(0).choice(n, 128, replace=False))
    tmp = Path(tempfile.mkdtemp(prefix="shard-format-"))
    results = []

    npy = tmp / "s.npy"
    write_npy = timed(lambda: np.save(npy, x), 3)
    results.append({"format": ".npy (memory map)", "write_s": write_npy,
                    "mb": npy.stat().st_size / 1e6,
                    "read_all_s": timed(lambda: (drop_cache(npy), np.load(npy).sum())),
                    "read_128_rows_s": timed(lambda: (drop_cache(npy),
                                                      np.load(npy, mmap_mode="r")[rows].sum()))})
    for codec in ("none", "zstd"):
        path = tmp / f"s-{codec}.parquet"
        flat = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.uint8()),
                                                 int(np.prod(shape)))
        table = pa.table({"image": flat})

        def write():
            pq.write_table(table, path, compression=codec, row_group_size=128)

        def read_all():
            drop_cache(path)
            t = pq.read_table(path)
            return t["image"].combine_chunks().flatten().to_numpy().reshape(-1, *shape).sum()

        def read_rows():
            drop_cache(path)
            f = pq.ParquetFile(path)
            groups = sorted({int(r) // 128 for r in rows})  # the row groups holding them
            t = f.read_row_groups(groups)
            arr = t["image"].combine_chunks().flatten().to_numpy().reshape(-1, *shape)
            base = {g: i * 128 for i, g in enumerate(groups)}
            return arr[[base[int(r) // 128] + int(r) % 128 for r in rows]].sum()

        results.append({"format": f"Parquet, fixed-size list, {codec}", "write_s": timed(write, 3),
                        "mb": path.stat().st_size / 1e6, "read_all_s": timed(read_all),
                        "read_128_rows_s": timed(read_rows)})
    table = Table(title=f"one shard: {n} images of {shape[0]} px RGB ({x.nbytes / 1e6:.0f} MB)")
    for col in ("format", "write s", "MB on disk", "read all s", "read 128 random rows s"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for r in results:
        table.add_row(r["format"], f"{r['write_s']:.3f}", f"{r['mb']:.0f}",
                      f"{r['read_all_s']:.3f}", f"{r['read_128_rows_s']:.4f}")
    Console().print(table)
    OUT.write_text(json.dumps({"images": n, "image_shape": list(shape), "results": results},
                              indent=2) + "\n")


if __name__ == "__main__":
    main()
