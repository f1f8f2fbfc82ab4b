"""One dupes pass, as a pipeline of stages: Ray up, the data prepared (scan into the image
cache, splits), the plan, the sanity check, the trainings, the analysis and the summary.
Each stage lives in its own module; this one only orders them and hands on their results."""
from __future__ import annotations

import time

import ray
from rich.console import Console

from analysis.report import provenance_text, report
from orchestrator.config import RunConfig
from orchestrator.data.cache import stratified_sample
from orchestrator.data.prepare import Prepared, prepare
from orchestrator.data.scan import auto_max
from orchestrator.errors import SanityError
from orchestrator.pipeline.cluster import ray_session, scan_task_options
from orchestrator.pipeline.driver import PassOutcome, run_trainings
from orchestrator.pipeline.embed import embed_pass
from orchestrator.run.embeddings import EmbedSpec, stored_features
from orchestrator.pipeline.pass_plan import make_pass_plan
from orchestrator.pipeline.rounds import place_in_rounds, previous_run, rounds_report
from orchestrator.pipeline.sanity import SANITY_SAMPLE, run_sanity
from orchestrator.pipeline.settings import aspect_for
from orchestrator.pipeline.summary import summarise
from orchestrator.run.directory import Run
from orchestrator.run.records import Summary, all_trainings
from orchestrator.visual import write_html


def run_pass(run: Run, cfg: RunConfig, console: Console, *,
             t_start: float | None = None) -> Summary:
    """Scan, split, train what is missing, analyse; returns the summary (the caller saves
    it, last, with `Run.save_summary`). One driver per run: a second is refused (RunError)
    before it writes anything; a driver stopped by Ctrl-C says so in progress.json."""
    with run.driver_lock():
        run.mark_started()
        try:
            return _run_pass(run, cfg, console, t_start=t_start)
        except KeyboardInterrupt:
            run.mark_stopped("interrupted (Ctrl-C)")
            raise
        except Exception as e:
            run.mark_stopped(f"stopped by an error: {type(e).__name__}: {e}")
            raise


def _run_pass(run: Run, cfg: RunConfig, console: Console, *,
              t_start: float | None = None) -> Summary:
    t_start = t_start or time.perf_counter()
    cfg = place_in_rounds(run, cfg, console)
    run.save_config(cfg)
    for (r, f), why in run.drop_incomplete():
        console.print(f"[yellow]training r{r:02d} f{f} is trained again:[/] its predictions are "
                      f"incomplete ({why})", highlight=False)
    stale_remote, stale_local = run.clear_partial()
    if stale_remote:
        console.print(f"removed {stale_remote} object(s) of an interrupted upload from {run}")
    with ray_session(cfg.address, run,
                     notice=lambda text: console.print(f"[yellow]note:[/] {text}",
                                                       highlight=False)) as timings:
        gpus = ray.cluster_resources().get("GPU", 0) or cfg.gpus_per_training or 0
        prep = prepare(run, cfg, console, task_options=scan_task_options(cfg.data_dir),
                       max_auto_size=auto_max(gpus), aspect_for=aspect_for(cfg.hyp,
                                                                           gpu=gpus > 0))
        if stale_local:
            console.print(f"removed {stale_local} partial write(s) of an interrupted "
                          "attempt")
        outcome = train_missing(run, cfg, prep, console, t_start=t_start)
    prep.timings.update(timings)
    return analyse(run, prep, outcome, console, t_start=t_start)


def train_missing(run: Run, cfg: RunConfig, prep: Prepared, console: Console, *,
                  t_start: float) -> PassOutcome:
    """The plan, the sanity check (a fresh pass, or one whose check failed) and every
    training without committed predictions."""
    if cfg.rule.votes.low > cfg.repeats:
        console.print(f"[yellow]warning:[/] threshold {cfg.rule.votes} needs more votes than the "
                      f"{cfg.repeats} held-out predictions each image gets: " + (
                          "no image can be a dupe; lower --threshold or raise --repeats"
                          if cfg.rule.select == "votes" else "the dupes will be the most "
                          "suspect images by ranking (--select ranking); raise --repeats for "
                          "votes"), highlight=False)
    planned = all_trainings(cfg.repeats)
    done = run.completed()
    todo = [i for i in planned if i not in done]
    will_check = cfg.sanity and not done and not run.sanity_passed()  # a failure: again
    plan = None
    if todo:  # before the sanity check: a budget that cannot be met stops the pass here
        cfg, plan = make_pass_plan(run, cfg, prep, todo, console, fresh=not done,
                                   spent_s=time.perf_counter() - t_start, sanity=will_check)
    features = None
    if cfg.hyp.mode == "frozen":
        # heads cost seconds: a sanity check would save nothing, and the heads' held-out
        # accuracy is in the report as for any pass
        will_check = False
        spec = EmbedSpec(**cfg.embedding)
        _, costs = embed_pass(run, spec, cfg.hyp.weights, console)
        prep.timings.update(costs)
        features = stored_features(run, spec)
    if will_check:
        labels = prep.index["label"].to_numpy()
        sample = stratified_sample(labels, SANITY_SAMPLE, seed=cfg.seed)
        verdict = run_sanity(prep.images.gather(sample), labels[sample], prep.classes, cfg.hyp,
                             console, expected_s=plan.sanity_s if plan else None)
        run.save_sanity(verdict)
        if not verdict["ok"]:
            raise SanityError(f"the sanity check failed (see above and "
                              f"{run.path_of('sanity.json')}); fix the cause, or resume with "
                              f"`dupes run --resume {run} --no-sanity` to train anyway")
    if run.on_bucket:  # the scan, splits and cache: a resume on another machine needs them
        run.push()
    if not todo:
        console.print(f"all {len(planned)} trainings already done")
        return PassOutcome()
    if done:
        console.print(f"resuming: {len(done)} of {len(planned)} trainings already done")
    return run_trainings(run, cfg, prep, todo, plan.slots, console, planned_s=plan.training_s,
                         features=features,
                         deadline=t_start + plan.budget_s if plan.budget_s else None)


def analyse(run: Run, prep: Prepared, outcome: PassOutcome, console: Console, *,
            t_start: float) -> Summary:
    """The analysis of every committed training, its files, the reports and the summary."""
    t_analysis = time.perf_counter()
    analysis, seconds = run.analysis()
    run.save_analysis(analysis)
    analysis_s = time.perf_counter() - t_analysis
    console.print(provenance_text(run.config().to_dict()), highlight=False)
    console.print(report(analysis, seconds=seconds))
    prev = previous_run(run)
    if prev is not None:
        try:  # a comparison is a convenience: a failure here must not lose a finished pass
            console.print(rounds_report([prev, run], last=analysis))
        except Exception as e:  # noqa: BLE001
            console.print(f"[yellow]warning:[/] no comparison with {prev}: {e}")
    try:  # pictures are a convenience: a failure here must not lose a finished pass
        page, _ = write_html(analysis, run)
        console.print(f"HTML report: {page} (contact sheets in {page.parent / 'sheets'})",
                      highlight=False)
    except Exception as e:  # noqa: BLE001
        console.print(f"[yellow]warning:[/] the HTML report was not written: {e}; "
                      f"`dupes report {run} --html` tries again")
    return summarise(run, prep, analysis, seconds, outcome, console,
                     timings={"analysis_s": analysis_s}, wall_s=time.perf_counter() - t_start)
