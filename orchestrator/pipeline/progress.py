"""Live progress of the trainings: a rich table on a terminal, plain log lines elsewhere
(`ray job submit` logs, CI), so both a person and a log reader can follow a run."""
from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from analysis.report import format_duration
from orchestrator.run.records import FINISHED, Item, Status, TrainingState, all_trainings, \
    last_line

STATUS_STYLE = {Status.RUNNING: "yellow", Status.WRITING: "cyan", Status.DONE: "green",
                Status.FAILED: "red", Status.RETRYING: "magenta", Status.PENDING: "dim"}
PENDING = TrainingState()


def progress_table(items: list[Item], progress: dict[Item, TrainingState], *,
                   max_rows: int = 24) -> Table:
    """One row per training: status, epoch, last training loss, held-out accuracy, seconds.

    With more trainings than `max_rows`, finished ones are left out first.
    """
    table = Table(title="trainings", expand=False, header_style="bold")
    for col, just in [("repeat", "right"), ("fold", "right"), ("status", "left"),
                      ("epoch", "right"), ("train loss", "right"), ("held-out loss", "right"),
                      ("held-out acc", "right"),
                      ("seconds", "right")]:
        table.add_column(col, justify=just)
    rows = sorted(items)
    if len(rows) > max_rows:
        active = [i for i in rows if progress.get(i, PENDING).status not in
                  (Status.DONE, Status.PENDING)]
        rows = (active + [i for i in rows if i not in active])[:max_rows]
    for item in rows:
        p = progress.get(item, PENDING)
        epoch = f"{p.epoch}/{p.epochs or '?'}" if p.epoch is not None else ""
        loss = f"{p.loss:.3f}" if p.loss is not None else ""
        acc = f"{p.heldout_accuracy:.3f}" if p.heldout_accuracy is not None else ""
        h_loss = f"{p.heldout_loss:.3f}" if p.heldout_loss is not None else ""
        secs = f"{p.seconds:.1f}" if p.seconds is not None else (
            f"{time.time() - p.start:.0f}" if p.start is not None else "")
        table.add_row(str(item[0]), str(item[1]),
                      f"[{STATUS_STYLE[p.status]}]{p.status}[/]", epoch, loss, h_loss, acc,
                      secs)
    return table


def current_top(progress: dict[Item, TrainingState], k: int) -> list[tuple[float, int, Item]]:
    """The `k` largest held-out losses at the running trainings' latest recorded epoch, as
    (loss, sample_id, (repeat, fold)), largest first: the images the models currently find
    hardest to accept with their given label."""
    rows = [(loss, sid, item) for item, p in progress.items()
            if p.status == Status.RUNNING for sid, loss in p.top]
    return sorted(rows, reverse=True)[:k]


def live_top_losses(progress: dict, *, names: dict | None = None, k: int = 8) -> Table | None:
    """`current_top` as a table."""
    rows = current_top(progress, k)
    if not rows:
        return None
    table = Table(title="current top held-out losses", header_style="bold")
    for col in ("loss", "image", "training"):
        table.add_column(col, justify="right" if col == "loss" else "left")
    for loss, sid, (r, f) in rows:
        name = (names or {}).get(sid, f"#{sid}")
        table.add_row(f"{loss:.2f}", str(name), f"r{r:02d}f{f} ep {progress[(r, f)].epoch}")
    return table


def eta_seconds(items: list[tuple[int, int]], progress: dict, *, slots: int,
                planned_s: float | None) -> float | None:
    """Wall time left for the trainings: the work left (a pending training counts 1, a
    running one the share of its epochs still to do) in waves of `slots`, at the measured
    mean time of the finished trainings, or the plan's estimate until one has finished."""
    done_s = [p.seconds for i in items if (p := progress.get(i, PENDING)).status == Status.DONE
              and p.seconds]
    per = sum(done_s) / len(done_s) if done_s else planned_s
    if per is None:
        return None
    left = 0.0
    for i in items:
        p = progress.get(i, PENDING)
        if p.status in FINISHED:
            continue
        left += 1 - ((p.epoch or 0) / p.epochs if p.epochs else 0)
    return left * per / max(1, min(slots, len(items)))


