"""A bucket run's local mirror and its commits (`RemoteRun`), and the image cache's shard
store (`ShardStore`): the parts of the storage layer that know a run's layout.

Object stores cannot rename, so a bucket run is worked on in a local mirror where writes stay
atomic, and each file goes up with one PUT. A partition (many objects) is committed by a
marker object listing its files, uploaded after them; readers trust a partition only through
its marker.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.fs as pafs

from orchestrator.errors import StorageError
from orchestrator.run import partitions
from orchestrator.run.storage import (absolute, child, download, is_file, is_uri, join, list_tree,
                                      parse_location, read_bytes, read_object, resolve, write_bytes,
                                      write_object)

MARKER = "_COMMITTED.json"  # pyarrow datasets skip names starting with "_"
REMOTE_MANAGED = ("ray",)  # Ray Train writes RUN/ray to the bucket itself
# Object stores keep whole-second modification times: a file uploaded within the second it
# was written must not look newer than its upload forever after.
MTIME_SLACK_S = 2.0


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
    return (folder, name) if name and partitions.parse_partition(folder) is not None else None


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

    def delete_all(self) -> None:
        """Every object under the run's prefix (a run that never started: nothing to keep)."""
        for rel in list_tree(self.uri):
            self.fs.delete_file(self._path(rel))

    def exists(self) -> bool:
        return self.fs.get_file_info(self._path("config.json")).type == pafs.FileType.File

    def committed(self, kind: str = "predictions") -> set[tuple[int, int]]:
        """(repeat, fold) of every partition whose marker is in the bucket."""
        listing = {f"{kind}/{rel}": info for rel, info in list_tree(join(self.uri, kind)).items()}
        return {partitions.parse_partition(p)[1:] for p in _committed(listing)}

    def _marker(self, partition: str) -> dict:
        return json.loads(read_object(join(self.uri, partition, MARKER)))

    # -- bucket -> mirror ------------------------------------------------------------------
    def _infos(self, rels: set[str]) -> dict:
        """FileInfo of the named objects that exist, without listing the whole run."""
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
        pafs.copy_files(str(self.local / rel), self._path(rel),
                        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    def push_partition(self, kind: str, repeat: int, fold: int) -> None:
        """A committed local partition: its files, then the marker that commits them."""
        self._push_partition(partitions.partition_rel(kind, repeat, fold))

    def uncommit(self, kind: str, repeat: int, fold: int) -> None:
        """Withdraw a committed partition from the bucket: its marker first (from then on no
        reader trusts it), then its files."""
        partition = partitions.partition_rel(kind, repeat, fold)
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
