"""The ledger of images a technician confirmed as correctly labelled.

Keyed by content hash, so renaming or moving a file does not lose its confirmation, and kept
outside the dataset (by default next to the run directories) so the dataset is never touched.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.run import rundir, storage

LEDGER_NAME = "dupes-ledger.csv"
LEDGER_COLUMNS = ["sha1", "class_name", "relpath", "confirmed_at", "review"]


def default_ledger(run_location) -> Path | str:
    """`dupes-ledger.csv` beside the run directory (runs/ for runs/<name>); for a bucket run
    beside it in the bucket, so every machine that reviews or runs the next round shares it."""
    return storage.child(storage.parent(run_location), LEDGER_NAME)


def ledger_path(run_location, configured: str | None = None,
                override: Path | str | None = None) -> Path | str:
    """The ledger a run uses: an explicit override, else the run's --ledger, else the default."""
    where = override or configured or default_ledger(run_location)
    return storage.parse_location(str(where))


def read_ledger(path: Path | str | None) -> pd.DataFrame:
    data = storage.read_bytes(path) if path is not None else None
    if data is None:
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    missing = sorted(set(LEDGER_COLUMNS) - set(df.columns))
    if missing:
        raise ValueError(f"{path} is not a dupes ledger (columns {missing} are missing); "
                         "pass --ledger with the right file or move this one away")
    return df[LEDGER_COLUMNS]


def add_confirmed(path: Path | str, confirmed: pd.DataFrame, review: str) -> int:
    """Record (sha1, class_name, relpath) rows as confirmed; returns how many are new."""
    ledger = read_ledger(path)
    new = confirmed[["sha1", "class_name", "relpath"]].copy()
    new["confirmed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    new["review"] = str(review)
    known = set(zip(ledger["sha1"], ledger["class_name"]))
    new = new[[(s, c) not in known for s, c in zip(new["sha1"], new["class_name"])]]
    if len(new):  # replaced whole: temp + rename on disk, one PUT on a bucket
        table = pd.concat([ledger, new[LEDGER_COLUMNS]], ignore_index=True)
        storage.write_bytes(path, rundir.csv_text(table).encode())
    return len(new)


def withdraw_confirmed(path: Path | str, withdrawn: pd.DataFrame, review: str) -> int:
    """Remove (sha1, class_name) rows that `review` added (an undone confirmation in the
    browser triage); confirmations from other reviews stay. Returns how many went."""
    ledger = read_ledger(path)
    gone = set(zip(withdrawn["sha1"], withdrawn["class_name"]))
    drop = np.fromiter(((s, c) in gone and r == str(review) for s, c, r in
                        zip(ledger["sha1"], ledger["class_name"], ledger["review"])),
                       dtype=bool, count=len(ledger))
    if drop.any():
        storage.write_bytes(path, rundir.csv_text(ledger[~drop]).encode())
    return int(drop.sum())


def confirmed_mask(sha1: np.ndarray, class_name: np.ndarray, ledger: pd.DataFrame) -> np.ndarray:
    """True where an image (by content) was confirmed with the label it has now."""
    known = set(zip(ledger["sha1"], ledger["class_name"]))
    return np.fromiter(((s, c) in known for s, c in zip(sha1, class_name)), dtype=bool,
                       count=len(sha1))
