"""One dupes pass end to end (scan, split, sanity, trainings, analysis), and re-analysis of a
finished run from its files."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from analysis.quality import quality_warnings
from analysis.report import report
from analysis.rule import DupeRule
from analysis.run_analysis import Analysis, analyze, dupes_export_table
from orchestrator.run import rundir
from orchestrator.config import RunConfig
from orchestrator.run.directory import Run
from trainers.hyp import Hyp


class SanityError(RuntimeError):
    """The preflight check failed: 20 trainings would be wasted."""


@dataclass
class Prepared:
    index: pd.DataFrame
    classes: list[str]
    images: object               # trainers.data.ShardedImages (memory-mapped), or an array
    folds: np.ndarray            # repeats x N, int8
    timings: dict = field(default_factory=dict)


def all_trainings(repeats: int) -> list[tuple[int, int]]:
    return [(r, f) for r in range(repeats) for f in (0, 1)]


SANITY_SAMPLE = 4096  # images the sanity check trains on: its cost must not grow with N


def prepare(run: Run, cfg: RunConfig, console: Console) -> Prepared:
    """Scan into the sharded cache and split once; on a resumed run, load what the first
    attempt wrote (a scan that was cut short goes on: finished shards are not decoded again)."""
    from orchestrator.data.cache import CacheError, build_cache, verify
    from orchestrator.data.splits import make_splits

    t0 = time.perf_counter()
    timings: dict = {}
    def scan():
        import ray

        from orchestrator.pipeline.cluster import scan_task_options
        from orchestrator.data.scan import auto_max

        options = scan_task_options(cfg.data_dir)
        if options:
            console.print(f"the dataset {cfg.data_dir} is only readable on this node: the scan "
                          "runs here (a shared mount or a bucket lets every node decode)",
                          highlight=False)
        return build_cache(cfg.data_dir, run.shard_store(), image_size=cfg.scan.image_size,
                           aspect=cfg.scan.aspect, min_per_class=cfg.scan.min_per_class,
                           seed=cfg.seed, console=console, task_options=options,
                           max_auto_size=auto_max(ray.cluster_resources().get("GPU", 0)
                                                  or cfg.gpus_per_training or 0))

    if run.has_scan() and run.exists("splits.parquet"):
        index, classes, splits = run.index(), run.classes(), run.splits()
        console.print(f"loaded {len(index):,} images from {run} (scan and splits of the first "
                      "attempt)", highlight=False)
        missing = sorted(set(run.shard_names()) - run.shard_store().names())
        if missing and run.exists("placement.parquet"):  # deleted (corrupt): decode again
            console.print(f"decoding {len(missing)} missing shard(s) of the image cache again: "
                          f"{', '.join(missing[:5])}", highlight=False)
            cache = scan()
            if not cache.index[["relpath", "sha1"]].equals(index[["relpath", "sha1"]]):
                raise CacheError(f"the dataset {cfg.data_dir} changed since the run began, so "
                                 f"its missing shard(s) cannot be decoded again: start a new "
                                 "run")
            run.save_cache(cache)
    else:
        cache = scan()
        run.save_cache(cache)
        timings["scan_s"] = time.perf_counter() - t0
        index, classes = cache.index, cache.classes
        t1 = time.perf_counter()
        splits = make_splits(index["label"].to_numpy(), repeats=cfg.repeats, seed=cfg.seed,
                             mode=cfg.split)
        run.save_splits(splits)
        timings["splits_s"] = time.perf_counter() - t1
        p = cache.plan
        console.print(f"scanned {cfg.data_dir}: {len(index):,} images in {len(classes)} classes "
                      f"at {p.size}x{p.size}x{p.channels} ({p.aspect}), "
                      f"{len(cache.skipped)} skipped (see {run.file('skipped.csv')}); "
                      f"{cache.n_shards} shard(s), {cache.decoded_shards} decoded now",
                      highlight=False)
        for cls, n in cache.dropped_classes.items():
            console.print(f"[yellow]dropped class '{cls}' ({n} usable images)[/]")
    images = run.images()
    verify(images)
    timings.setdefault("scan_s", time.perf_counter() - t0)
    folds = np.empty((cfg.repeats, len(index)), dtype=np.int8)
    folds[splits["repeat"].to_numpy(), splits["sample_id"].to_numpy()] = splits["fold"].to_numpy()
    return Prepared(index, classes, images, folds, timings)


def load_analysis(run: Run | Path | str, *, ledger: Path | str | None = None,
                  **rule: object) -> tuple[Analysis, dict]:
    """Analyse a run from its files alone (no Ray): the basis of `dupes report`.

    The dupe rule is the run's own, with any of its fields (`threshold`, `min_ratio`,
    `ignore_confirmed`) overridden by keyword. Images in the ledger of confirmed labels are
    marked (`confirmed`), or left out of the dupes with `ignore_confirmed`.
    """
    from orchestrator.run.ledger import confirmed_mask, read_ledger

    run = run if isinstance(run, Run) else Run.open(run)
    cfg = run.config()
    index = run.index()
    metrics = run.training_metrics()
    seconds = {k: m.get("seconds", 0.0) for k, m in metrics.items()}
    train_acc = {k: m.get("train_accuracy", np.nan) for k, m in metrics.items()}
    confirmed = confirmed_mask(index["sha1"].to_numpy(), index["class_name"].to_numpy(),
                               read_ledger(run.ledger(ledger)))
    analysis = analyze(index, run.prediction_columns(mean_probs=True), run.classes(),
                       rule=dataclasses.replace(cfg.rule, **rule), confirmed=confirmed,
                       dynamics=load_dynamics(run, index["label"].to_numpy()),
                       train_accuracy=train_acc)
    return analysis, seconds


def load_dynamics(run: Run, labels: np.ndarray) -> pd.DataFrame | None:
    """Training-dynamics scores from RUN/epochs/, streamed one training at a time, or None
    when the run recorded none."""
    from analysis.dynamics import DynamicsSums

    batches = run.epoch_batches(columns=["sample_id", "epoch", "margin", "pred"])
    if batches is None:
        return None
    sums = DynamicsSums(labels, num_samples=len(labels))
    for (r, f), table in batches:
        col = {n: table[n].to_numpy() for n in table.column_names}
        sums.add(col["sample_id"], np.full(len(col["epoch"]), r * 256 + f), col["epoch"],
                 col["margin"], col["pred"])
    return sums.scores()


def load_top_losses(run: Run, *, k: int, per_class: bool) -> pd.DataFrame:
    """The images with the highest mean held-out loss, overall or the k worst of every given
    class, with their votes, p(given), and AUM and forgetting when epochs were recorded."""
    from analysis.losses import loss_stats, top_losses

    cols = run.prediction_columns()
    index = run.index()
    votes = analyze(index, cols, run.classes(), scores=False, rule=DupeRule(min_ratio=0),
                    dynamics=load_dynamics(run, index["label"].to_numpy())).votes
    stats = loss_stats(cols["sample_id"], cols["loss"], num_samples=len(index))
    by = index["label"].to_numpy() if per_class else None
    return top_losses(stats, k=k, by=by).merge(votes.drop(columns=["mean_loss", "n_evals"]),
                                               on="sample_id", how="left")


def write_outputs(run: Run, analysis: Analysis) -> None:
    rundir.write_parquet(run.file("votes.parquet"), analysis.votes)
    table = dupes_export_table(analysis.dupes)
    rundir.write_parquet(run.file("dupes.parquet"), table)
    rundir.write_csv(run.file("dupes.csv"), table)


def run_pass(run: Run, cfg: RunConfig, console: Console, *,
             t_start: float | None = None) -> dict:
    """Scan, split, train what is missing, analyse; returns the summary (also summary.json)."""
    t_start = t_start or time.perf_counter()
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
        prep, planned, outcome = _scan_and_train(run, cfg, console, stale_local, t_start)
    prep.timings.update(timings)
    t_analysis = time.perf_counter()
    return _analyse(run, prep, planned, outcome, console, t_start=t_start,
                    t_analysis=t_analysis)


@contextlib.contextmanager
def ray_session(address: str | None, run: Run, notice=None):
    """Ray for the scan and the trainings (connected, or a private local one stopped at the
    end), after proving that every node sees a local run directory; yields its timings."""
    import ray

    from orchestrator.pipeline.cluster import check_shared_storage, init_ray

    t0 = time.perf_counter()
    started = init_ray(address, notice)
    timings = {"ray_init_s": time.perf_counter() - t0}
    try:
        if not run.on_bucket:  # a bucket is shared storage already
            check_shared_storage(run.path)
        yield timings
    finally:
        if started:
            ray.shutdown()


def make_pass_plan(run: Run, cfg: RunConfig, prep: Prepared, todo: list, console: Console, *,
                   fresh: bool, spent_s: float, sanity: bool):
    """Measure one slot with a short training, print the plan and its estimate, and settle
    what `auto` and `--budget` leave open (a fresh pass only: a resumed one keeps what its
    finished trainings used). Returns the configuration to train with, and the plan."""
    import ray

    from analysis.report import plan_table
    from orchestrator.data.cache import stratified_sample
    from orchestrator.pipeline.cluster import like_a_training, plan_resources
    from orchestrator.pipeline.plan import (BudgetError, make_plan, probe, probe_images,
                                   sized_defaults)
    from trainers.sanity import Mirror

    slots, cpt, gpt = plan_resources(cfg, ray.cluster_resources(), len(todo))
    labels = prep.index["label"].to_numpy()
    classes = run.read_json("classes.json")
    data = dict(n_images=len(prep.index), image_size=classes["image_size"],
                channels=classes["channels"])
    hyp, chosen = cfg.hyp, {}
    if fresh:  # what no flag set is chosen from the data and the machine
        hyp, chosen = sized_defaults(hyp, given=cfg.hyp_set, gpu=gpt > 0, **data)
    mirror = fresh and "flip" not in cfg.hyp_set
    sample = stratified_sample(labels, 2 * probe_images(classes["image_size"]), seed=cfg.seed)
    t0 = time.perf_counter()
    args = (prep.images.gather(sample), labels[sample], hyp)
    kwargs = dict(threads=max(1, int(cpt)), device="cuda" if gpt > 0 else "cpu", seed=cfg.seed,
                  mirror=mirror)
    if sum(n.get("Alive", False) for n in ray.nodes()) == 1:
        rates = probe(*args, **kwargs)  # one machine: here, without a task's worker start
    else:
        rates = like_a_training(probe, *args, **kwargs, cpus=cpt, gpus=gpt,
                                resources=cfg.resources_per_training)
    spent_s += time.perf_counter() - t0
    if mirror:
        flip, why = Mirror(**rates.mirror).decision()
        hyp, chosen["flip"] = dataclasses.replace(hyp, flip=flip), why
    try:
        plan, hyp = make_plan(hyp, n_classes=len(prep.classes), **data,
                              aspect=classes.get("aspect", "pad"), data_mode=cfg.data_mode,
                              trainings=len(todo), slots=slots, rates=rates,
                              epoch_losses=cfg.epoch_losses,
                              budget_s=cfg.budget if fresh else None, spent_s=spent_s,
                              sanity=sanity, chosen=chosen)
    except BudgetError as e:
        raise BudgetError(f"{e}. Nothing was trained; `dupes run --resume {run} --budget "
                          "DURATION` keeps this run's scan") from None
    console.print(plan_table(plan.to_dict()))
    run.write_json("plan.json", {**plan.to_dict(), "made": time.time(), "spent_s": spent_s},
                   publish=True)
    if fresh:  # what auto, the data and the budget settled, recorded with the reasons
        cfg = dataclasses.replace(cfg, hyp=hyp, hyp_chosen=plan.chosen,
                                  scan=dataclasses.replace(cfg.scan,
                                                           image_size=classes["image_size"]))
        run.save_config(cfg)
    return cfg, plan


def _scan_and_train(run: Run, cfg: RunConfig, console: Console, stale_local: int,
                    t_start: float):
    from orchestrator.pipeline.driver import run_trainings

    prep = prepare(run, cfg, console)
    if cfg.rule.votes.low > cfg.repeats:
        console.print(f"[yellow]warning:[/] threshold {cfg.rule.votes} needs more votes than the "
                      f"{cfg.repeats} held-out predictions each image gets: no image can be a "
                      "dupe; lower --threshold or raise --repeats")
    if stale_local:
        console.print(f"removed {stale_local} partial prediction write(s) of an interrupted "
                      "attempt")
    planned = all_trainings(cfg.repeats)
    done = run.completed()
    todo = [i for i in planned if i not in done]
    passed = run.exists("sanity.json") and run.read_json("sanity.json")["ok"]
    will_check = cfg.sanity and not done and not passed  # a failed check is run again
    plan = None
    if todo:  # before the sanity check: a budget that cannot be met stops the pass here
        cfg, plan = make_pass_plan(run, cfg, prep, todo, console, fresh=not done,
                                   spent_s=time.perf_counter() - t_start, sanity=will_check)
    if will_check:
        from orchestrator.data.cache import stratified_sample
        labels = prep.index["label"].to_numpy()
        sample = stratified_sample(labels, SANITY_SAMPLE, seed=cfg.seed)
        if not run_sanity(prep.images.gather(sample), labels[sample], prep.classes, cfg.hyp,
                          console, out=run.file("sanity.json"),
                          expected_s=plan.sanity_s if plan else None):
            raise SanityError(f"the sanity check failed (see above and "
                              f"{run.file('sanity.json')}); fix the cause, or resume with "
                              f"`dupes run --resume {run} --no-sanity` to train anyway")
    outcome: dict = {"failures": {}, "slots": 0, "timings": {}}
    if run.on_bucket:  # the scan, splits and cache: a resume on another machine needs them
        run.push()
    if todo:
        if done:
            console.print(f"resuming: {len(done)} of {len(planned)} trainings already done")
        outcome = run_trainings(run, cfg, prep, todo, console, planned_s=plan.training_s)
    else:
        console.print(f"all {len(planned)} trainings already done")
    return prep, planned, outcome


def _analyse(run: Run, prep: Prepared, planned: list, outcome: dict, console: Console, *,
             t_start: float, t_analysis: float) -> dict:
    analysis, seconds = load_analysis(run)
    write_outputs(run, analysis)
    analysis_s = time.perf_counter() - t_analysis
    console.print(report(analysis, seconds=seconds))
    try:  # pictures are a convenience: a failure here must not lose a finished pass
        from orchestrator.visual import write_html
        page, _ = write_html(analysis, run)
        console.print(f"HTML report: {page} (contact sheets in {page.parent / 'sheets'})",
                      highlight=False)
    except Exception as e:  # noqa: BLE001
        console.print(f"[yellow]warning:[/] the HTML report was not written: {e}; "
                      f"`dupes report {run} --html` tries again")
    return summarise(run, prep, planned, analysis, seconds, outcome, console,
                     timings={"analysis_s": analysis_s}, wall_s=time.perf_counter() - t_start)


def summarise(run: Run, prep: Prepared, planned: list, analysis: Analysis, seconds: dict,
              outcome: dict, console: Console, *, timings: dict, wall_s: float) -> dict:
    """summary.json's content and failures.json; failed trainings are named with the fix."""
    completed = run.completed()
    failure_rows = [{"repeat": r, "fold": f, "error": e}
                    for (r, f), e in outcome["failures"].items()]
    run.write_json("failures.json", failure_rows)
    summary = {
        "data_dir": str(run.config().data_dir), "run_dir": run.location,
        "n_samples": int(len(prep.index)), "n_classes": len(prep.classes),
        "n_trainings": len(completed), "n_trainings_planned": len(planned),
        "n_trainings_failed": len(failure_rows),
        "n_prediction_rows": int(analysis.n_prediction_rows),
        "n_dupes": int(len(analysis.dupes)), "threshold": str(analysis.threshold),
        "dupes_per_threshold": analysis.per_threshold,
        "quality_warnings": quality_warnings(analysis),
        "heldout_accuracy_mean": float(analysis.accuracy["accuracy"].mean()),
        "compute_s": float(sum(seconds.values())),
        "slots": int(outcome["slots"]),
        "timings": {**prep.timings, **outcome["timings"], **timings},
        "wall_s": wall_s,
    }
    if failure_rows:
        missing = [i for i in planned if i not in completed]
        console.print(f"[red]{len(failure_rows)} training(s) failed[/] (see "
                      f"{run.file('failures.json')}); {len(missing)} of {len(planned)} have no "
                      f"predictions. The analysis above uses the {len(completed)} that "
                      f"finished; `dupes run --resume {run}` retrains only the missing ones.")
        for row in failure_rows[:3]:
            console.print(f"  r{row['repeat']} f{row['fold']}: "
                          f"{row['error'].strip().splitlines()[-1][:300]}", highlight=False)
    return summary


def run_sanity(images, labels, classes, hyp: Hyp, console: Console, *,
               out: Path | None = None, expected_s: float | None = None) -> bool:
    """Run the preflight checks in this process and print the verdict; True if it passed."""
    import torch

    from analysis.report import format_duration, sanity_table
    from trainers.sanity import sanity

    t0 = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    about = f", about {format_duration(expected_s)}" if expected_s else ""
    console.print(f"sanity check ({hyp.model}, {len(labels):,} images{about}): overfit one "
                  "batch, then a short training that must beat chance", highlight=False)
    verdict = sanity(np.asarray(images), np.asarray(labels), classes, hyp, device=device)
    console.print(sanity_table(verdict.checks))
    if out is not None:
        rundir.write_json(out, {"ok": verdict.ok, "seconds": time.perf_counter() - t0,
                                "checks": [dataclasses.asdict(c) for c in verdict.checks]})
    return verdict.ok


def save_summary(run: Run, summary: dict) -> None:
    """summary.json; for a bucket run, then everything the bucket still lacks (the summary
    last: its presence says the pass is over)."""
    run.write_json("summary.json", summary)
    run.push()
