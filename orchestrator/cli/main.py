"""The `dupes` command line: parse once, hand a typed configuration to the module that does
the work, and map every error to its documented exit code (`orchestrator.errors`) here, in one
place.

The one lazy seam of the project: a command's module is imported when that command runs, so
`dupes report` and `dupes status` never import Ray or torch, and `--help` stays fast.
"""
from __future__ import annotations

import importlib
import sys

from rich.console import Console

from orchestrator.cli.parser import get_args_parser
from orchestrator.errors import (EXIT_BAD_INPUT, EXIT_CODES, EXIT_INTERRUPTED, disk_full,
                                 disk_full_message)

# command -> (module of orchestrator.cli, handler)
COMMANDS = {
    "run": ("pass_commands", "cmd_run"), "demo": ("pass_commands", "cmd_demo"),
    "sanity": ("pass_commands", "cmd_sanity"), "tune": ("tune_command", "cmd_tune"),
    "report": ("read_commands", "cmd_report"), "status": ("read_commands", "cmd_status"),
    "top-losses": ("read_commands", "cmd_top_losses"),
    "compare": ("read_commands", "cmd_compare"),
    "review": ("review_commands", "cmd_review"), "apply": ("review_commands", "cmd_apply"),
}


def handler(command: str):
    module, name = COMMANDS[command]
    return getattr(importlib.import_module(f"orchestrator.cli.{module}"), name)


def _console() -> Console:
    # soft wrap: a message never gets line breaks inside file paths in logs and pipes; and
    # logs get 120 columns rather than rich's 80, so tables keep paths on one line
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    console = _console()
    try:
        return handler(args.command)(args, console)
    except tuple(EXIT_CODES) as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        return next(code for kind, code in EXIT_CODES.items() if isinstance(e, kind))
    except ValueError as e:  # a value the parser could not judge alone (a --config file's)
        console.print(f"[red]error:[/] {e}", highlight=False)
        return EXIT_BAD_INPUT
    except Exception as e:
        full = disk_full(e)
        if full is None:
            raise
        console.print(f"[red]error:[/] {disk_full_message(full, args.command)}", highlight=False)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        run = getattr(args, "resume", None) or getattr(args, "out", None)
        hint = f"`dupes run --resume {run}`" if run and args.command == "run" else \
            "`dupes run --resume <run directory>`"
        console.print(f"\n[yellow]interrupted.[/] Finished trainings are kept; continue with "
                      f"{hint}.")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
