"""Dataset files into new trees (a review folder, a corrected copy): copies the dataset never
shares (reflinks where the file system has them), fetched from a bucket where it is one, the
sha1 that proves a file is the one reviewed, and the checks a new tree needs (empty, outside
the dataset) before it is built in a temp folder and renamed into place."""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from orchestrator.errors import ReviewError
from orchestrator.run import storage


def _sha1(f) -> str:
    h = hashlib.sha1()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def sha1_of(path: Path) -> str:
    """sha1 of a local file; "" for one that cannot be read or is not a regular file (a FIFO
    dropped into a review folder must not hang the import: it is then found by its name)."""
    try:
        with storage.open_regular(path) as f:
            return _sha1(f)
    except OSError:
        return ""


FICLONE = 0x40049409  # Linux ioctl: the copy shares the source's blocks, copy-on-write
_no_reflink: set[tuple[int, int]] = set()  # (source, target) file systems that refused it


def copy_file(src: Path, dst: Path, *, hardlink: bool = False) -> str:
    """A file of the dataset into a review folder or a corrected copy; returns how.

    By default a copy the source never shares: a reflink where the file system has them
    (btrfs, XFS, bcachefs: instant and no space, and a write to either side leaves the other
    as it was), else a plain copy. A technician who rotates or re-saves an image edits that
    copy, never the dataset. `hardlink` shares the source's inode instead (no time, no space,
    and an edit in the copy IS an edit of the dataset): only on request."""
    if hardlink:
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:
            pass
    with storage.open_regular(src) as s:
        devices = (os.fstat(s.fileno()).st_dev, os.stat(dst.parent).st_dev)
        if devices not in _no_reflink:
            try:
                import fcntl  # Linux only: elsewhere a plain copy
                with open(dst, "wb") as d:
                    fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
                shutil.copystat(src, dst)
                return "reflink"
            except (OSError, ImportError):
                _no_reflink.add(devices)
        with open(dst, "wb") as d:
            shutil.copyfileobj(s, d, 1 << 20)
    shutil.copystat(src, dst)
    return "copy"


def fetch(root: Path | str, relpath: str, dst: Path, *, hardlink: bool = False) -> str:
    """A dataset file into a local tree: downloaded from a bucket, else `copy_file`."""
    local = storage.local_path(root, relpath)
    if local is None:
        storage.download(str(root), relpath, dst)
        return "download"
    return copy_file(local, dst, hardlink=hardlink)


def sha1_in(root: Path | str, relpath: str) -> str | None:
    """sha1 of a dataset file, or None if it is not there."""
    if not storage.is_file(root, relpath):
        return None
    with storage.open_file(root, relpath) as f:
        return _sha1(f)


def ensure_empty(path: Path, what: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        kind = "is a file" if not path.is_dir() else "exists and is not empty"
        raise ReviewError(f"{what} {path} {kind}: choose a new folder")


def outside(out: Path, data, what: str) -> None:
    if storage.same_tree(out, data):
        raise ReviewError(f"the {what} {out} would be inside the dataset {data}, which is only "
                          "ever read: choose a folder elsewhere")


def temp_for(out: Path) -> Path:
    """A temporary sibling of `out` to build it in, after removing what an interrupted
    earlier attempt left there (only names of this pattern: ours)."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
        print(f"removed {stale}, left by an interrupted earlier attempt")
    return out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")


def build_into(out: Path, build) -> None:
    """`build(tmp)` fills a temporary sibling of `out`, renamed to `out` once complete, so a
    tree appears whole or not at all; a build that fails (a full disk, Ctrl-C) is removed:
    nothing half-built is left to fill the disk."""
    tmp = temp_for(out)
    try:
        build(tmp)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
