"""A budget is a promise: re-estimates from the finished trainings, what gets dropped, and a
real pass on a machine made slower than the plan's probe."""
import json

import pytest

from orchestrator.pipeline.budget import BudgetWatch
from orchestrator.run.records import Status, TrainingState, all_trainings

ITEMS = all_trainings(10)


def states(done: int, seconds: float, running: int = 0) -> dict:
    out = {}
    for k, item in enumerate(ITEMS):
        if k < done:
            out[item] = TrainingState(Status.DONE, seconds=seconds)
        elif k < done + running:
            out[item] = TrainingState(Status.RUNNING, epoch=1, epochs=4)
        else:
            out[item] = TrainingState(Status.PENDING)
    return out


def test_trainings_three_times_slower_drop_the_last_whole_repeats():
    watch = BudgetWatch(budget_s=120, deadline=120, slots=2, planned_s=10)
    assert watch.check(ITEMS, states(2, 30.0), now=25) == (None, [])  # late once: wait
    assert watch.check(ITEMS, states(2, 30.0), now=30) == (None, [])  # 5 s later: no check
    note, drop = watch.check(ITEMS, states(2, 30.0), now=35)
    # 2 slots at 30 s: the 85 s to the deadline hold 5 more trainings: whole repeats 1-2
    assert drop == [i for i in ITEMS if i[0] >= 3], drop
    assert "repeat(s) 3-9 (14 trainings)" in note and "30 s each" in note
    assert "the plan said 10 s" in note and "--resume" in note
    # the next wave on the new pace: nothing more to drop
    assert watch.check(ITEMS, states(4, 30.0), now=65) == (None, [])


def test_on_pace_nothing_is_said_and_warn_says_it_once():
    assert BudgetWatch(120, 120, 2, 10).check(ITEMS, states(2, 10.0), now=12) == (None, [])
    warn = BudgetWatch(120, 120, 2, 10, policy="warn")
    warn.check(ITEMS, states(2, 30.0), now=25)
    note, drop = warn.check(ITEMS, states(2, 30.0), now=35)
    assert drop == [] and "past its budget of 2.0 min" in note, note
    assert warn.check(ITEMS, states(4, 30.0), now=65) == (None, [])
    with pytest.raises(ValueError, match="valid choices"):
        BudgetWatch(120, 120, 2, 10, policy="hope")


def test_a_repeat_already_started_is_never_cut():
    watch = BudgetWatch(budget_s=120, deadline=120, slots=2, planned_s=10)
    progress = states(2, 30.0)
    progress[(9, 0)] = TrainingState(Status.RUNNING, epoch=1, epochs=4)
    watch.check(ITEMS, progress, now=25)
    _, drop = watch.check(ITEMS, progress, now=35)
    assert (9, 0) not in drop and (9, 1) not in drop and drop


def test_workers_slow_to_start_are_judged_by_the_plans_pace():
    watch = BudgetWatch(budget_s=60, deadline=60, slots=2, planned_s=10)
    pending = states(0, 0.0)
    assert watch.check(ITEMS, pending, now=5) == (None, [])  # the launch: nothing to judge
    assert watch.check(ITEMS, pending, now=40) == (None, [])  # late once, at the plan's pace
    note, drop = watch.check(ITEMS, pending, now=50)
    # 50 s gone, 10 s left: one repeat of 10 s trainings on 2 slots, no more
    assert drop == [i for i in ITEMS if i[0] >= 1], drop
    assert "no training has made progress 45 s after the launch" in note, note


@pytest.mark.slow
def test_a_pass_slower_than_its_plan_keeps_its_budget(tmp_path, capsys, monkeypatch):
    """Every training 4 s slower than the plan's probe measured (as on a busier machine): the
    first re-estimate says so and drops whole repeats; the pass ends within the budget + 10%
    and a resume trains what was dropped."""
    import time

    from orchestrator.cli.main import main
    from orchestrator.run.directory import Run
    from tests.conftest import write_digit_dataset

    data = write_digit_dataset(tmp_path / "data", per_class=30)
    monkeypatch.setenv("DUPES_INJECT_FAILURE", "all:sleep4")
    t0 = time.perf_counter()
    code = main(["run", str(data), "--out", str(tmp_path / "r"), "--budget", "50s",
                 "--no-sanity", "--epochs", "2"])
    wall = time.perf_counter() - t0
    text = capsys.readouterr().out
    assert code == 0, text
    assert "budget:" in text and "Dropping repeat(s)" in text, text
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["dropped_for_budget"] and summary["n_trainings"] < 20
    assert wall <= 50 * 1.1 + 15, wall  # + the interpreter's first Ray start in this test
    monkeypatch.delenv("DUPES_INJECT_FAILURE")
    assert main(["run", "--resume", str(tmp_path / "r")]) == 0
    assert len(Run.open(tmp_path / "r").completed()) == 20


def test_the_first_trainings_epochs_tell_the_pace_before_any_finishes():
    # a wave slower than the budget itself: waiting for it to finish would be too late. The
    # pace is read between two looks (the first epoch pays for loading and warm-up)
    def running(epoch):
        progress = states(0, 0.0)
        for item in ITEMS[:2]:
            progress[item] = TrainingState(Status.RUNNING, epoch=epoch, epochs=4, start=990.0)
        return progress

    watch = BudgetWatch(budget_s=150, deadline=150, slots=2, planned_s=10)
    assert watch.check(ITEMS, running(1), now=20, wall_now=1020.0) == (None, [])  # one look
    assert watch.check(ITEMS, running(2), now=35, wall_now=1035.0) == (None, [])  # late once
    note, drop = watch.check(ITEMS, running(2), now=45, wall_now=1045.0)
    # 15 s an epoch, 60 s a training: the wave in progress ends at 75, one more repeat at
    # 135, within the 150 s; the next would end at 195
    assert drop == [i for i in ITEMS if i[0] >= 2] and "60 s each" in note, note
    assert watch.check(ITEMS, running(2), now=50, wall_now=1050.0) == (None, [])  # 5 s apart
    late = BudgetWatch(budget_s=40, deadline=40, slots=2, planned_s=10)
    late.check(ITEMS, running(1), now=20, wall_now=1020.0)
    late.check(ITEMS, running(2), now=35, wall_now=1035.0)
    _, drop = late.check(ITEMS, running(2), now=45, wall_now=1045.0)
    assert len(drop) == 18
    note, drop = late.check(ITEMS, running(2), now=55, wall_now=1055.0)
    assert drop == [] and "in progress alone" in note and "Ctrl-C" in note, note
