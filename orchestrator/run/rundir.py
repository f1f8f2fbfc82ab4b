"""The run directory: every durable file is written to a temp name and renamed into place,
so an interrupted run leaves either the old file or the new one, never half of one."""
from __future__ import annotations

import csv
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


# The run's files that have a name of their own (the partitions, trainings/ and cache/ are
# folders); `Run` has one accessor for each, `Run.path_of` names them in messages.
RUN_FILES = frozenset({
    "config.json", "classes.json", "index.parquet", "placement.parquet", "splits.parquet",
    "skipped.csv", "plan.json", "sanity.json", "progress.json", "failures.json",
    "summary.json", "votes.parquet", "dupes.parquet", "dupes.csv", "report.html"})



def shard_name(k: int) -> str:
    """The image cache's shard k (in `cache/`)."""
    return f"shard-{k:05d}.npy"


def meta_name(k: int) -> str:
    """The outcome of shard k's files, written after the shard: its presence says it is whole."""
    return f"shard-{k:05d}.json"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def _atomic(path: Path, write) -> None:
    """`write(tmp)` then rename into place; a write that fails (a full disk, Ctrl-C) leaves
    neither a half file nor its temp behind."""
    tmp = _tmp(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n"))


def _jsonable(o):
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    _atomic(path, lambda tmp: pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp))


def csv_text(df: pd.DataFrame) -> str:
    """A table as CSV that reads back as it was. A carriage return in a file name is legal on
    Linux, and the csv module quotes only the line terminator ("\\n"), so a bare "\\r" would
    split the row on reading: then every text field is quoted."""
    text = [c for c in df.columns if pd.api.types.is_string_dtype(df[c])
            or df[c].dtype == object]
    risky = any(df[c].astype(str).str.contains("\r", regex=False).any() for c in text)
    return df.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC if risky else csv.QUOTE_MINIMAL)


def write_csv(path: Path, df: pd.DataFrame) -> None:
    _atomic(path, lambda tmp: tmp.write_text(csv_text(df)))


def write_png(path: Path, image) -> None:
    """A PIL image as PNG."""
    _atomic(path, lambda tmp: image.save(tmp, format="PNG"))


def write_npy(path: Path, arr: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, arr)
    _atomic(path, write)
