"""Every error a command may end with, and its documented exit code, in one table.

Each is raised where the problem is found, with a message that names the file, flag or run
and the fix; the CLI prints that message and exits with the code below, never a traceback.
"""
from __future__ import annotations

import errno

EXIT_OK, EXIT_FAILED_TRAININGS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(ValueError):
    """The command line lacks something; the message says what to give."""


class ScanError(ValueError):
    """The dataset cannot be used as given; the message names the folder or file and the fix."""


class CacheError(ValueError):
    """The image cache cannot be used; the message names the shard and the fix."""


class StorageError(RuntimeError):
    """A run directory or dataset cannot be used where it is; the message says the fix."""


class FetchError(StorageError):
    """An object of a bucket dataset could not be read (network, permissions)."""


class RunError(ValueError):
    """A location is not a run that can be used as asked; the message says the fix."""


class ResourceError(ValueError):
    """The cluster cannot hold one training as asked; the message says which flag to change."""


class BudgetError(ValueError):
    """A --budget that no setting can meet; the message says what would."""


class ReviewError(ValueError):
    """A review or apply step cannot go on; the message lists every problem and its fix."""


class SanityError(RuntimeError):
    """The preflight check failed: 20 trainings would be wasted."""


# The first class an error is an instance of decides (FetchError is a StorageError).
EXIT_CODES: dict[type, int] = {
    SanityError: EXIT_FAILED_TRAININGS, UsageError: EXIT_BAD_INPUT, ScanError: EXIT_BAD_INPUT,
    ResourceError: EXIT_BAD_INPUT, ReviewError: EXIT_BAD_INPUT, RunError: EXIT_BAD_INPUT,
    StorageError: EXIT_BAD_INPUT, CacheError: EXIT_BAD_INPUT, BudgetError: EXIT_BAD_INPUT,
    FileNotFoundError: EXIT_BAD_INPUT,
}


def disk_full(e: BaseException) -> OSError | str | None:
    """The full disk behind an error, if one is: an ENOSPC OSError in its chain, or, for an
    error a Ray task raised (wrapped, its cause as text), that text."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return e
        if "No space left on device" in str(e):
            return str(e).strip().splitlines()[-1]
        e = e.__cause__ or e.__context__
    return None


def disk_full_message(full: OSError | str, command: str) -> str:
    where = f" writing {full.filename}" if isinstance(full, OSError) and full.filename else ""
    detail = "" if isinstance(full, OSError) else f" ({full})"
    again = ("then `dupes run --resume RUN`: finished trainings are kept, partial writes are "
             "removed" if command in ("run", "demo") else "then run the command again: "
             "nothing half-written was left")
    return f"the disk is full{where}{detail}: free space on it, {again}"
