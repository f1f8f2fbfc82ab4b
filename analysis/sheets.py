"""Contact sheets: a grid of image tiles, each captioned with what a reviewer needs to judge
it at a glance and to find it on disk (its file, given class, suggested class, votes,
held-out loss, p(given)). A caption line never runs into the next tile: it is cut to the
tile's width (a path from its start, since its end names the file)."""
from __future__ import annotations

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

CAPTION_LINES = 4


def tile_caption(row) -> list[str]:
    """The caption lines of one votes-table row: its file (relpath), given -> suggested,
    votes and loss, p(given)."""
    suggested = row.suggested_class or "-"
    return [str(row.relpath), f"given {row.given_class} -> {suggested}",
            f"votes {int(row.top_wrong_votes)}/{int(row.n_evals)} loss {row.mean_loss:.2f}",
            f"p(given) {row.mean_prob_given:.3f}"]


def fit_line(text: str, font, width: float, *, keep_end: bool = False) -> str:
    """`text` cut to `width` pixels in `font`, marked with "..": at its end, or at its start
    with `keep_end` (a path, whose end is the file's name)."""
    if font.getlength(text) <= width:
        return text
    for cut in range(1, len(text)):
        short = ".." + text[cut:] if keep_end else text[:-cut] + ".."
        if font.getlength(short) <= width:
            return short
    return ""


def fit(img: Image.Image, px: int) -> Image.Image:
    """The image scaled to `px` on its longer side. Enlarged 2x or more without smoothing,
    so a 28-px digit stays crisp pixels; otherwise Lanczos, since uneven pixel repeats
    (1-2x) or aliasing (shrinking) would distort what a reviewer judges."""
    scale = px / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.NEAREST if scale >= 2 else Image.LANCZOS)


def contact_sheet(images: list[Image.Image | None], captions: list[list[str]], *,
                  title: str = "", columns: int = 8, tile: int = 128) -> Image.Image:
    """A grid of `tile`-px images with caption lines under each (None: a grey placeholder).

    Small images are enlarged with nearest-neighbour sampling so that pixels stay pixels.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if columns < 1 or tile < 16:
        raise ValueError(f"columns must be >= 1 and tile >= 16, got {columns} and {tile}")
    font = ImageFont.load_default(size=max(9, tile // 11))
    line_h = int(font.size * 1.25)
    cap_h = CAPTION_LINES * line_h + 4
    title_h = line_h * 2 if title else 0
    n = len(images)
    cols = max(1, min(columns, n))
    rows = max(1, -(-n // cols))
    pad = 6
    sheet = Image.new("RGB", (cols * (tile + pad) + pad, title_h + rows * (tile + cap_h + pad)
                              + pad), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    for i, (img, cap) in enumerate(zip(images, captions)):
        x = pad + (i % cols) * (tile + pad)
        y = title_h + pad + (i // cols) * (tile + cap_h + pad)
        if img is None:
            draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=(200, 200, 200))
            draw.text((x + 4, y + 4), "missing", fill="black", font=font)
        else:
            im = fit(img.convert("RGB"), tile)
            sheet.paste(im, (x + (tile - im.width) // 2, y + (tile - im.height) // 2))
        for j, line in enumerate(cap[:CAPTION_LINES]):
            line = fit_line(str(line), font, tile, keep_end=j == 0 and "/" in str(line))
            draw.text((x, y + tile + 2 + j * line_h), line, fill="black", font=font)
    return sheet


def dupe_pairs(dupes: pd.DataFrame, *, max_pairs: int = 20) -> list[tuple[str, str, pd.DataFrame]]:
    """The dupes grouped by (given, suggested) class pair, largest groups first."""
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    groups = [(g, s, df) for (g, s), df in dupes.groupby(["given_class", "suggested_class"],
                                                         sort=False)]
    groups.sort(key=lambda t: (-len(t[2]), t[0], t[1]))
    return groups[:max_pairs]
