"""The run's partitions: every training's held-out predictions (and per-epoch records) as a
Hive-partitioned Parquet folder `KIND/repeat=R/fold=F/`, written into a temp folder and renamed
into place (the commit), checked against the split before a resume trusts it, and read back
as one table or streamed."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from analysis.confident import flags_by_training
from analysis.probs import ProbSums, probs_matrix

PREDICTIONS = "predictions"
EPOCHS = "epochs"  # per-epoch held-out metrics, partitioned like the predictions
PARTITION_KINDS = (PREDICTIONS, EPOCHS)
TRAININGS = "trainings"
READAHEAD_BATCHES = 4
PARTITIONING = pads.partitioning(pa.schema([("repeat", pa.int16()), ("fold", pa.int8())]),
                                 flavor="hive")


def partition_rel(kind: str, repeat: int, fold: int) -> str:
    """The one place the partition layout is spelled: `KIND/repeat=R/fold=F`."""
    return f"{kind}/repeat={repeat}/fold={fold}"


def parse_partition(rel: str) -> tuple[str, int, int] | None:
    """(kind, repeat, fold) of a partition folder `KIND/repeat=R/fold=F`, else None."""
    parts = rel.split("/")
    if len(parts) != 3 or parts[0] not in PARTITION_KINDS:
        return None
    try:
        (kr, r), (kf, f) = parts[1].split("="), parts[2].split("=")
        return (parts[0], int(r), int(f)) if (kr, kf) == ("repeat", "fold") else None
    except ValueError:
        return None


def training_rel(repeat: int, fold: int) -> str:
    """Where one training's metrics live."""
    return f"{TRAININGS}/r{repeat:02d}_f{fold}.json"


def partition_dir(run_dir: Path, repeat: int, fold: int, *, kind: str = PREDICTIONS) -> Path:
    return Path(run_dir) / partition_rel(kind, repeat, fold)


def completed_trainings(run_dir: Path, *, kind: str = PREDICTIONS) -> set[tuple[int, int]]:
    """(repeat, fold) of every training whose prediction partition is in place.

    A partition only appears by an atomic rename after all its files were written, so its
    existence alone means the training is done.
    """
    root = Path(run_dir) / kind
    if not root.is_dir():
        return set()
    found = (parse_partition(f"{kind}/{d.parent.name}/{d.name}") for d in root.glob("*/*"))
    return {(p[1], p[2]) for p in found if p is not None}


class DamagedPartition(ValueError):
    """A committed partition cannot be read (a file truncated or deleted after the fact)."""


def partition_problem(run_dir: Path, repeat: int, fold: int, expected: np.ndarray, *,
                      kind: str = PREDICTIONS) -> str | None:
    """Why a committed partition is not a complete training's output, or None if it is: it
    must be readable and hold exactly the sample ids `expected` (sorted) of its split."""
    part = partition_dir(run_dir, repeat, fold, kind=kind)
    try:
        ids = pads.dataset(part, format="parquet", exclude_invalid_files=False,
                           ignore_prefixes=[".", "_"]).to_table(
            columns=["sample_id"]).column("sample_id").to_numpy()
    except (pa.ArrowException, OSError) as e:
        return f"unreadable ({str(e).splitlines()[0][:200]})"
    if kind == EPOCHS:
        ids = np.unique(ids)
    if len(ids) != len(expected):
        return f"{len(ids):,} rows where its split holds {len(expected):,} images"
    if not np.array_equal(np.sort(ids), expected):
        return "its images are not those of its split"
    return None


def clear_partial_writes(run_dir: Path) -> int:
    """Remove what an interrupted write left behind; returns how many.

    That is temp folders, and epoch partitions of trainings without predictions: those are
    committed first, so a crash in between leaves one that the retrained run replaces.
    """
    stale = []
    for kind in (PREDICTIONS, EPOCHS):
        root = Path(run_dir) / kind
        stale += list(root.glob(".tmp-*")) if root.is_dir() else []
    done = completed_trainings(run_dir)
    for r, f in completed_trainings(run_dir, kind=EPOCHS) - done:
        stale.append(partition_dir(run_dir, r, f, kind=EPOCHS))
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def commit_partition(tmp_dir: Path, run_dir: Path, repeat: int, fold: int, *,
                     kind: str = PREDICTIONS) -> bool:
    """Rename a fully written temp folder into its partition; False if it was already there."""
    final = partition_dir(run_dir, repeat, fold, kind=kind)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp_dir, final)
    except OSError:
        if final.exists():  # written by an earlier attempt: keep that one
            shutil.rmtree(tmp_dir, ignore_errors=True)
            return False
        raise
    return True


def read_predictions(run_dir: Path, columns: list[str] | None = None) -> pa.Table:
    """All held-out predictions of a run as one table, with typed `repeat` and `fold`."""
    root = Path(run_dir) / PREDICTIONS
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist: no training of this run has finished")
    with _damaged(run_dir):
        dataset = pads.dataset(root, format="parquet", partitioning=PARTITIONING,
                               exclude_invalid_files=False, ignore_prefixes=[".", "_"])
        return dataset.to_table(columns=columns)


