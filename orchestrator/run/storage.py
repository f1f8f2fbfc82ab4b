"""Datasets and run directories on object stores (`s3://`, `gs://`) through pyarrow filesystems.

Object stores have no rename, which every durable write here relies on. So a run directory on
a bucket is worked on in a local mirror on the driver's machine, where writes stay atomic as
on any disk, and each durable file is then uploaded with one PUT (atomic per object). A
Parquet partition is many objects: it is committed by a marker object that lists its files,
uploaded after them. Readers trust a partition only through its marker, so an upload that was
cut short is never read, and a resumed run removes it.

Datasets are only read: listed and opened through the same filesystems, decoded once by the
scan, like local files. The mirror, the markers and the shard store are in
`orchestrator.run.remote`.
"""
from __future__ import annotations

import argparse
import errno
import functools
import os
import stat
from pathlib import Path

import pyarrow.fs as pafs

from orchestrator.errors import FetchError, StorageError

SCHEMES = ("s3", "gs", "gcs")


CHECK = ("Check the URI and the credentials (S3: AWS_* variables, ~/.aws or the instance role; "
         "an S3-compatible store needs AWS_ENDPOINT_URL; GCS: GOOGLE_APPLICATION_CREDENTIALS "
         "or the VM's service account)")


def is_uri(location) -> bool:
    """True for an object-store URI (s3://, gs://); local paths and file:// are not."""
    text = str(location)
    return "://" in text and text.split("://", 1)[0].lower() in SCHEMES


@functools.lru_cache(maxsize=16)
def resolve(uri: str):
    """(pyarrow filesystem, path inside it) for an object-store URI."""
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds for a bad URI
        raise StorageError(f"cannot open {uri}: {e}. {CHECK}") from e
    return fs, path.rstrip("/")


def join(location, *parts: str) -> str:
    return "/".join([str(location).rstrip("/"), *parts])


def name_of(location) -> str:
    """The last path segment: the default run name of a dataset."""
    return str(location).rstrip("/").rsplit("/", 1)[-1] if is_uri(location) \
        else Path(location).resolve().name


def open_file(root, relpath: str):
    """A dataset file opened for reading, binary; local or on an object store."""
    if is_uri(root):
        fs, base = resolve(str(root))
        return fs.open_input_file(join(base, relpath))
    return open_regular(Path(root) / relpath)


def open_regular(path: Path):
    """A local file opened for reading, binary; OSError if it is not a regular file. A FIFO
    named `x.png` would block a plain open() until a writer comes (forever), and a device
    (`/dev/zero`) would read without end: both are opened non-blocking and refused."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a folder" \
                if stat.S_ISDIR(mode) else "not a regular file"
            raise OSError(errno.EINVAL, f"{kind}, not a regular file", str(path))
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_file(root, relpath: str) -> bytes:
    """The whole content of a dataset file. OSError for a local file that cannot be read;
    FetchError for an object that cannot be fetched."""
    try:
        with open_file(root, relpath) as f:
            return f.read()
    except OSError as e:
        if not is_uri(root):
            raise
        raise FetchError(str(e)) from e


def local_path(root, relpath: str) -> Path | None:
    """The file on this machine's file system, or None for an object in a bucket."""
    return None if is_uri(root) else Path(root) / relpath


def is_file(root, relpath: str) -> bool:
    if is_uri(root):
        fs, base = resolve(str(root))
        return fs.get_file_info(join(base, relpath)).type == pafs.FileType.File
    return (Path(root) / relpath).is_file()


def list_tree(uri: str) -> dict[str, "object"]:
    """Every object under a URI: relative path -> pyarrow FileInfo (empty if none)."""
    fs, base = resolve(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as e:
        raise StorageError(f"cannot list {uri}: {e}. {CHECK}") from e
    return {f.path[len(base) + 1:]: f for f in infos if f.type == pafs.FileType.File}


def read_object(uri: str) -> bytes | None:
    """The whole content of one object, or None if there is none."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def write_object(uri: str, data: bytes) -> None:
    """One object, written with one PUT: readers see the old content or the new, whole."""
    fs, path = resolve(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def download(root: str, relpath: str, dst: Path, *, mtime: float | None = None) -> None:
    """Copy one object to a local file (temp + rename), dated `mtime` if given: the object's
    own time, so the copy never looks newer than the bucket's and goes back up for nothing."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    with open_file(root, relpath) as src, open(tmp, "wb") as out:
        while chunk := src.read(8 << 20):
            out.write(chunk)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, dst)


