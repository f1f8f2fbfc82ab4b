"""Datasets and run directories on object stores (`s3://`, `gs://`) through pyarrow filesystems.

Object stores have no rename, which every durable write here relies on. So a run directory on
a bucket is worked on in a local mirror on the driver's machine, where writes stay atomic as
on any disk, and each durable file is then uploaded with one PUT (atomic per object). A
Parquet partition is many objects: it is committed by a marker object that lists its files,
uploaded after them. Readers trust a partition only through its marker, so an upload that was
cut short is never read, and a resumed run removes it.

Datasets are only read: listed and opened through the same filesystems, decoded once by the
scan, like local files.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import stat
from pathlib import Path

from orchestrator.run import rundir

SCHEMES = ("s3", "gs", "gcs")
MARKER = "_COMMITTED.json"  # pyarrow datasets skip names starting with "_"
REMOTE_MANAGED = ("ray",)  # Ray Train writes RUN/ray to the bucket itself
# Object stores keep whole-second modification times: a file uploaded within the second it
# was written must not look newer than its upload forever after.
MTIME_SLACK_S = 2.0


CHECK = ("Check the URI and the credentials (S3: AWS_* variables, ~/.aws or the instance role; "
         "an S3-compatible store needs AWS_ENDPOINT_URL; GCS: GOOGLE_APPLICATION_CREDENTIALS "
         "or the VM's service account)")


class StorageError(RuntimeError):
    """A run directory or dataset cannot be used where it is; the message says the fix."""


def is_uri(location) -> bool:
    """True for an object-store URI (s3://, gs://); local paths and file:// are not."""
    text = str(location)
    return "://" in text and text.split("://", 1)[0].lower() in SCHEMES


@functools.lru_cache(maxsize=16)
def resolve(uri: str):
    """(pyarrow filesystem, path inside it) for an object-store URI."""
    import pyarrow.fs as pafs

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


class FetchError(StorageError):
    """An object could not be fetched (network, permissions): not a bad image."""


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
        import pyarrow.fs as pafs
        fs, base = resolve(str(root))
        return fs.get_file_info(join(base, relpath)).type == pafs.FileType.File
    return (Path(root) / relpath).is_file()


def list_tree(uri: str) -> dict[str, "object"]:
    """Every object under a URI: relative path -> pyarrow FileInfo (empty if none)."""
    import pyarrow.fs as pafs

    fs, base = resolve(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as e:
        raise StorageError(f"cannot list {uri}: {e}. {CHECK}") from e
    return {f.path[len(base) + 1:]: f for f in infos if f.type == pafs.FileType.File}


def read_object(uri: str) -> bytes | None:
    """The whole content of one object, or None if there is none."""
    import pyarrow.fs as pafs
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
    import argparse

    if is_uri(text):
        return text.rstrip("/")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme and scheme != "file":
        raise argparse.ArgumentTypeError(
            f"{text}: {scheme}:// is not supported; use s3://, gs:// or a local/mounted path")
    return Path(text[len("file://"):] if scheme else text)


def parse_local_path(text: str) -> Path:
    """A local folder or file: what a person opens in a file manager, or a file we rename."""
    import argparse

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
    tmp.write_bytes(data)
    os.replace(tmp, path)


class ShardStore:
    """A folder whose files any node writes whole and reads (the image cache's shards): a
    local or mounted folder (temp + rename) or a bucket prefix (one PUT each). Readers get a
    file on their own disk: the folder itself, or a node-local copy of a bucket's object.
    Picklable: it travels to Ray tasks and workers as its location."""

    def __init__(self, root):
        self.root = absolute(root)

    def __repr__(self) -> str:
        return f"ShardStore({self.root})"

    def _at(self, name: str):
        return child(parse_location(self.root), name)

    def put(self, name: str, data: bytes) -> None:
        write_bytes(self._at(name), data)

    def get(self, name: str) -> bytes | None:
        return read_bytes(self._at(name))

    def exists(self, name: str) -> bool:
        return is_file(self.root, name)

    def names(self) -> set[str]:
        if is_uri(self.root):
            return set(list_tree(self.root))
        root = Path(self.root)
        return {p.name for p in root.iterdir() if p.is_file() and not p.name.startswith(".")} \
            if root.is_dir() else set()

    def local(self, name: str) -> str:
        """A path to the file on this node (a bucket's object is copied once, atomically)."""
        if not is_uri(self.root):
            return str(Path(self.root) / name)
        scheme, rest = self.root.split("://", 1)
        dst = mirror_root() / "shards" / scheme / rest / name
        if not dst.exists():
            download(self.root, name, dst)
        return str(dst)

    def remove(self, name: str) -> None:
        if is_uri(self.root):
            fs, base = resolve(self.root)
            fs.delete_file(join(base, name))
        else:
            (Path(self.root) / name).unlink(missing_ok=True)


def mirror_root() -> Path:
    """Where local mirrors of bucket run directories live ($DUPES_MIRROR or the user cache)."""
    if os.environ.get("DUPES_MIRROR"):
        return Path(os.environ["DUPES_MIRROR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dupes" / "mirror"


def _partition_of(rel: str) -> tuple[str, str] | None:
    """(partition folder, file name) for a file inside predictions/ or epochs/ partitions."""
    folder, _, name = rel.rpartition("/")
    return (folder, name) if name and rundir.parse_partition(folder) is not None else None


def _committed(remote: dict) -> set[str]:
    """The partition folders ("predictions/repeat=R/fold=F") whose marker is in a listing."""
    return {p[0] for rel in remote if (p := _partition_of(rel)) is not None and p[1] == MARKER}


def _skipped(rel: str) -> bool:
    parts = rel.split("/")
    return parts[0] in REMOTE_MANAGED or any(p.startswith(".") for p in parts)


class RemoteRun:
    """A run directory on an object store and its local mirror on this machine."""

    def __init__(self, uri: str, local: Path | None = None):
        if not is_uri(uri):
            raise ValueError(f"not an object-store URI: {uri}")
        self.uri = uri.rstrip("/")
        self.fs, self.base = resolve(self.uri)
        scheme, rest = self.uri.split("://", 1)
        self.local = Path(local) if local is not None else mirror_root() / scheme / rest

    def __repr__(self) -> str:
        return f"RemoteRun({self.uri} <-> {self.local})"

    def _path(self, rel: str) -> str:
        return join(self.base, rel)

    def exists(self) -> bool:
        import pyarrow.fs as pafs
        return self.fs.get_file_info(self._path("config.json")).type == pafs.FileType.File

    def committed(self, kind: str = "predictions") -> set[tuple[int, int]]:
        """(repeat, fold) of every partition whose marker is in the bucket."""
        listing = {f"{kind}/{rel}": info for rel, info in list_tree(join(self.uri, kind)).items()}
        return {rundir.parse_partition(p)[1:] for p in _committed(listing)}

    def _marker(self, partition: str) -> dict:
        return json.loads(read_object(join(self.uri, partition, MARKER)))

    # -- bucket -> mirror ------------------------------------------------------------------
    def _infos(self, rels: set[str]) -> dict:
        """FileInfo of the named objects that exist, without listing the whole run."""
        import pyarrow.fs as pafs
        names = sorted(rels)
        infos = self.fs.get_file_info([self._path(rel) for rel in names])
        return {rel: i for rel, i in zip(names, infos) if i.type == pafs.FileType.File}

    def pull(self, *, cache: bool = True, only: set[str] | None = None) -> int:
        """Bring the mirror up to date with the bucket; returns how many files came down.

        Files are fetched when the mirror lacks them or the bucket's copy is newer; of the
        partitions only those with a marker, and only the files their marker lists. Readers
        need less: no image cache (`cache=False`, it can be GBs), or `only` the files named
        (then no partitions, and no listing of the run).
        """
        remote = list_tree(self.uri) if only is None else self._infos(only | {"config.json"})
        if "config.json" not in remote:
            raise StorageError(f"{self.uri} is not a run directory (no config.json there)")
        fetched = 0
        for rel, info in sorted(remote.items()):
            if _skipped(rel) or _partition_of(rel) is not None \
                    or (not cache and rel.startswith("cache/")):
                continue
            dst = self.local / rel
            if dst.exists() and dst.stat().st_mtime >= info.mtime.timestamp():
                continue  # the mirror's copy is as new (or newer: written, not yet uploaded)
            download(self.uri, rel, dst, mtime=info.mtime.timestamp())
            fetched += 1
        if only is None:
            for partition in sorted(_committed(remote)):
                dst = self.local / partition
                if dst.is_dir():
                    continue  # partitions never change once committed
                files = self._marker(partition)["files"]
                tmp = dst.parent / f".pull-{dst.name}"
                shutil.rmtree(tmp, ignore_errors=True)
                for name in files:
                    download(self.uri, f"{partition}/{name}", tmp / name)
                    fetched += 1
                os.rename(tmp, dst)
        return fetched

    # -- mirror -> bucket ------------------------------------------------------------------
    def upload(self, rel: str) -> None:
        """One file of the mirror to the bucket (one PUT: the object appears whole)."""
        import pyarrow.fs as pafs
        pafs.copy_files(str(self.local / rel), self._path(rel),
                        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    def push_partition(self, kind: str, repeat: int, fold: int) -> None:
        """A committed local partition: its files, then the marker that commits them."""
        self._push_partition(rundir.partition_rel(kind, repeat, fold))

    def uncommit(self, kind: str, repeat: int, fold: int) -> None:
        """Withdraw a committed partition from the bucket: its marker first (from then on no
        reader trusts it), then its files."""
        partition = rundir.partition_rel(kind, repeat, fold)
        remote = list_tree(join(self.uri, partition))
        if MARKER in remote:
            self.fs.delete_file(self._path(f"{partition}/{MARKER}"))
        for name in remote:
            if name != MARKER:
                self.fs.delete_file(self._path(f"{partition}/{name}"))

    def _push_partition(self, partition: str) -> None:
        files = sorted(p.name for p in (self.local / partition).iterdir() if p.is_file()
                       and not p.name.startswith((".", "_")))
        for name in files:
            self.upload(f"{partition}/{name}")
        write_object(join(self.uri, partition, MARKER), json.dumps({"files": files}).encode())

    def push(self) -> int:
        """Upload whatever the bucket lacks or has older; returns how many files went up.

        Partitions go up with their marker; the other files one PUT each, `summary.json`
        last, since it says the pass is over.
        """
        remote = list_tree(self.uri)
        committed = _committed(remote)
        pushed, singles = 0, []
        for path in sorted(self.local.rglob("*")):
            rel = path.relative_to(self.local).as_posix()
            if not path.is_file() or _skipped(rel):
                continue
            part = _partition_of(rel)
            if part is not None:
                if part[0] not in committed:
                    self._push_partition(part[0])
                    committed.add(part[0])
                    pushed += 1
                continue
            info = remote.get(rel)
            if info is None or info.size != path.stat().st_size or \
                    path.stat().st_mtime > info.mtime.timestamp() + MTIME_SLACK_S:
                singles.append(rel)
        for rel in sorted(singles, key=lambda r: r == "summary.json"):
            self.upload(rel)
            pushed += 1
        return pushed

    def clear_partial(self) -> int:
        """Remove partition objects no marker lists (an upload cut short); returns how many."""
        remote = list_tree(self.uri)
        listed = {partition: set(self._marker(partition)["files"]) | {MARKER}
                  for partition in _committed(remote)}
        stale = [rel for rel in remote if (p := _partition_of(rel)) is not None
                 and p[1] not in listed.get(p[0], ())]
        for rel in stale:
            self.fs.delete_file(self._path(rel))
        return len(stale)
