"""The Ray driver of a dupes pass: launch the trainings, then collect them.

Launch cost is paid once: a single Ray Train run with one worker per slot, whose workers take
(repeat, fold) trainings from a board actor. The driver consumes finished trainings in
completion order and streams each one's held-out predictions into Parquet with Ray Data; the
progress file and the live contact sheet are periodic jobs of that loop.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import ray
import ray.data
from ray.train import FailureConfig, RunConfig as TrainRunConfig, ScalingConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
from rich.console import Console

from orchestrator.config import RunConfig
from orchestrator.data.prepare import Prepared
from orchestrator.pipeline.board import Board
from orchestrator.pipeline.budget import BudgetWatch
from orchestrator.pipeline.cluster import Slots, on_this_node
from orchestrator.pipeline.progress import RunProgress
from orchestrator.pipeline.worker import WorkerConfig, worker_loop
from orchestrator.run.directory import Run
from orchestrator.run.records import Item, Status
from orchestrator.visual import LIVE_SHEET_S, live_sheet

BOARD_NAMESPACE = "dupes"  # the board is named there, so a cluster's tools can find it
NO_RESIZE_S = 7 * 24 * 3600.0  # grow the worker group only when it restarts anyway
POLL_S = 0.25
STOP_WAIT_S = 120.0  # how long an early exit waits for the trainings to reach an epoch end


@dataclass
class Every:
    """A periodic job of the collect loop: `job()` runs once `seconds` have passed since it
    last ran, and once more at the end if `at_end`. A job that raises is reported by `warn`
    and never stops the trainings."""

    seconds: float
    job: Callable[[bool], None]          # called with running=True while trainings run
    at_end: bool = True
    last: float = field(default=0.0)

    def __call__(self, *, running: bool, warn: Callable[[str], None]) -> None:
        if running and time.time() - self.last < self.seconds:
            return
        if not running and not self.at_end:
            return
        self.last = time.time()
        try:
            self.job(running)
        except Exception as e:  # noqa: BLE001
            warn(f"{getattr(self.job, '__name__', 'job')}: {e}")


@dataclass
class Launch:
    """What the collect loop needs of a launched Ray Train run."""

    board: object
    thread: threading.Thread
    errors: list                     # the exception fit() raised, if any
    slots: Slots


@dataclass
class PassOutcome:
    """What the trainings of a pass came to (besides their committed predictions)."""

    failures: dict[Item, str] = field(default_factory=dict)  # training -> traceback
    launch_error: str | None = None  # Ray Train's run itself failed (the rest is recorded)
    slots: Slots = Slots(0, 0.0, 0.0)
    timings: dict = field(default_factory=dict)
    dropped: list[Item] = field(default_factory=list)  # left for a resume: over budget

    def failure_rows(self) -> list[dict]:
        """failures.json: one row per failed training; a failed launch as repeat -1."""
        rows = [{"repeat": r, "fold": f, "error": e} for (r, f), e in self.failures.items()]
        if self.launch_error is not None:
            rows.append({"repeat": -1, "fold": -1, "error": self.launch_error})
        return rows


def write_predictions(refs: list) -> Callable:
    """A writer of one partition: Ray Data streams the tables into the folder it is given."""
    def write(folder) -> None:        # The write runs on the driver's node: the temp folder must land on the disk where the
        # driver renames it into place (on a multi-node cluster another node has another disk).
        ray.data.from_arrow_refs(refs).write_parquet(
            str(folder), ray_remote_args={"scheduling_strategy": on_this_node()})
    return write


def launch(run: Run, cfg: RunConfig, prep: Prepared, todo: list[Item], slots: Slots,
           console: Console, features: tuple | None = None) -> Launch:
    """Start one Ray Train run whose workers work through `todo` on the plan's `slots`
    (fit() in a thread)."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    n_slots, cpt, gpt = slots
    console.print(f"{len(todo)} trainings on {n_slots} slot(s) of {cpt:g} CPU"
                  + (f" + {gpt:g} GPU" if gpt else "") + " each", highlight=False)
    # The board owns every finished training's results until they are written: it lives on
    # the driver's node, sharing the driver's fate (as Ray Train's own controller does), so
    # losing another node never loses finished trainings.
    board = Board.options(scheduling_strategy=on_this_node(), namespace=BOARD_NAMESPACE,
                          name=f"board-{uuid.uuid4().hex[:8]}").remote(todo)
    # The workers read the image cache themselves (from the run's folder, or a node-local copy
    # of a bucket's shards): the driver never holds the pixels.
    worker = WorkerConfig(
        board=board, images=run.images(local=False), store=run.shard_store(),
        folds=[ray.put(prep.folds)], labels=prep.index["label"].to_numpy(), hyp=cfg.hyp,
        train_seed=cfg.train_seed, threads=max(1, int(cpt)), record_every=cfg.epoch_losses,
        data_mode=cfg.data_mode, device_share=gpt if gpt else 0.0,
        inject_failure=os.environ.get("DUPES_INJECT_FAILURE"), num_classes=len(prep.classes),
        **({"feature_store": features[0], "features": features[1]} if features else {}))
    resources = {"CPU": cpt, **({"GPU": gpt} if gpt else {}), **cfg.resources_per_training}
    trainer = DataParallelTrainer(
        worker_loop, train_loop_config={"worker": worker},
        # Elastic: after a lost node the group restarts on what is left (down to one slot)
        # instead of waiting for a replacement; the board requeues what was lost. It is not
        # grown mid-pass (a resize restarts every training in flight).
        scaling_config=ScalingConfig(num_workers=(1, n_slots) if n_slots > 1 else 1,
                                     use_gpu=gpt > 0, resources_per_worker=resources,
                                     elastic_resize_monitor_interval_s=NO_RESIZE_S),
        # A fresh name per attempt: a reused name would make Ray Train restore the old run;
        # resuming is ours, from the prediction partitions already committed.
        run_config=TrainRunConfig(
            name=f"pass-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
            **run.train_storage(),
            failure_config=FailureConfig(max_failures=cfg.max_failures)))
    errors: list[BaseException] = []

    def fit():
        try:
            trainer.fit()
        except BaseException as e:  # recorded; the analysis runs on what finished
            errors.append(e)

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    return Launch(board, thread, errors, slots)


