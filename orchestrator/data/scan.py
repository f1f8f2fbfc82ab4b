"""Dataset scan: class folders -> index table, skipped-file list and a decoded image cache.

Every file is read and decoded exactly once here; the trainings only ever see the cache
(uint8, N x H x W x C at the training size), so a bad file can fail the scan of that file
but never a training.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from orchestrator.run import storage
from orchestrator.errors import ScanError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
SIZE_SAMPLE = 256  # headers read to choose the automatic training size


@dataclass
class Scan:
    """The usable images of a dataset, in sample-id order."""

    root: Path | str             # a folder, or an s3:// / gs:// prefix
    classes: list[str]
    index: pd.DataFrame          # sample_id, relpath, label, class_name, bytes, sha1
    images: np.ndarray           # uint8, N x H x W x C
    skipped: pd.DataFrame        # relpath, reason
    dropped_classes: dict[str, int] = field(default_factory=dict)


def list_files(root: Path | str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]:
    """(class, relpath) candidates, (relpath, reason) rejects and the sorted class names."""
    try:
        top, classes, files = storage.walk(root)
    except FileNotFoundError as e:
        raise ScanError(str(e)) from None
    if not classes:
        raise ScanError(f"{root} has no class sub-folders: put the images of each class in "
                        "their own sub-folder, e.g. DATA/cat/*.png, DATA/dog/*.png")
    rejects = [(name, "not inside a class folder: move it into DATA/<class>/") for name in top]
    found = []
    for rel in files:
        suffix = PurePosixPath(rel).suffix
        if suffix.lower() not in IMAGE_EXTENSIONS:
            rejects.append((rel, f"not an image file (extension '{suffix or 'none'}'); "
                                 f"supported: {' '.join(sorted(IMAGE_EXTENSIONS))}"))
        else:
            found.append((rel.split("/", 1)[0], rel))
    return found, rejects, classes


AUTO_MAX, AUTO_MAX_CPU = 128, 64  # px: the largest automatic size, with and without GPUs


def auto_max(gpus: float) -> int:
    """The largest automatic training size: on CPUs only the small CNN (up to 64 px) trains a
    pass in minutes; a from-scratch ResNet-18 on 91-px photos took 45 s an epoch per 1,000
    images on 2 cores (issue #14)."""
    return AUTO_MAX if gpus else AUTO_MAX_CPU


def header_sample(root: Path | str, relpaths: list[str], *, max_side: int = AUTO_MAX
                  ) -> tuple[int, int]:
    """(training size, channels) from the headers of up to SIZE_SAMPLE files: their median
    long side, capped at `max_side` (small images are never upsampled, large ones are cut
    down), and 3 channels if any of them is in colour, else 1."""
    step = max(1, len(relpaths) // SIZE_SAMPLE)
    sides, color = [], False
    for rel in relpaths[::step][:SIZE_SAMPLE]:
        try:
            with storage.open_file(root, rel) as f, Image.open(f) as im:  # the header only
                sides.append(max(im.size))
                color |= im.mode not in GRAY_MODES
        except Exception:
            continue
    size = max(8, min(int(np.median(sides)), max_side)) if sides else 32
    return size, 3 if color else 1


def auto_image_size(root: Path | str, relpaths: list[str]) -> int:
    return header_sample(root, relpaths)[0]


ASPECTS = ("pad", "crop", "squash")


def _fill(im: Image.Image):
    """The mean colour of an image's border: what a padded image is padded with, so a dark
    or a bright background carries on instead of meeting a black bar."""
    a = np.asarray(im)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).reshape(-1, *a.shape[2:])
    mean = border.mean(axis=0)
    return int(round(float(mean))) if np.ndim(mean) == 0 else tuple(int(round(v)) for v in mean)


def fit_square(im: Image.Image, size: int, aspect: str = "pad") -> Image.Image:
    """`im` at size x size: `pad` keeps the whole image and its proportions (the default:
    elongated plankton stay elongated), `crop` keeps the centre square, `squash` stretches."""
    if im.size == (size, size):
        return im
    if aspect == "squash":
        return im.resize((size, size), Image.BILINEAR)
    if aspect == "crop":
        return ImageOps.fit(im, (size, size), method=Image.BILINEAR)
    if aspect != "pad":
        raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    return ImageOps.pad(im, (size, size), method=Image.BILINEAR, color=_fill(im))


def _decode(root: Path | str, rel: str, size: int, *, aspect: str = "pad",
            channels: int | None = None) -> tuple[np.ndarray | None, int, str, str]:
    """(pixels at size x size, bytes, sha1, reason) for one file; pixels None when unusable.
    `channels` 1 or 3 converts every image to that; None keeps gray images gray."""
    try:
        data = storage.read_file(root, rel)
    except storage.FetchError as e:
        return None, 0, "", f"cannot fetch: {e}"
    except OSError as e:
        fix = "move it out of the dataset" if e.errno == errno.EINVAL else \
            "check the file's permissions"
        return None, 0, "", f"cannot read ({e.strerror or e}): {fix}"
    if not data:
        return None, 0, "", "empty file (0 bytes): delete it or replace it with the image"
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = ImageOps.exif_transpose(im)  # camera photos: pixels as the viewer shows them
            mode = ("L" if im.mode in GRAY_MODES else "RGB") if channels is None else \
                ("L" if channels == 1 else "RGB")
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                # 16-bit/float grayscale: scale to 8 bit by the image's own range
                arr = np.asarray(im, dtype=np.float32)
                lo, hi = float(arr.min()), float(arr.max())
                arr = (arr - lo) / (hi - lo or 1.0) * 255.0
                im2 = Image.fromarray(arr.astype(np.uint8), "L")
                im2 = im2.convert(mode)
            else:
                im2 = im.convert(mode)
            im2 = fit_square(im2, size, aspect)
            pixels = np.asarray(im2, dtype=np.uint8)
    except Image.DecompressionBombError as e:
        return None, len(data), sha1, (f"too many pixels to decode safely ({e}): save a "
                                       "downscaled copy in its place")
    except Exception as e:  # noqa: BLE001 - a damaged file can raise almost anything inside
        # Pillow's decoders (struct.error, IndexError, ZeroDivisionError, ...): whatever it is,
        # it is this file's fault, and a scan of a million files must not stop for it
        return None, len(data), sha1, (f"cannot decode as an image ({type(e).__name__}: {e}); "
                                       "re-export or delete the file")
    return pixels, len(data), sha1, ""


def scan_dataset(root: Path | str, *, image_size: int | None = None,
                 min_per_class: int | None = None, workers: int | None = None,
                 aspect: str = "pad", sample: int | None = None) -> Scan:
    """Scan a class-folder dataset: decode every file once, skip and explain bad ones.

    A class with fewer than 2 usable images cannot be split 50:50: that is an error naming
    the class unless `min_per_class` is given, in which case classes below it are dropped
    (and reported in `dropped_classes` and the skipped list). With `sample`, only up to that
    many files are decoded, every class in proportion (what a preflight check needs: its cost
    must not grow with the dataset).
    """
    root = storage.parse_location(storage.absolute(root))
    found, rejects, classes = list_files(root)
    found = sample_files(found, sample)
    size = image_size or auto_image_size(root, [rel for _, rel in found])
    threads = workers or storage.reads_in_flight(root, os.cpu_count() or 2)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        decoded = list(pool.map(lambda cr: _decode(root, cr[1], size, aspect=aspect), found))

    meta = [(px is not None, nbytes, sha1, reason) for px, nbytes, sha1, reason in decoded]
    index, kept_classes, skipped, small, keep = build_index(root, found, meta, rejects, classes,
                                                            min_per_class)
    images = _stack([decoded[i][0] for i in keep])
    return Scan(root, kept_classes, index, images, skipped, small)


def sample_files(found: list[tuple[str, str]], sample: int | None) -> list[tuple[str, str]]:
    """Up to `sample` of the listed (class, relpath) files, every class in proportion and at
    least 2 of each (seeded: the same files every time); all of them without `sample`."""
    if sample is None or len(found) <= sample:
        return found
    rng = np.random.default_rng(0)
    by_class: dict[str, list[int]] = {}
    for i, (cls, _) in enumerate(found):
        by_class.setdefault(cls, []).append(i)
    keep = [i for ids in by_class.values() for i in rng.permutation(ids)[
        :max(2, round(sample * len(ids) / len(found)))]]
    return [found[i] for i in sorted(keep)]


def build_index(root, found: list[tuple[str, str]], meta: list[tuple[bool, int, str, str]],
                rejects: list[tuple[str, str]], classes: list[str], min_per_class: int | None
                ) -> tuple[pd.DataFrame, list[str], pd.DataFrame, dict[str, int], list[int]]:
    """The index of the usable images from each candidate's (decoded, bytes, sha1, reason):
    (index, kept classes, skipped list, dropped classes, positions in `found` of the index's
    rows). A class with fewer than 2 usable images cannot be split 50:50: an error naming it,
    unless `min_per_class` drops such classes."""
    rejects = list(rejects)
    unread = [(rel, m[3]) for (_, rel), m in zip(found, meta)
              if not m[0] and m[3].startswith("cannot fetch")]
    if unread:  # an object that could not be fetched (network, permissions) is not a bad
        # image: skipping it would train on part of the dataset without anyone deciding so
        raise ScanError(f"{len(unread)} object(s) of {root} could not be read, e.g. "
                        f"{unread[0][0]}: {unread[0][1]}. Nothing was skipped: check the "
                        f"bucket's access and the network, then run again")
    rows = []
    for pos, ((cls, rel), (ok, nbytes, sha1, reason)) in enumerate(zip(found, meta)):
        if ok:
            rows.append((rel, cls, nbytes, sha1, pos))
        else:
            rejects.append((rel, reason))
    counts = Counter(r[1] for r in rows)
    minimum = 2 if min_per_class is None else max(2, min_per_class)
    small = {c: counts.get(c, 0) for c in classes if counts.get(c, 0) < minimum}
    if small and min_per_class is None:
        listing = ", ".join(f"'{c}' ({n} usable)" for c, n in small.items())
        raise ScanError(f"classes with fewer than 2 usable images cannot be split 50:50: "
                        f"{listing} in {root}. Add images to them, remove the folders, or "
                        f"pass --min-per-class 2 to drop such classes from the run")
    for rel, cls, *_ in rows:
        if cls in small:
            rejects.append((rel, f"class '{cls}' has {small[cls]} usable image(s), below "
                                 f"--min-per-class {minimum}: class dropped"))
    kept_classes = [c for c in classes if c not in small]
    if len(kept_classes) < 2:
        raise ScanError(f"{root} has {len(kept_classes)} usable class(es); at least 2 classes "
                        "with 2 or more readable images each are needed")
    label_of = {c: i for i, c in enumerate(kept_classes)}
    rows = [r for r in rows if r[1] not in small]
    index = pd.DataFrame({
        "sample_id": np.arange(len(rows), dtype=np.int64),
        "relpath": [r[0] for r in rows],
        "label": np.array([label_of[r[1]] for r in rows], dtype=np.int16),
        "class_name": [r[1] for r in rows],
        "bytes": np.array([r[2] for r in rows], dtype=np.int64),
        "sha1": [r[3] for r in rows],
    })
    skipped = pd.DataFrame(sorted(rejects), columns=["relpath", "reason"])
    return index, kept_classes, skipped, small, [r[4] for r in rows]


def _stack(pixels: list[np.ndarray]) -> np.ndarray:
    """N x H x W x C uint8; grayscale images are repeated to RGB only if any image is color."""
    color = any(p.ndim == 3 for p in pixels)
    if color:
        pixels = [np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p for p in pixels]
        return np.stack(pixels)
    return np.stack(pixels)[..., None]
