"""The end of a pass: what it did (`Summary`, summary.json) and failures.json, with the
failed trainings named and the fix."""
from __future__ import annotations

from rich.console import Console

from analysis.quality import quality_warnings
from analysis.run_analysis import Analysis
from orchestrator.data.prepare import Prepared
from orchestrator.pipeline.driver import PassOutcome
from orchestrator.run.directory import Run
from orchestrator.run.records import Summary, all_trainings, last_line


def summarise(run: Run, prep: Prepared, analysis: Analysis, seconds: dict,
              outcome: PassOutcome, console: Console, *, timings: dict,
              wall_s: float) -> Summary:
    """The pass's summary; writes failures.json and names failed trainings with the fix."""
    planned = all_trainings(run.config().repeats)
    completed = run.completed()
    failure_rows = outcome.failure_rows()
    run.save_failures(failure_rows)
    summary = Summary(
        data_dir=str(run.config().data_dir), run_dir=run.location,
        n_samples=int(len(prep.index)), n_classes=len(prep.classes),
        n_trainings=len(completed), n_trainings_planned=len(planned),
        n_trainings_failed=len(failure_rows),
        n_prediction_rows=int(analysis.n_prediction_rows),
        n_dupes=int(len(analysis.dupes)), threshold=analysis.set_name,
        dupes_per_threshold=analysis.per_threshold,
        quality_warnings=quality_warnings(analysis),
        heldout_accuracy_mean=float(analysis.accuracy["accuracy"].mean()),
        compute_s=float(sum(seconds.values())), slots=int(outcome.slots.slots),
        timings={**prep.timings, **outcome.timings, **timings}, wall_s=wall_s,
        extra={"dropped_for_budget": [list(i) for i in outcome.dropped]}
        if outcome.dropped else {})
    if outcome.dropped:
        console.print(f"[yellow]{len(outcome.dropped)} training(s) were left out to keep the "
                      f"budget[/]; the analysis uses the {len(completed)} that finished; "
                      f"`dupes run --resume {run}` trains the rest.", highlight=False)
    if failure_rows:
        missing = [i for i in planned if i not in completed]
        console.print(f"[red]{len(failure_rows)} training(s) failed[/] (see "
                      f"{run.path_of('failures.json')}); {len(missing)} of {len(planned)} have "
                      f"no predictions. The analysis above uses the {len(completed)} that "
                      f"finished; `dupes run --resume {run}` retrains only the missing ones.")
        for row in failure_rows[:3]:
            console.print(f"  r{row['repeat']} f{row['fold']}: {last_line(row['error'], 300)}",
                          highlight=False)
    return summary
