"""The run's small files, one named accessor each (config.json is `Run.config`): the plan,
the sanity verdict, progress, failures, the analysis's tables and the summary. A base of
`Run`: it needs the run's `path` on this machine, its `remote` (a bucket run's mirror, or
None) and `on_upload_error`."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from orchestrator.errors import StorageError
from orchestrator.run import reading, rundir
from orchestrator.run.records import Item, Status, Summary, TrainingState

PROGRESS_UPLOAD_S = 10.0  # progress.json goes to the bucket at most this often


class RunFiles:
    path: Path
    location: str
    _t_progress: float = 0.0
    on_upload_error = None

    # -- files by name (private: callers use the named accessors) ------------------------
    def path_of(self, name: str) -> Path:
        """Where one of the run's files is on this machine, to name it in a message or hand
        it to a writer (the HTML report); `name` must be one of `rundir.RUN_FILES`."""
        if name not in rundir.RUN_FILES:
            raise ValueError(f"not a file of a run: {name!r}; one of {sorted(rundir.RUN_FILES)}")
        return self.path / name

    def _exists(self, rel: str) -> bool:
        return (self.path / rel).exists()

    def _read_json(self, rel: str):
        return rundir.read_json(self.path / rel)

    def _write_json(self, rel: str, obj, *, publish: bool = False) -> None:
        (self.path / rel).parent.mkdir(parents=True, exist_ok=True)
        rundir.write_json(self.path / rel, obj)
        if publish:
            self.publish(rel)

    def publish(self, rel: str) -> None:
        """Upload one file of a bucket run's mirror (best effort: see `on_upload_error`)."""
        if self.remote is not None:
            self._try(self.remote.upload, rel)

    def _try(self, fn, *args) -> None:
        if self.on_upload_error is None:
            fn(*args)
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - the mirror keeps everything; push() retries
            self.on_upload_error(e)

    # -- the plan, the sanity check, progress, failures and the end --------------------------
    def save_history(self, history: dict) -> None:
        """history.json: the run's place in rounds of review (`run.history.run_round`)."""
        self._write_json("history.json", history)

    def has_history(self) -> bool:
        return self._exists("history.json")

    def history(self) -> dict:
        """The run's round (1 for a run older than rounds, or on an original dataset)."""
        return self._read_json("history.json") if self._exists("history.json") else {"round": 1}

    def save_plan(self, plan: dict) -> None:
        self._write_json("plan.json", plan, publish=True)

    def plan(self) -> dict | None:
        return self._read_json("plan.json") if self._exists("plan.json") else None

    def save_sanity(self, verdict: dict) -> None:
        self._write_json("sanity.json", verdict)

    def sanity_passed(self) -> bool:
        return self._exists("sanity.json") and bool(self._read_json("sanity.json")["ok"])

    def save_progress(self, state: dict[Item, TrainingState], *, running: bool,
                      eta_s: float | None = None, stopped: str | None = None) -> None:
        """Where every training stands, for `dupes status` on any machine that sees the run;
        `stopped` says why a driver stopped before the end (it records that on its way out)."""
        self._write_json("progress.json", {
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "updated_unix": time.time(),
            "running": running, "eta_s": eta_s, **({"stopped": stopped} if stopped else {}),
            "trainings": [{"repeat": r, "fold": f, **p.to_dict(short_error=True)}
                          for (r, f), p in sorted(state.items())]})
        if self.remote is not None and (not running or
                                        time.time() - self._t_progress > PROGRESS_UPLOAD_S):
            self._t_progress = time.time()
            self.publish("progress.json")

    def mark_started(self) -> None:
        """A driver took the run again (a resume): progress.json stops saying it stopped."""
        saved = self.progress()
        if saved is not None:
            self.save_progress(saved[1], running=True)

    def mark_stopped(self, why: str) -> None:
        """progress.json says at once that the driver stopped, and why (Ctrl-C, an error):
        `dupes status` must not show a run as running until its heartbeat goes stale."""
        try:  # best effort: the error that stopped the driver is the one to report
            saved = self.progress()
            state = saved[1] if saved else {}
            for p in state.values():  # what was in flight is lost with the driver
                if p.status not in (Status.DONE, Status.FAILED):
                    p.status = Status.PENDING
            self.save_progress(state, running=False, stopped=why)
        except Exception:  # noqa: BLE001 - a full disk, a bucket unreachable
            pass

    def progress(self) -> tuple[dict, dict[Item, TrainingState]] | None:
        """progress.json: its header (updated, running, eta_s) and every training's state."""
        if not self._exists("progress.json"):
            return None
        saved = self._read_json("progress.json")
        return saved, {(t["repeat"], t["fold"]): TrainingState.from_dict(t)
                       for t in saved["trainings"]}

    def save_failures(self, rows: list[dict]) -> None:
        self._write_json("failures.json", rows)

    def save_analysis(self, analysis) -> None:
        """The vote table and the dupes (`analysis.run_analysis.Analysis`) as Parquet and CSV."""
        reading.write_analysis(self.path, analysis)

    def dupes(self, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.path / "dupes.parquet", columns=columns)

    def analysis(self, *, ledger: Path | str | None = None, **rule: object):
        """The run analysed from its files alone (no Ray): `reading.load_analysis`."""
        return reading.load_analysis(self, ledger=ledger, **rule)

    def top_losses(self, *, k: int, per_class: bool) -> pd.DataFrame:
        return reading.load_top_losses(self, k=k, per_class=per_class)

    def save_summary(self, summary: Summary) -> None:
        """summary.json; for a bucket run, then everything the bucket still lacks (the summary
        last: its presence says the pass is over)."""
        self._write_json("summary.json", summary.to_dict())
        self.push()

    def summary(self) -> Summary | None:
        return Summary.from_dict(self._read_json("summary.json")) \
            if self._exists("summary.json") else None

    def push(self) -> None:
        """Upload whatever the bucket still lacks (`summary.json` last); nothing locally."""
        if self.remote is None:
            return
        try:
            self.remote.push()
        except Exception as e:  # noqa: BLE001 - any pyarrow/network error: say how to retry
            raise StorageError(f"uploading the run to {self.location} failed: {e}. Every "
                               f"result is in the local mirror {self.path}; "
                               f"`dupes run --resume {self.location}` uploads what is missing"
                               ) from e

