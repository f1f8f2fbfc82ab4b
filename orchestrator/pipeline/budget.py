"""A budget is a promise: the pass re-estimates its end from the trainings that finished and,
when the budget will be missed, says so at once and drops whole repeats it cannot afford.

The plan's estimate comes from a probe taken before the trainings; a machine that gets busier
(a second job, another user) makes every training slower than planned. A new user's
`--budget 25m` took 58 minutes without a word on a machine with a load average of 16-36.
Dropped repeats are not lost: `dupes run --resume RUN` trains them later.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from orchestrator.pipeline.progress import eta_seconds
from orchestrator.run.records import FINISHED, Item, Status, TrainingState
from analysis.report import format_duration

POLICIES = ("shrink", "warn")
SLACK = 0.10  # a pass may end this share of its budget late before anything is dropped
CHECK_S = 10.0  # re-estimate this often (a training's progress is read off its epochs)
# no pace measured this long after the launch (a loaded machine starts its workers slowly:
# 3.5 minutes under a CPU burner, BENCHMARKS.md): judge the rest by the plan's pace
SLOW_START_S = 30.0
WAITING = (Status.PENDING, Status.RETRYING)  # not started (again): a repeat of these can go


@dataclass
class BudgetWatch:
    """Watches one pass's trainings against `deadline` (a `time.perf_counter()` instant)."""

    budget_s: float
    deadline: float
    slots: int
    planned_s: float | None
    policy: str = "shrink"
    checked: float | None = None           # when the last re-estimate was made
    said: bool = False                     # the overrun was announced
    said_in_flight: bool = False           # ... and that the trainings in progress overrun
    dropped: list[Item] = field(default_factory=list)
    late_checks: int = 0                   # re-estimates in a row that said "late"
    measured: float | None = None          # the last pace measured (not the plan's)
    first: float | None = None             # when the watch was first asked (the launch)
    seen: dict = field(default_factory=dict)  # running training -> (epoch, wall) last seen

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"unknown budget policy {self.policy!r}: valid choices are "
                             f"{list(POLICIES)}")

    def check(self, items: list[Item], progress: dict[Item, TrainingState], now: float,
              wall_now: float | None = None) -> tuple[str | None, list[Item]]:
        """Every CHECK_S, once a training finished or moved on an epoch since the last: a
        message when the trainings left would end past the budget (+SLACK), and the pending
        trainings to drop (whole repeats, the last first) so that the rest ends by the
        deadline (`shrink`); (None, []) otherwise. `now` is on the deadline's clock,
        `wall_now` on the trainings' start times' (time.time())."""
        if self.checked is not None and now - self.checked < CHECK_S:
            return None, []
        self.first = self.first if self.first is not None else now
        live = [i for i in items if i not in self.dropped]
        per = self._pace(live, progress, wall_now)
        planned = per is None
        if planned and now - self.first >= SLOW_START_S and self.planned_s:
            per = self.planned_s  # the workers are slow to start: judge by the plan's pace
        if per is None:
            return None, []
        self.checked = now
        left_s = eta_seconds(live, progress, slots=self.slots, planned_s=per) or 0.0
        late_s = now + left_s - self.deadline
        if late_s <= SLACK * self.budget_s:
            self.late_checks = 0
            return None, []
        self.late_checks += 1
        if self.late_checks < 2:  # late twice in a row: a dropped repeat is not given back
            return None, []
        if planned:
            pace = (f"no training has made progress {now - self.first:.0f} s after the launch "
                    f"(workers start slowly on a loaded machine{_load_note()})")
        else:
            pace = (f"the trainings take {per:.0f} s each here" +
                    (f" (the plan said {self.planned_s:.0f} s" + _load_note() + ")"
                     if self.planned_s else ""))
        if self.policy == "warn":
            if self.said:
                return None, []
            self.said = True
            return (f"budget: {pace}; the pass will end about {format_duration(late_s)} past "
                    f"its budget of {format_duration(self.budget_s)} (--over-budget warn: it "
                    "goes on; Ctrl-C stops it after the epoch in progress, `dupes run "
                    "--resume` goes on later)"), []
        drop = self._affordable_cut(live, progress, now, per)
        if not drop:
            if self.said_in_flight:
                return None, []
            self.said_in_flight = True
            return (f"budget: {pace}; the trainings in progress alone end about "
                    f"{format_duration(late_s)} past the budget of "
                    f"{format_duration(self.budget_s)}. Ctrl-C stops them at their next epoch "
                    "(`dupes run --resume` trains them again), or let them finish"), []
        self.dropped += drop
        repeats = sorted({r for r, _ in drop})
        return (f"budget: {pace}; all {len(live)} trainings would end about "
                f"{format_duration(late_s)} past the budget of {format_duration(self.budget_s)}"
                f". Dropping repeat(s) {_ranges(repeats)} ({len(drop)} trainings) to end "
                f"within it; `dupes run --resume RUN` trains them later (--over-budget warn "
                "keeps them)"), drop

    def _affordable_cut(self, live: list[Item], progress: dict, now: float, per: float
                        ) -> list[Item]:
        pending = [i for i in live if progress.get(i, TrainingState()).status in WAITING]
        by_repeat: dict[int, list[Item]] = {}
        for item in pending:
            by_repeat.setdefault(item[0], []).append(item)
        keep, drop = list(live), []
        for repeat in sorted(by_repeat, reverse=True):  # a repeat half-started is kept whole
            if any(i[0] == repeat and progress.get(i, TrainingState()).status not in WAITING
                   for i in live):
                continue
            # aim at the deadline itself: the slack is left for the analysis and the reports
            left = eta_seconds(keep, progress, slots=self.slots, planned_s=per)
            if now + (left or 0.0) <= self.deadline:
                break
            drop += by_repeat[repeat]
            keep = [i for i in keep if i[0] != repeat]
        return sorted(drop)

    def _pace(self, items: list[Item], progress: dict, wall_now: float | None
              ) -> float | None:
        """Seconds a training takes here: the mean wall of the finished ones, else the
        running ones' seconds per epoch between two re-estimates times their epochs (not
        since they started: the first epoch pays for loading and warm-up, which made a quiet
        machine look 2x slower); the last measured pace when nothing new was seen; None
        before anything was."""
        done = [p.seconds for i in items if (p := progress.get(i)) is not None
                and p.status in FINISHED and p.seconds]
        paces = []
        for i in items:
            p = progress.get(i)
            if p is None or p.status != Status.RUNNING or not p.epoch or not p.epochs \
                    or wall_now is None:
                continue
            seen = self.seen.get(i)
            if seen is not None and p.epoch > seen[0]:
                paces.append((wall_now - seen[1]) / (p.epoch - seen[0]) * p.epochs)
            if seen is None or p.epoch > seen[0]:
                self.seen[i] = (p.epoch, wall_now)
        if done:
            self.measured = sum(done) / len(done)
        elif paces:
            self.measured = sum(paces) / len(paces)
        return self.measured


def _load_note() -> str:
    try:
        return f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    except OSError:
        return ""


def _ranges(values: list[int]) -> str:
    if not values:
        return ""
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}" \
        if values == list(range(values[0], values[-1] + 1)) else ", ".join(map(str, values))
