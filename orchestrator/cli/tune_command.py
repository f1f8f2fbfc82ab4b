"""`dupes tune`: a Ray Tune search before the pass (its own module: importing Ray Tune costs
about a second and a half that `dupes run` need not pay)."""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from orchestrator import flags
from orchestrator.config import hyp_and_given, scan_from_args
from orchestrator.errors import EXIT_FAILED_TRAININGS, EXIT_OK, UsageError
from orchestrator.pipeline.search_space import TuneSettings
from orchestrator.pipeline.tune import load_search, run_search, show_search, start_search
from orchestrator.run.storage import absolute, name_of, same_tree


def cmd_tune(args, console: Console) -> int:
    if args.resume:
        settings = load_search(args.resume)
    elif args.data is None:
        raise UsageError("give a dataset folder (DATA) or --resume TUNE")
    else:
        out = (args.out or Path("runs") / f"tune-{name_of(args.data)}-"
               f"{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        if same_tree(out, args.data):
            raise UsageError(f"the search directory {out} would be inside the dataset "
                             f"{args.data}, which is only ever read: choose --out elsewhere")
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"search directory {out} exists and is not empty: choose another "
                             f"--out, or continue that search with `dupes tune --resume {out}`")
        base_hyp, hyp_set = hyp_and_given(args)
        settings = start_search(flags.build(
            TuneSettings, args, data_dir=absolute(args.data), out=str(out),
            scan=scan_from_args(args), base_hyp=base_hyp, hyp_set=hyp_set))
    console.print(f"searching {settings.trials} trial(s) with {settings.scheduler} on "
                  f"{settings.data_dir} -> {settings.out}", highlight=False)
    table, best = run_search(settings, resume=bool(args.resume))
    return EXIT_OK if show_search(table, best, settings, console) else EXIT_FAILED_TRAININGS
