"""The review commands: `dupes review export|import|serve` and `apply`."""
from __future__ import annotations

import threading

from rich.console import Console

from analysis.review_plan import CHANGES_REL, manifest_summary
from analysis.rule import DupeRule
from orchestrator import flags
from orchestrator.errors import EXIT_BAD_INPUT, EXIT_OK, UsageError
from orchestrator.review.apply import apply_manifest
from orchestrator.review.files import (export_review, import_review, manifest_tables,
                                       problems_table)
from orchestrator.review.server import ReviewServer


def cmd_review(args, console: Console) -> int:
    if args.review_command == "export":
        table = export_review(args.run, args.out, include_confirmed=args.include_confirmed,
                              ledger=args.ledger,
                              **flags.given(args, DupeRule))
        console.print(f"exported {len(table)} image(s) for review to {args.out.resolve()}; "
                      f"instructions in {args.out.resolve() / 'README.txt'}", highlight=False)
        return EXIT_OK
    if args.review_command == "serve":
        return serve_review(args, console)
    manifest, problems = import_review(args.review, ledger=args.ledger,
                                       accept_untouched=args.accept_untouched)
    if problems:
        console.print(problems_table(problems))
        return EXIT_BAD_INPUT
    console.print(manifest_tables(*manifest_summary(manifest)))
    console.print(f"wrote {args.review.resolve() / 'manifest.csv'}; apply it with `dupes apply "
                  f"{args.review / 'manifest.csv'} --data <dataset> --out <new folder>`",
                  highlight=False)
    return EXIT_OK


def serve_review(args, console: Console) -> int:
    server = ReviewServer(args.review, port=args.port, ledger=args.ledger).start()
    console.print(f"review page: {server.url}\n(only this machine can open it; Ctrl-C stops "
                  "the server, every decision is already saved)", highlight=False)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    t = server.triage
    console.print(f"{len(t.decisions)} of {len(t.before)} images decided; manifest: "
                  f"{t.review / 'manifest.csv'}", highlight=False)
    return EXIT_OK


def cmd_apply(args, console: Console) -> int:
    if args.hardlink and args.copy:
        raise UsageError("--hardlink and --copy contradict each other: give one")
    changes = apply_manifest(args.manifest, args.data, args.out, hardlink=args.hardlink)
    counts = changes["action"].value_counts().to_dict()
    shared = " (hardlinked: editing a file there edits it in the dataset too)" \
        if args.hardlink else ""
    console.print(f"wrote the corrected dataset {args.out.resolve()}{shared}: "
                  f"{counts.get('relabel', 0)} relabelled, {counts.get('remove', 0)} removed "
                  f"(see {args.out.resolve() / CHANGES_REL}); {args.data} is unchanged",
                  highlight=False)
    return EXIT_OK
