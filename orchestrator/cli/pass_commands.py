"""The commands that train: `dupes run`, `demo` and `sanity` (they import Ray and torch; the
CLI imports this module only to run one of them; `tune`, which imports Ray Tune too, has its
own module)."""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from orchestrator import flags
from orchestrator.config import hyp_and_given, new_config, resume_config, scan_from_args
from orchestrator.demo import run_demo
from orchestrator.demo_data import DemoSettings
from orchestrator.errors import EXIT_FAILED_TRAININGS, EXIT_OK, UsageError
from orchestrator.pipeline.passes import run_pass
from orchestrator.pipeline.sanity import check_dataset
from orchestrator.pipeline.settings import check_fits
from orchestrator.run.directory import Run
from orchestrator.run.storage import absolute, child, name_of, same_tree


def cmd_run(args, console: Console) -> int:
    t0 = time.perf_counter()
    if args.resume:
        run = Run.open(args.resume, need="all")
        cfg, applied, ignored = resume_config(run.config(), args, run_dir=run.location,
                                              trained=bool(run.completed()))
        for flag, (old, new) in applied.items():
            console.print(f"resume: {flag} {new} (was {old})", highlight=False)
        for flag, (old, new) in ignored.items():
            console.print(f"[yellow]warning:[/] --resume ignores {flag} {new}: the finished "
                          f"trainings used {old}; start a new run to change it", highlight=False)
    else:
        if args.data is None:
            raise UsageError("give a dataset folder (DATA) or --resume RUN")
        if isinstance(args.data, Path) and not args.data.is_dir():
            raise UsageError(f"dataset folder {args.data} does not exist or is not a folder: "
                             "pass a folder with one sub-folder per class")
        name = f"{name_of(args.data)}-{time.strftime('%Y%m%d-%H%M%S')}"
        out = args.out or child(args.storage, name)
        if same_tree(out, args.data):
            raise UsageError(f"the run directory {absolute(out)} would be inside the dataset "
                             f"{absolute(args.data)}, which is only ever read: put runs "
                             "elsewhere (--out or --storage)")
        cfg = new_config(args, data_dir=absolute(args.data), run_dir=absolute(out))
        if cfg.scan.image_size:  # else checked once the scan knows the size
            check_fits(cfg.hyp, cfg.scan.image_size)
        run = Run.create(out)  # after every flag and file was read: a bad one leaves nothing
    try:
        summary = run_pass(run, cfg, console, t_start=t0)
    except Exception as e:
        if not args.resume and run.discard_unstarted():
            console.print(f"removed {run.location}: the run stopped before its scan finished "
                          "and holds nothing to resume; the same --out can be used again",
                          highlight=False)
        elif isinstance(e, ValueError) and run.has_scan() and not run.completed():
            # a setting found wrong once the data was known (weights, a mode that needs them)
            console.print(f"the scan in {run.location} is kept and nothing was trained: "
                          f"`dupes run --resume {run.location}` with the flags that fix it "
                          "goes on from it", highlight=False)
        raise
    run.save_summary(summary)
    console.print(f"run directory: {run.describe()}  ({summary.wall_s:.1f} s)",
                  highlight=False)
    return EXIT_FAILED_TRAININGS if summary.n_trainings_failed else EXIT_OK


def cmd_demo(args, console: Console) -> int:
    summary = run_demo(flags.build(DemoSettings, args), args, console)
    return EXIT_FAILED_TRAININGS if summary.n_trainings_failed else EXIT_OK


def cmd_sanity(args, console: Console) -> int:
    hyp, given = hyp_and_given(args)
    ok = check_dataset(args.data, scan_from_args(args), hyp, given=given, console=console)
    return EXIT_OK if ok else EXIT_FAILED_TRAININGS
