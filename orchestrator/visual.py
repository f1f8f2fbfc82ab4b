"""Pictures of a run: the HTML report with inline thumbnails, and PNG contact sheets.

Images are read from the dataset folder recorded in the run (read-only); only the images that
appear in the report are opened, so the cost does not grow with the dataset.
"""
from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image, ImageOps

from analysis.html import html_report
from analysis.losses import highest_losses
from analysis.report import trained_settings
from analysis.run_analysis import Analysis
from analysis.sheets import contact_sheet, dupe_pairs, fit, tile_caption
from orchestrator.pipeline.progress import current_top
from orchestrator.run import rundir, storage

THUMB_PX = 64
SHEET_TILES = 96


def load_image(data_dir: Path | str, relpath: str) -> Image.Image | None:
    """An image of the dataset as the scan saw it (EXIF orientation applied), or None if it
    can no longer be read (moved, deleted)."""
    try:
        with storage.open_file(data_dir, relpath) as f, Image.open(f) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGB")
            return im
    except (OSError, ValueError):
        return None


def load_images(data_dir: Path | str, relpaths) -> list[Image.Image | None]:
    """`load_image` of many, several at a time (on a bucket each read is a round trip)."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda r: load_image(data_dir, r), relpaths))


def thumbnail_uri(img: Image.Image | None, *, px: int = THUMB_PX) -> str | None:
    """A PNG data URI of the image scaled to `px` on its longer side, as the sheets' tiles."""
    if img is None:
        return None
    im = fit(img, px)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))[:40]


def write_sheets(analysis: Analysis, data_dir: Path | str, out_dir: Path, *,
                 tiles: int = SHEET_TILES, max_pairs: int = 20) -> list[Path]:
    """top_losses.png, plus one sheet per (given, suggested) pair of dupes; returns paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    votes = analysis.votes
    ranked = highest_losses(votes, k=tiles)
    jobs = [("top_losses.png", f"top {len(ranked)} held-out losses", ranked)]
    for given, suggested, df in dupe_pairs(analysis.dupes, max_pairs=max_pairs):
        jobs.append((f"dupes_{_safe(given)}_as_{_safe(suggested)}.png",
                     f"dupes {analysis.set_name}: given {given}, suggested {suggested} "
                     f"({len(df)})", df.head(tiles)))
    written = []
    for name, title, df in jobs:
        images = load_images(data_dir, df["relpath"])
        sheet = contact_sheet(images, [tile_caption(r) for r in df.itertuples()], title=title)
        rundir.write_png(out_dir / name, sheet)
        written.append(out_dir / name)
    return written


def write_html(analysis: Analysis, run, *, out: Path | None = None,
               top: int = 1000, sheets: bool = True) -> tuple[Path, list[Path]]:
    """RUN/report.html (self-contained) and RUN/sheets/*.png of a `Run`; returns their paths
    (a bucket run's mirror: `Run.push` publishes them)."""
    run_dir = run.path
    data_dir = run.config().data_dir  # a folder or a bucket prefix
    out = Path(out) if out else run_dir / "report.html"
    shown = pd.concat([analysis.dupes.head(top), highest_losses(analysis.votes, k=top)])
    thumbs = {int(s): thumbnail_uri(im)
              for s, im in zip(shown["sample_id"], load_images(data_dir, shown["relpath"]))}
    written = write_sheets(analysis, data_dir, out.parent / "sheets") if sheets else []
    rel = [p.relative_to(out.parent).as_posix() for p in written]
    local = storage.local_path(data_dir, "")  # None for a bucket: no file links
    page = html_report(analysis, thumbs={k: v for k, v in thumbs.items() if v}, top=top,
                       title=f"dupes report: {Path(run.location).name} ({data_dir})", sheets=rel,
                       link_base=str(Path(local).resolve()) if local is not None else None,
                       settings=trained_settings(run.config().to_dict(),
                                                 run.scan_info().to_dict()))
    rundir.write_text(out, page)
    return out, written


LIVE_SHEET_S = 30.0  # how often sheets/live_top_losses.png is redrawn while training


def live_sheet(run_dir: Path, state: dict, prep, *, tiles: int = 24) -> None:
    """Draw the running trainings' highest held-out losses of their latest epoch as a
    contact sheet (RUN/sheets/live_top_losses.png), from the image cache in memory (`prep`,
    a `data.prepare.Prepared`), so the images that fight their label can be looked at while the models
    still learn."""
    rows = current_top(state, tiles)
    if not rows:
        return
    label = prep.index["label"].to_numpy()
    images = []
    for _, sid, _ in rows:
        img = prep.images[sid]
        images.append(Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img))
    captions = [[prep.index["relpath"].iat[sid], f"given {prep.classes[label[sid]]}",
                 f"loss {loss:.2f} r{r}f{f} ep {state[(r, f)].epoch or '?'}"]
                for loss, sid, (r, f) in rows]
    sheet = contact_sheet(images, captions, title="highest held-out losses now (live)")
    (Path(run_dir) / "sheets").mkdir(exist_ok=True)
    rundir.write_png(Path(run_dir) / "sheets" / "live_top_losses.png", sheet)
