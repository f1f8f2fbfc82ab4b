"""One writer per folder: a run directory has one driver, a review folder one server.

The lock is `flock` on a file in the folder, so the kernel releases it when its process
ends, however it ends (Ctrl-C, kill -9, a crash): a lock is never left stale. The file holds
who took it (pid, host, command), for the message a second writer gets. On a folder shared
over NFS, flock covers the processes of one machine; a bucket run is locked in its local
mirror only (object stores have no lock).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path


class FolderLock:
    """`with FolderLock(folder, name, refuse=...)`: hold `folder/name` exclusively, or raise
    `refuse(holder)`, where `holder` says who has it ("pid 123 on host, since ...")."""

    def __init__(self, folder: Path, name: str, *, refuse):
        self.path = Path(folder) / name
        self.refuse = refuse
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise self.refuse(holder(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": " ".join(sys.argv[:4])}).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (harmless, reused)
            self._fd = None


def holder(path: Path) -> str:
    """Who holds the lock at `path`, as far as its file says."""
    try:
        d = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        d = {}
    if not d:
        return "another process"
    return f"pid {d.get('pid')} on {d.get('host')} (`{d.get('command', '?')}`, since " \
           f"{d.get('since', '?')})"
