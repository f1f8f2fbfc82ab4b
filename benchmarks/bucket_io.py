"""What a bucket costs a run: scan from a bucket, per-training uploads, a resume's pull.

    .venv/bin/python benchmarks/bucket_io.py

Against moto's S3 server on loopback (no network here), so the figures are our code's cost
plus moto's, with ~1 ms round trips: a real bucket adds its own latency (tens of ms per
request on S3) and bandwidth, which the scan's many reads in flight are there to hide.
- scan: MNIST's 10,000 test images (../shared/data, written as PNGs; nothing committed)
  scanned from a local folder and from the bucket: images/s.
- upload of one training's results: a prediction partition (as a pass writes it) of
  5,000 rows x 10 classes (a 10k-image dataset) and 500,000 rows x 100 classes (1M images),
  plus its marker: seconds per training, against the training itself.
- pull: a fresh mirror of a 20-training run (a resume or `dupes report` on another machine).
Prints a table and writes benchmarks/results/bucket_io.json.
"""
from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BUCKET = "bench"


def partition(run: Path, repeat: int, fold: int, rows: int, classes: int) -> int:
    """A prediction partition as a pass writes it; returns its bytes."""
    from orchestrator.run import partitions
    rng = np.random.default_rng(repeat * 2 + fold)
    probs = rng.dirichlet(np.full(classes, 0.05), rows).astype(np.float32)
    label = rng.integers(0, classes, rows)
    part = partitions.partition_dir(run, repeat, fold)
    part.mkdir(parents=True)
    pq.write_table(pa.table({
        "sample_id": pa.array(np.arange(rows) * 2 + fold, pa.int64()),
        "label": pa.array(label, pa.int16()), "pred": pa.array(probs.argmax(1), pa.int16()),
        "loss": pa.array(-np.log(probs[np.arange(rows), label] + 1e-12), pa.float32()),
        "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), classes)}),
        part / "part-0.parquet")
    return (part / "part-0.parquet").stat().st_size


def main() -> None:
    from orchestrator.run import partitions, rundir
    from orchestrator.data.scan import scan_dataset
    from orchestrator.run.remote import RemoteRun
    from orchestrator.run.storage import resolve
    from benchmarks.train_speed import DATA, write_pngs
    from tests.s3server import moto_s3

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="dupes-bucket-"))
    try:
        with moto_s3(BUCKET):
            n = write_pngs(DATA, tmp / "data")
            t = time.perf_counter()
            scan_dataset(tmp / "data")
            local_s = time.perf_counter() - t
            fs, base = resolve(f"s3://{BUCKET}/data")
            t = time.perf_counter()
            pafs.copy_files(str(tmp / "data"), base, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs, use_threads=True)
            upload_s = time.perf_counter() - t
            t = time.perf_counter()
            scan = scan_dataset(f"s3://{BUCKET}/data")
            bucket_s = time.perf_counter() - t
            assert len(scan.index) == n
            rows += [{"what": "scan, local folder", "items": n, "seconds": local_s,
                      "per_s": n / local_s},
                     {"what": "upload of the dataset (pyarrow copy_files)", "items": n,
                      "seconds": upload_s, "per_s": n / upload_s},
                     {"what": "scan, bucket", "items": n, "seconds": bucket_s,
                      "per_s": n / bucket_s}]

            for samples, classes in ((10_000, 10), (1_000_000, 100)):
                run = tmp / f"run-{classes}"
                run.mkdir()
                rundir.write_json(run / "config.json", {"bench": True})
                remote = RemoteRun(f"s3://{BUCKET}/runs/{classes}", run)
                remote.upload("config.json")
                size = partition(run, 0, 0, samples // 2, classes)
                t = time.perf_counter()
                remote.push_partition("predictions", 0, 0)
                push_s = time.perf_counter() - t
                rows.append({"what": f"upload of one training's predictions "
                                     f"({samples // 2:,} rows x {classes})",
                             "items": 1, "seconds": push_s, "per_s": 1 / push_s,
                             "mb": size / 2**20})
                if classes == 10:  # a whole 20-training run, pulled by a fresh mirror
                    for r in range(10):
                        for f in (0, 1):
                            if (r, f) != (0, 0):
                                partition(run, r, f, samples // 2, classes)
                    remote.push()
                    other = RemoteRun(remote.uri, tmp / "mirror")
                    t = time.perf_counter()
                    files = other.pull()
                    pull_s = time.perf_counter() - t
                    assert partitions.read_predictions(other.local).num_rows == 10 * samples
                    rows.append({"what": "pull of a 20-training run (10k images, fresh mirror)",
                                 "items": files, "seconds": pull_s, "per_s": files / pull_s})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(title=f"bucket I/O against moto's S3 server on loopback ({platform.node()})")
    for col in ("what", "items", "seconds", "per second", "MB"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for r in rows:
        table.add_row(r["what"], f"{r['items']:,}", f"{r['seconds']:.2f}", f"{r['per_s']:,.1f}",
                      f"{r['mb']:.1f}" if "mb" in r else "")
    Console(width=160).print(table)
    out = ROOT / "benchmarks" / "results" / "bucket_io.json"
    out.write_text(json.dumps({"command": "python benchmarks/bucket_io.py",
                               "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "server": "moto (S3 API) on 127.0.0.1", "rows": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
