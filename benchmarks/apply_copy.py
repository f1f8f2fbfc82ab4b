"""What `dupes apply` costs now that the corrected copy holds copies, not hardlinks of the
dataset's files (so editing the copy can never edit the source).

    .venv/bin/python benchmarks/apply_copy.py [--files 20000] [--kb 4 64]

Builds a dataset of FILES files of each size in KB (random bytes: incompressible, as JPEGs
are) in 10 class folders, then times `apply_manifest` with a manifest that relabels 1% of
the files: as copies (the default: a reflink where the file system has them, else a byte
copy) and as hardlinks (`--hardlink`). Reports how each file was placed, files/s and MB/s.
The page cache is warm (the dataset was just written): a cold dataset on a network mount
reads slower. Prints a table and writes benchmarks/results/apply_copy.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from orchestrator.review import copies as review_files
from orchestrator.review.apply import apply_manifest

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "apply_copy.json"


def make_dataset(root: Path, files: int, kb: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(files):
        cls = f"c{i % 10}"
        (root / cls).mkdir(parents=True, exist_ok=True)
        data = rng.integers(0, 256, kb * 1024, np.uint8).tobytes()
        rel = f"{cls}/img{i:06d}.jpg"
        (root / rel).write_bytes(data)
        if i % 100 == 0:  # 1% relabelled to the next class
            rows.append((i, rel, hashlib.sha1(data).hexdigest(), cls, f"c{(i + 1) % 10}",
                         "relabel"))
    return pd.DataFrame(rows, columns=["sample_id", "relpath", "sha1", "old_label",
                                       "new_label", "action"])


def timed_apply(manifest: Path, data: Path, out: Path, hardlink: bool) -> tuple[float, dict]:
    how = Counter()
    real = review_files.copy_file

    def counting(src, dst, **kw):
        kind = real(src, dst, **kw)
        how[kind] += 1
        return kind

    review_files.copy_file = counting
    try:
        t = time.perf_counter()
        apply_manifest(manifest, data, out, hardlink=hardlink)
        return time.perf_counter() - t, dict(how)
    finally:
        review_files.copy_file = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--kb", type=int, nargs="+", default=[4, 64])
    args = ap.parse_args()
    results = []
    for kb in args.kb:
        tmp = Path(tempfile.mkdtemp(prefix="apply-copy-"))
        try:
            data = tmp / "data"
            make_dataset(data, args.files, kb).to_csv(tmp / "manifest.csv", index=False)
            for mode, hardlink in (("copy (default)", False), ("--hardlink", True)):
                seconds, how = timed_apply(tmp / "manifest.csv", data, tmp / f"out-{hardlink}",
                                           hardlink)
                mb = args.files * kb / 1024
                results.append({"files": args.files, "kb_per_file": kb, "mode": mode,
                                "placed_as": how, "seconds": round(seconds, 2),
                                "files_per_s": round(args.files / seconds),
                                "mb_per_s": round(mb / seconds, 1)})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title=f"dupes apply: {args.files:,} files, 1% relabelled")
    for col in ("KB/file", "mode", "placed as", "seconds", "files/s", "MB/s"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(str(r["kb_per_file"]), r["mode"],
                      ", ".join(f"{k} {v:,}" for k, v in r["placed_as"].items()),
                      f"{r['seconds']:.2f}", f"{r['files_per_s']:,}", f"{r['mb_per_s']:.1f}")
    Console().print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"benchmark": "apply_copy", "results": results}, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