class RunProgress:
    """Shows progress while trainings run; call `update(progress)` as often as you like."""

    def __init__(self, console: Console, items: list[tuple[int, int]], *,
                 names: dict | None = None, slots: int = 1, planned_s: float | None = None):
        self.console, self.items, self.names = console, sorted(items), names
        self.slots, self.planned_s = slots, planned_s
        self.live = console.is_terminal and not console.is_dumb_terminal
        self._shown: dict = {}
        self._last_line = 0.0
        self._live: Live | None = None

    def __enter__(self):
        if self.live:
            self._live = Live(self._render({}), console=self.console, refresh_per_second=4,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)

    def _render(self, progress: dict):
        done = sum(progress.get(i, PENDING).status in FINISHED for i in self.items)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(f"[bold]{done}/{len(self.items)} trainings[/]",
                    ProgressBar(total=len(self.items), completed=done, width=40),
                    self.eta_text(progress))
        top = live_top_losses(progress, names=self.names)
        return Group(bar, progress_table(self.items, progress), *([top] if top else []))

    def drop(self, items: list[tuple[int, int]]) -> None:
        """Trainings no longer part of this pass (dropped for the budget)."""
        gone = set(items)
        self.items = [i for i in self.items if i not in gone]

    def eta(self, progress: dict) -> float | None:
        return eta_seconds(self.items, progress, slots=self.slots, planned_s=self.planned_s)

    def eta_text(self, progress: dict) -> str:
        left = self.eta(progress)
        return "" if left is None else f"about {format_duration(left)} left"

    def update(self, progress: dict) -> None:
        if self._live is not None:
            self._live.update(self._render(progress))
            return
        # Plain mode: one line per status change, plus a heartbeat of running epochs.
        for item in self.items:
            p = progress.get(item, PENDING)
            status = p.status
            if status != Status.PENDING and status != self._shown.get(item):
                self._shown[item] = status
                extra = ""
                if status == Status.DONE:
                    acc = p.heldout_accuracy if p.heldout_accuracy is not None else float("nan")
                    extra = f" held-out acc {acc:.3f} in {p.seconds or 0:.1f}s"
                elif status == Status.FAILED:
                    extra = " " + last_line(p.error or "", 200)
                self.console.print(f"training r{item[0]:02d} f{item[1]} {status}{extra}",
                                   highlight=False)
        if time.time() - self._last_line > 15:
            self._last_line = time.time()
            running = [f"r{i[0]:02d}f{i[1]} ep {p.epoch}/{p.epochs or '?'} loss {p.loss or 0:.3f}"
                       for i in self.items if (p := progress.get(i, PENDING)).status ==
                       Status.RUNNING and p.epoch is not None]
            if running:
                eta = self.eta_text(progress)
                self.console.print("running: " + "; ".join(running)
                                   + (f" ({eta})" if eta else ""), highlight=False)
            top = current_top(progress, 3)
            if top:
                names = self.names or {}
                self.console.print("highest held-out loss now: " + "; ".join(
                    f"{names.get(sid, f'#{sid}')} {loss:.2f}" for loss, sid, _ in top),
                    highlight=False)


# A running driver rewrites progress.json every few seconds (a bucket run uploads it every
# 10 s): a "running" file this old means the driver is gone.
STALE_S = 120.0


def show_status(run, console: Console) -> None:
    """Where a `Run` stands, from its progress file and its committed partitions (for a
    bucket run, the markers in the bucket): works while it runs, from any machine."""
    planned = all_trainings(run.config().repeats)
    state: dict[Item, TrainingState] = {}
    saved = run.progress()
    if saved is not None:
        header, state = saved
        age = time.time() - header.get("updated_unix", time.time())
        if header.get("stopped"):
            console.print(f"[yellow]stopped:[/] {header['stopped']} at {header['updated']}. "
                          f"`dupes run --resume {run.location}` continues the run",
                          highlight=False)
        elif header["running"] and age > STALE_S:
            console.print(f"[red]no heartbeat for {age / 60:.0f} min[/] (last "
                          f"{header['updated']}): the driver stopped without finishing (killed, "
                          f"or its machine is gone). `dupes run --resume {run.location}` "
                          "continues the run", highlight=False)
        else:
            left = header.get("eta_s")
            eta = f", about {format_duration(max(0.0, left - age))} left" \
                if header["running"] and left is not None else ""
            console.print(f"progress saved {header['updated']} ({age:.0f} s ago; "
                          f"{'running' if header['running'] else 'stopped'}{eta})",
                          highlight=False)
    for item in run.completed():
        state.setdefault(item, TrainingState()).status = Status.DONE  # partitions: the truth
    done = sum(p.status == Status.DONE for p in state.values())
    failed = sum(p.status == Status.FAILED for p in state.values())
    console.print(progress_table(planned, state, max_rows=len(planned)))
    console.print(f"{done}/{len(planned)} trainings done, {failed} failed"
                  + (f"; summary in {run.location}/summary.json"
                     if run.summary() is not None else ""), highlight=False)
