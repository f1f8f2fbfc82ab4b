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


@dataclass
class BudgetWatch:
    """Watches one pass's trainings against `deadline` (a `time.perf_counter()` instant)."""

    budget_s: float
    deadline: float
    slots: int
    planned_s: float | None
    policy: str = "shrink"
    checked: int = 0                       # finished trainings at the last re-estimate
    said: bool = False                     # the overrun was announced
    dropped: list[Item] = field(default_factory=list)

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"unknown budget policy {self.policy!r}: valid choices are "
                             f"{list(POLICIES)}")

    def check(self, items: list[Item], progress: dict[Item, TrainingState], now: float
              ) -> tuple[str | None, list[Item]]:
        """At every wave of `slots` finished trainings: a message when the trainings left
        would end past the budget (+SLACK), and the pending trainings to drop (whole repeats,
        the last first) so that the rest fits (`shrink`); (None, []) otherwise."""
        live = [i for i in items if i not in self.dropped]
        finished = sum(progress.get(i, TrainingState()).status == Status.DONE for i in live)
        if finished < max(1, min(self.slots, len(live))) or finished < self.checked + self.slots \
                and self.checked:
            return None, []
        self.checked = finished
        left_s = eta_seconds(live, progress, slots=self.slots, planned_s=self.planned_s) or 0.0
        late_s = now + left_s - self.deadline
        if late_s <= SLACK * self.budget_s:
            return None, []
        per = _measured_per_training(live, progress)
        pace = (f"the trainings take {per:.0f} s each here" if per else "the trainings run "
                "slower than planned") + (f" (the plan said {self.planned_s:.0f} s" +
                                          _load_note() + ")" if self.planned_s else "")
        if self.policy == "warn":
            if self.said:
                return None, []
            self.said = True
            return (f"budget: {pace}; the pass will end about {format_duration(late_s)} past "
                    f"its budget of {format_duration(self.budget_s)} (--over-budget warn: it "
                    "goes on; Ctrl-C stops it after the epoch in progress, `dupes run "
                    "--resume` goes on later)"), []
        drop = self._affordable_cut(live, progress, now)
        if not drop:
            return None, []
        self.dropped += drop
        repeats = sorted({r for r, _ in drop})
        return (f"budget: {pace}; all {len(live)} trainings would end about "
                f"{format_duration(late_s)} past the budget of {format_duration(self.budget_s)}"
                f". Dropping repeat(s) {_ranges(repeats)} ({len(drop)} trainings) to end "
                f"within it; `dupes run --resume RUN` trains them later (--over-budget warn "
                "keeps them)"), drop

    def _affordable_cut(self, live: list[Item], progress: dict, now: float) -> list[Item]:
        pending = [i for i in live if progress.get(i, TrainingState()).status
                   in (Status.PENDING, Status.RETRYING)]
        by_repeat: dict[int, list[Item]] = {}
        for item in pending:
            by_repeat.setdefault(item[0], []).append(item)
        keep, drop = list(live), []
        for repeat in sorted(by_repeat, reverse=True):  # a repeat half-started is kept whole
            if any(i[0] == repeat and progress.get(i, TrainingState()).status
                   not in (Status.PENDING, Status.RETRYING) for i in live):
                continue
            # aim at the deadline itself: the slack is left for the analysis and the reports
            left = eta_seconds(keep, progress, slots=self.slots, planned_s=self.planned_s)
            if now + (left or 0.0) <= self.deadline:
                break
            drop += by_repeat[repeat]
            keep = [i for i in keep if i[0] != repeat]
        return sorted(drop)


def _measured_per_training(items: list[Item], progress: dict) -> float | None:
    done = [p.seconds for i in items if (p := progress.get(i)) is not None
            and p.status in FINISHED and p.seconds]
    return sum(done) / len(done) if done else None


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