def parse_location(text: str) -> Path | str:
    """A command-line location: a local or mounted path, or an s3:// / gs:// URI (kept as
    text: a Path would fold its '//'). An argparse `type`."""
    if is_uri(text):
        return text.rstrip("/")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme and scheme != "file":
        raise argparse.ArgumentTypeError(
            f"{text}: {scheme}:// is not supported; use s3://, gs:// or a local/mounted path")
    return Path(text[len("file://"):] if scheme else text)


def parse_local_path(text: str) -> Path:
    """A local folder or file: what a person opens in a file manager, or a file we rename."""
    loc = parse_location(text)
    if not isinstance(loc, Path):
        raise argparse.ArgumentTypeError(
            f"{text}: this must be a local (or mounted) path; buckets are read and written "
            "by `dupes run`, `report`, `status`, `top-losses`, `sanity` and `review export`")
    return loc


def absolute(location) -> str:
    """A location as recorded in a run: a URI as it is, a path made absolute."""
    return str(location).rstrip("/") if is_uri(location) else str(Path(location).resolve())


def child(location, name: str) -> Path | str:
    """`location/name`, for a folder or a bucket prefix."""
    return join(location, name) if is_uri(location) else Path(location) / name


def parent(location) -> Path | str:
    """The folder or prefix that holds `location`."""
    if is_uri(location):
        return str(location).rstrip("/").rsplit("/", 1)[0]
    return Path(location).resolve().parent


def walk(root) -> tuple[list[str], list[str], list[str]]:
    """(files at the top, class folders, files inside class folders) of a dataset, relative,
    sorted, hidden ones left out; a bucket's folders are key prefixes. FileNotFoundError if
    there is nothing to walk."""
    if is_uri(root):
        objects = [rel for rel in list_tree(str(root))
                   if not any(part.startswith(".") for part in rel.split("/"))]
        if not objects:
            raise FileNotFoundError(f"dataset {root} has no objects (or cannot be listed): pass "
                                    "a prefix with one sub-prefix per class, e.g. "
                                    "s3://bucket/data/cat/1.png")
        top = sorted(rel for rel in objects if "/" not in rel)
        files = sorted(rel for rel in objects if "/" in rel)
        return top, sorted({rel.split("/", 1)[0] for rel in files}), files
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist or is not a folder: "
                                "pass a folder with one sub-folder per class")
    top = [p.name for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")]
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = []
    for cls in classes:
        for dirpath, dirnames, filenames in os.walk(root / cls):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [Path(dirpath, name).relative_to(root).as_posix()
                      for name in sorted(filenames) if not name.startswith(".")]
    return top, classes, files


def all_files(root) -> list[str]:
    """Every file of a dataset, relative, sorted (hidden ones included: a copy keeps them)."""
    if is_uri(root):
        return sorted(list_tree(str(root)))
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {root} does not exist")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def reads_in_flight(root, cpus: int) -> int:
    """Concurrent reads worth having: a bucket read is a round trip, a disk read is not."""
    return cpus * (8 if is_uri(root) else 1)


def escapes(root, relpath: str) -> str | None:
    """Where `relpath` resolves outside `root` (through a symlink), or None. Object keys have
    no symlinks."""
    if is_uri(root):
        return None
    base = Path(root).resolve()
    resolved = (base / relpath).resolve()
    return None if resolved.is_relative_to(base) else str(resolved)


def same_tree(a, b) -> bool:
    """Whether one of two locations lies inside the other: two folders, or two prefixes of a
    bucket (never a bucket and a path)."""
    if is_uri(a) and is_uri(b):
        a, b = str(a).rstrip("/") + "/", str(b).rstrip("/") + "/"
        return a.startswith(b) or b.startswith(a)
    if is_uri(a) or is_uri(b):
        return False
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def read_bytes(location) -> bytes | None:
    """A whole file or object, or None if there is none."""
    if is_uri(location):
        return read_object(str(location))
    path = Path(location)
    return path.read_bytes() if path.exists() else None


def write_bytes(location, data: bytes) -> None:
    """A whole file or object, replaced atomically: temp + rename on disk, one PUT on a
    bucket."""
    if is_uri(location):
        write_object(str(location), data)
        return
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:  # a full disk: no half shard left to fill it further
        tmp.unlink(missing_ok=True)
        raise
