"""The ledger of images a technician confirmed as correctly labelled.

Keyed by content hash, so renaming or moving a file does not lose its confirmation, and kept
outside the dataset (by default next to the run directories) so the dataset is never touched.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator import rundir

LEDGER_NAME = "dupes-ledger.csv"
LEDGER_COLUMNS = ["sha1", "class_name", "relpath", "confirmed_at", "review"]


def default_ledger(run_dir: Path | str) -> Path:
    """`dupes-ledger.csv` beside the run directory (runs/ for runs/<name>)."""
    return Path(run_dir).resolve().parent / LEDGER_NAME


def ledger_path(run_dir: Path | str, configured: str | None = None,
                override: Path | str | None = None) -> Path:
    """The ledger a run uses: an explicit override, else the run's --ledger, else the default."""
    return Path(override or configured or default_ledger(run_dir))


def read_ledger(path: Path | str | None) -> pd.DataFrame:
    if path is None or not Path(path).exists():
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = sorted(set(LEDGER_COLUMNS) - set(df.columns))
    if missing:
        raise ValueError(f"{path} is not a dupes ledger (columns {missing} are missing); "
                         "pass --ledger with the right file or move this one away")
    return df[LEDGER_COLUMNS]


def add_confirmed(path: Path, confirmed: pd.DataFrame, review: str) -> int:
    """Record (sha1, class_name, relpath) rows as confirmed; returns how many are new."""
    ledger = read_ledger(path)
    new = confirmed[["sha1", "class_name", "relpath"]].copy()
    new["confirmed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    new["review"] = str(review)
    known = set(zip(ledger["sha1"], ledger["class_name"]))
    new = new[[(s, c) not in known for s, c in zip(new["sha1"], new["class_name"])]]
    if len(new):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        rundir.write_csv(Path(path), pd.concat([ledger, new[LEDGER_COLUMNS]], ignore_index=True))
    return len(new)


def confirmed_mask(sha1: np.ndarray, class_name: np.ndarray, ledger: pd.DataFrame) -> np.ndarray:
    """True where an image (by content) was confirmed with the label it has now."""
    known = set(zip(ledger["sha1"], ledger["class_name"]))
    return np.fromiter(((s, c) in known for s, c in zip(sha1, class_name)), dtype=bool,
                       count=len(sha1))
