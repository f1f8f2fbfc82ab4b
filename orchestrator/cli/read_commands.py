"""The commands that read a run: `dupes report`, `top-losses` and `status` (no Ray, no
torch: they run on a laptop that only has the run's files)."""
from __future__ import annotations

from rich.console import Console

from analysis.report import provenance_text, report, top_losses_table
from analysis.rule import DupeRule
from orchestrator import flags
from orchestrator.errors import EXIT_OK
from orchestrator.pipeline.progress import show_status
from orchestrator.run.directory import Run
from orchestrator.visual import write_html


def cmd_report(args, console: Console) -> int:
    run = Run.open(args.run)
    analysis, seconds = run.analysis(ledger=args.ledger, **flags.given(args, DupeRule))
    console.print(provenance_text(run.config().to_dict()), highlight=False)
    console.print(report(analysis, seconds=seconds, top=args.top))
    if args.html:
        out, sheets = write_html(analysis, run, top=args.html_top,
                                 out=None if args.html is True else args.html)
        if run.on_bucket and out.is_relative_to(run.path):  # the report goes up too
            run.push()
            out = f"{run.location}/{out.relative_to(run.path).as_posix()} (and {out})"
        console.print(f"HTML report: {out}" + (f"; {len(sheets)} contact sheet(s) in "
                                                f"{sheets[0].parent}" if sheets else ""),
                      highlight=False)
    return EXIT_OK


def cmd_top_losses(args, console: Console) -> int:
    run = Run.open(args.run)
    top = run.top_losses(k=args.k, per_class=args.per_class)
    scope = f"the {args.k} worst of every class" if args.per_class else f"top {args.k}"
    console.print(top_losses_table(top, title=f"held-out losses: {scope} of "
                                              f"{len(run.index()):,} images"))
    return EXIT_OK


def cmd_status(args, console: Console) -> int:
    show_status(Run.open(args.run, need="status"), console)
    return EXIT_OK


def cmd_compare(args, console: Console) -> int:
    from orchestrator.pipeline.rounds import rounds_report
    runs = [Run.open(r) for r in args.runs]
    console.print(rounds_report(runs))
    return EXIT_OK