@contextlib.contextmanager
def _damaged(run_dir: Path):
    """Turns a prediction file that cannot be read into an error that says the fix."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as e:
        raise DamagedPartition(
            f"a prediction file of {run_dir} cannot be read ({str(e).splitlines()[0]}): "
            f"`dupes run --resume {run_dir}` checks every partition and retrains the damaged "
            "ones") from None


def read_prediction_columns(run_dir: Path, *, batch_rows: int = 1 << 18,
                            mean_probs: bool = False, thresholds: dict | None = None
                            ) -> dict[str, np.ndarray]:
    """The held-out predictions as flat arrays, streamed batch by batch.

    Only the probability of the *given* label is kept from each `probs` vector, so memory
    grows with rows, not rows x classes (10M rows x 100 classes would be 4 GB of probs).
    With `mean_probs`, "mean_probs" is also returned: per sample, the mean of its held-out
    probability vectors (samples x classes; NaN rows for samples never predicted), summed
    batch by batch, which is what cleanlab-style scores take. With `thresholds` (per
    training, as `analysis.confident` takes them) "confident" says of each row whether
    confident learning flags it against its training's thresholds; absent when a training
    has none.
    """
    root = Path(run_dir) / PREDICTIONS
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist: no training of this run has finished")
    with _damaged(run_dir):
        return _read_prediction_columns(root, batch_rows, mean_probs, thresholds)


def _read_prediction_columns(root: Path, batch_rows: int, mean_probs: bool,
                             thresholds: dict | None) -> dict:
    dataset = pads.dataset(root, format="parquet", partitioning=PARTITIONING,
                           exclude_invalid_files=False, ignore_prefixes=[".", "_"])
    names = ["sample_id", "repeat", "fold", "label", "pred", "loss"]
    parts: dict[str, list] = {n: [] for n in names + ["prob_given"]}
    if thresholds:
        parts["confident"] = []
    sums = ProbSums()
    # Read-ahead bounded to a few batches: pyarrow's default (16 batches, 4 files) holds
    # ~1.7 GB of decoded probabilities at 100 classes, while decoding stays ahead of the
    # per-batch work at 2 batches all the same (measured: benchmarks/analysis_scale.py).
    for batch in dataset.to_batches(columns=names + ["probs"], batch_size=batch_rows,
                                    batch_readahead=READAHEAD_BATCHES, fragment_readahead=2):
        for n in names:
            parts[n].append(batch.column(n).to_numpy())
        flat = probs_matrix(batch.column("probs"))
        label = parts["label"][-1].astype(np.int64)
        parts["prob_given"].append(flat[np.arange(len(label)), label])
        if mean_probs:
            sums.add(parts["sample_id"][-1], flat)
        if "confident" in parts:
            flags = flags_by_training(label, flat, parts["repeat"][-1], parts["fold"][-1],
                                      thresholds)
            if flags is None:  # a training recorded without them: none for the run
                del parts["confident"]
            else:
                parts["confident"].append(flags)
    out = {n: (np.concatenate(v) if v else np.array([])) for n, v in parts.items()}
    if mean_probs:
        out["mean_probs"] = sums.mean()
    return out


def epoch_batches(run_dir: Path, *, columns: list[str] | None = None):
    """Per-epoch held-out metrics of the finished trainings, one training at a time (so
    memory holds one training's rows), or None if the run recorded none. Partitions of
    trainings without predictions (left by a crash) are skipped."""
    root = Path(run_dir) / EPOCHS
    done = completed_trainings(run_dir)
    recorded = sorted(done & completed_trainings(run_dir, kind=EPOCHS))
    if not root.is_dir() or not recorded:
        return None

    def batches():
        for r, f in recorded:
            part = partition_dir(run_dir, r, f, kind=EPOCHS)
            table = pads.dataset(part, format="parquet", exclude_invalid_files=False,
                                 ignore_prefixes=[".", "_"]).to_table(columns=columns)
            yield (r, f), table
    return batches()


def read_epochs(run_dir: Path, *, columns: list[str] | None = None) -> pa.Table | None:
    """Per-epoch held-out metrics of the finished trainings as one table, with typed
    `repeat` and `fold`, or None if none were recorded."""
    batches = epoch_batches(run_dir, columns=columns)
    if batches is None:
        return None
    return pa.concat_tables(
        table.append_column("repeat", pa.array(np.full(len(table), r), pa.int16()))
             .append_column("fold", pa.array(np.full(len(table), f), pa.int8()))
        for (r, f), table in batches)


def incomplete(run_dir: Path, splits, done: set[tuple[int, int]]
               ) -> list[tuple[tuple[int, int], str]]:
    """The committed trainings of `done` whose partitions do not hold exactly their split's
    held-out samples, readable (and their per-epoch records, where recorded), with why."""
    key = splits["repeat"].to_numpy().astype(np.int64) * 2 + splits["fold"].to_numpy()
    order = np.lexsort((splits["sample_id"].to_numpy(), key))
    ids, key = splits["sample_id"].to_numpy()[order], key[order]
    found = []
    recorded = completed_trainings(run_dir, kind=EPOCHS)
    for r, f in sorted(done):
        lo, hi = np.searchsorted(key, [r * 2 + f, r * 2 + f + 1])
        expected = ids[lo:hi]
        why = partition_problem(run_dir, r, f, expected)
        if why is None and (r, f) in recorded:
            why = partition_problem(run_dir, r, f, expected, kind=EPOCHS)
            why = why and f"its per-epoch records: {why}"
        if why is not None:
            found.append(((r, f), why))
    return found