def collect(run: Run, launched: Launch, prep: Prepared, todo: list[Item],
            console: Console, planned_s: float | None = None,
            budget: BudgetWatch | None = None) -> tuple[dict[Item, str], dict]:
    """Write each finished training as it comes, until the Ray Train run ends; returns the
    failures and the launch/teardown timings. `budget` re-estimates the end as the
    trainings go and drops the repeats it cannot afford."""
    board, failures, state = launched.board, {}, {}
    t_fit, t_first, t_last = time.perf_counter(), None, None
    warned: set[str] = set()

    def warn(text: str) -> None:
        if text.split(":")[0] not in warned:
            warned.add(text.split(":")[0])
            console.print(f"[yellow]warning:[/] {text}", highlight=False)

    def uploads_failed(e: Exception) -> None:
        warn(f"upload to {run} failed: {e}; the local mirror {run.path} keeps every result, "
             "the end of the pass uploads them again")

    def progress_file(running: bool) -> None:  # for `dupes status RUN`
        run.save_progress(state, running=running, eta_s=progress.eta(state))

    def sheet(running: bool) -> None:
        live_sheet(run.path, state, prep)

    run.on_upload_error = uploads_failed
    jobs = [Every(2.0, progress_file), Every(LIVE_SHEET_S, sheet, at_end=False)]
    names = dict(zip(prep.index["sample_id"].tolist(), prep.index["relpath"].tolist()))
    try:
        with RunProgress(console, todo, names=names, slots=launched.slots.slots,
                         planned_s=planned_s) as progress:
            while True:
                running = launched.thread.is_alive()
                state, results, failed = ray.get(board.poll.remote())
                if t_first is None and any(p.status != Status.PENDING for p in state.values()):
                    t_first = time.perf_counter()
                for item, refs, metrics, epoch_refs in results:
                    run.write_training(item, metrics, write_predictions(refs),
                                       write_predictions(epoch_refs) if epoch_refs else None)
                    ray.get(board.written.remote(item))
                    state[item].status = Status.DONE
                    t_last = time.perf_counter()
                for item, error in failed:
                    failures[item] = error
                    t_last = time.perf_counter()
                if budget is not None:
                    note, drop = budget.check(todo, state, time.perf_counter(), time.time())
                    if note:
                        console.print(f"[yellow]{note}[/]", highlight=False)
                    if drop:
                        ray.get(board.drop.remote(drop))
                        progress.drop(drop)
                        gone = set(drop)
                        state = {i: p for i, p in state.items() if i not in gone}
                progress.update(state)
                for job in jobs:
                    job(running=running, warn=warn)
                if not running:
                    break
                time.sleep(POLL_S)
    except BaseException:
        stop_trainings(launched, console)
        raise
    run.on_upload_error = None
    t_end = time.perf_counter()
    timings = {"trainings_s": t_end - t_fit, "train_launch_s": (t_first or t_end) - t_fit,
               "train_teardown_s": t_end - (t_last or t_end)}
    return failures, timings


def stop_trainings(launched: Launch, console: Console, *, wait_s: float = STOP_WAIT_S) -> None:
    """End the Ray Train run before an error (a full disk, Ctrl-C) leaves the pass, rather
    than stopping Ray under the thread still blocked in fit() (a suspect, not a proven cause,
    of the SIGSEGV seen twice near the disk-full tests). The trainings end at their next
    epoch; a second Ctrl-C stops waiting."""
    if not launched.thread.is_alive():
        return
    console.print("stopping: the trainings in progress end at their next epoch "
                  "(a resume trains them again)", highlight=False)
    try:
        ray.get(launched.board.stop.remote(), timeout=10)
    except Exception:  # noqa: BLE001  (a board already gone: nothing left to stop)
        return
    launched.thread.join(wait_s)


def run_trainings(run: Run, cfg: RunConfig, prep: Prepared, todo: list[Item], slots: Slots,
                  console: Console, *, planned_s: float | None = None,
                  features: tuple | None = None, deadline: float | None = None
                  ) -> PassOutcome:
    """Train every (repeat, fold) in `todo` on the connected Ray, on the plan's `slots`.
    `planned_s`, the plan's time per training, drives the ETA until one finished; with
    `deadline` (a perf_counter instant: the start plus --budget) the budget is watched."""
    launched = launch(run, cfg, prep, todo, slots, console, features)
    budget = None
    if deadline is not None and cfg.budget:
        budget = BudgetWatch(cfg.budget, deadline, slots.slots, planned_s,
                             policy=cfg.over_budget)
    failures, timings = collect(run, launched, prep, todo, console, planned_s, budget)
    error = launched.errors[0] if launched.errors else None
    return PassOutcome(failures=failures, slots=launched.slots, timings=timings,
                       launch_error=f"{type(error).__name__}: {error}" if error else None,
                       dropped=list(budget.dropped) if budget else [])
