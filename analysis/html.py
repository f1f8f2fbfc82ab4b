"""A self-contained HTML report of a run: one file, thumbnails inline, tables sortable.

Pure functions from an Analysis (plus thumbnails as data URIs) to an HTML string; reading
images and writing the file is the caller's job. No network: the styles and the small
sorting script are inline, so the file opens offline and can be mailed or archived.
"""
from __future__ import annotations

import html
import math
import urllib.parse

import numpy as np
import pandas as pd

from analysis.columns import shown
from analysis.losses import highest_losses
from analysis.quality import quality_warnings
from analysis.report import selection_text
from analysis.run_analysis import Analysis
from analysis.sections import Section, class_errors_section, score_cells, thresholds_section

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px} .warn{background:#fff4d6;border:1px solid #e0b000;border-radius:6px;padding:6px 14px;margin:8px 0} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;vertical-align:middle}
th{background:#f4f4f4;cursor:pointer;user-select:none;position:sticky;top:0}
th.sorted-asc::after{content:" \\25B2"} th.sorted-desc::after{content:" \\25BC"}
td.l,th.l{text-align:left} td img{display:block;image-rendering:pixelated}
td img:hover{transform:scale(4);transform-origin:left center;position:relative;z-index:2;
 box-shadow:0 0 6px #0006;background:#fff}
.filters{display:flex;gap:12px;align-items:center;font-size:13px;margin:6px 0}
.filters input[type=text]{width:22em}
.cards{display:flex;gap:16px;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}
.cm td{min-width:34px;text-align:center} .muted{color:#888}
.flag{color:#b00;font-weight:600}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(t=>{
 t.querySelectorAll('th').forEach((th,i)=>th.addEventListener('click',()=>{
  const body=t.tBodies[0], rows=[...body.rows], asc=!th.classList.contains('sorted-asc');
  t.querySelectorAll('th').forEach(h=>h.classList.remove('sorted-asc','sorted-desc'));
  th.classList.add(asc?'sorted-asc':'sorted-desc');
  const key=r=>{const c=r.cells[i],v=c.dataset.v??c.textContent;const f=parseFloat(v);
   return isNaN(f)?v:f};
  rows.sort((a,b)=>{const x=key(a),y=key(b);return (x>y?1:x<y?-1:0)*(asc?1:-1)});
  rows.forEach(r=>body.appendChild(r));}));});
document.querySelectorAll('.filters').forEach(f=>{
 const t=document.getElementById(f.dataset.table), q=f.querySelector('.q'),
  v=f.querySelector('.v'), c=f.querySelector('.c'), n=f.querySelector('.n');
 const apply=()=>{const text=q.value.toLowerCase(), min=parseFloat(v.value)||0; let shown=0;
  [...t.tBodies[0].rows].forEach(r=>{const ok=r.textContent.toLowerCase().includes(text)
   && parseFloat(r.dataset.votes)>=min && !(c.checked && r.dataset.confirmed==='1');
   r.style.display=ok?'':'none'; shown+=ok;});
  n.textContent=shown+' shown';};
 [q,v,c].forEach(e=>e.addEventListener('input',apply)); apply();});
"""


def _esc(v) -> str:
    return html.escape(str(v), quote=True)


def _num(v, fmt: str) -> str:
    """A table cell with a sortable value: NaN shows as '-' and sorts last."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return '<td data-v="-1e99" class="muted">-</td>'
    return f'<td data-v="{float(v):.6g}">{format(v, fmt)}</td>'


def _thumb(thumbs: dict, sample_id: int) -> str:
    uri = thumbs.get(int(sample_id))
    return (f'<td class="l"><img src="{uri}" alt="" loading="lazy"></td>' if uri
            else '<td class="l muted">-</td>')


def _table(title: str, header: list[tuple[str, bool]], rows: list, *, note: str = "",
           table_id: str = "", filters: bool = False) -> str:
    """A sortable table; a row is its cells' HTML, or (tr attributes, cells). With `filters`,
    a filter bar above it (text, minimum votes, hide confirmed) for `_sample_rows` rows."""
    th = "".join(f'<th class="{"l" if left else ""}">{_esc(h)}</th>' for h, left in header)
    body = "\n".join(f"<tr {r[0]}>{r[1]}</tr>" if isinstance(r, tuple) else f"<tr>{r}</tr>"
                     for r in rows)
    bar = (f'<div class="filters" data-table="{table_id}"><input class="q" type="text" '
           'placeholder="filter: file, class, pair ..."><label>votes at least <input class="v" '
           'type="number" min="0" value="0" style="width:4em"></label><label><input class="c" '
           'type="checkbox"> hide confirmed</label><span class="n muted"></span></div>'
           if filters else "")
    ident = f' id="{table_id}"' if table_id else ""
    return (f"<h2>{_esc(title)}</h2>" + (f"<p class=muted>{_esc(note)}</p>" if note else "")
            + bar + f'<table class="sortable"{ident}><thead><tr>{th}</tr></thead><tbody>{body}'
              "</tbody></table>")


def _file_cell(relpath: str, link_base: str | None) -> str:
    """The file's path, a link to it when the dataset is a local folder."""
    if link_base is None:
        return f'<td class="l">{_esc(relpath)}</td>'
    href = "file://" + urllib.parse.quote(f"{link_base.rstrip('/')}/{relpath}")
    return f'<td class="l"><a href="{_esc(href)}">{_esc(relpath)}</a></td>'


def _sample_rows(df: pd.DataFrame, thumbs: dict, link_base: str | None = None
                 ) -> list[tuple[str, str]]:
    """(tr attributes for the filter bar, cells) of every row of a votes table."""
    rows = []
    for r in df.itertuples():
        cells = [_thumb(thumbs, r.sample_id), _file_cell(r.relpath, link_base),
                 f'<td class="l">{_esc(r.given_class)}</td>',
                 f'<td class="l">{_esc(r.suggested_class or "-")}</td>',
                 f'<td data-v="{int(r.top_wrong_votes)}">{int(r.top_wrong_votes)}/'
                 f'{int(r.n_evals)}</td>',
                 *[_cell(c) for c in score_cells(r, SCORES)],
                 '<td class="flag">yes</td>' if getattr(r, "cl_issue", False) else "<td></td>"]
        confirmed = int(bool(getattr(r, "confirmed", False)))
        rows.append((f'data-votes="{int(r.top_wrong_votes)}" data-confirmed="{confirmed}"',
                     "".join(cells)))
    return rows


SCORES = shown()  # the registry's per-image scores (analysis/columns.py)
SAMPLE_HEADER = [("image", True), ("file", True), ("given", True), ("suggested", True),
                 ("votes", False), *[(c.label, False) for c in SCORES], ("cleanlab", False)]


def _cell(c) -> str:
    """A section's cell (`analysis.sections.Cell`) as a table cell, sortable by its value."""
    if c.left:
        return f'<td class="l">{_esc(c.text)}</td>'
    if c.value is None:
        return f"<td>{_esc(c.text)}</td>"
    muted = ' class="muted"' if c.text == "-" else ""
    return f'<td data-v="{c.value:.6g}"{muted}>{_esc(c.text)}</td>'


def html_table(section: Section, **kw) -> str:
    """A report section (`analysis.sections`) as a sortable table."""
    return _table(section.title, section.header,
                  ["".join(_cell(c) for c in row) for row in section.rows],
                  note=kw.pop("note", section.note), **kw)


def confusion_html(confusion: np.ndarray, classes: list[str], *, max_classes: int = 40) -> str:
    """The confusion matrix as a heat-mapped table (rows: given, columns: predicted);
    each cell's shade is its share of the row, so small classes read as clearly as big."""
    confusion = np.asarray(confusion)
    k = len(classes)
    if k > max_classes:
        return (f"<h2>confusion matrix</h2><p class=muted>{k} classes: too many to draw; see "
                "the most-confused pairs below.</p>")
    share = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    head = "".join(f"<th>{_esc(c)}</th>" for c in classes)
    rows = []
    for i, name in enumerate(classes):
        cells = []
        for j in range(k):
            s = share[i, j]
            color = (f"rgba(40,120,200,{s:.3f})" if i == j else f"rgba(220,60,40,{min(1, 4 * s):.3f})")
            cells.append(f'<td style="background:{color}" title="{confusion[i, j]:,} ({s:.1%})">'
                         f"{confusion[i, j]:,}</td>")
        rows.append(f'<tr><th class="l">{_esc(name)}</th>{"".join(cells)}</tr>')
    return ("<h2>confusion matrix (all held-out predictions)</h2><p class=muted>rows: given "
            "label, columns: predicted class; blue: agreement, red: errors (darker = larger "
            "share of the row)</p>"
            f'<table class="cm"><thead><tr><th class="l">given \\ predicted</th>{head}</tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


def html_report(analysis: Analysis, *, thumbs: dict[int, str] | None = None,
                title: str = "dupes report", top: int = 200, sheets: list[str] | None = None,
                link_base: str | None = None,
                settings: list[tuple[str, str]] | None = None) -> str:
    """The whole report as one HTML document.

    Every dupe is listed, with a filter bar; `thumbs` maps sample_id to an image data URI
    (missing ones show '-'); `top` caps the top-loss table; `sheets` names contact-sheet PNGs
    written beside the report; `link_base`, the dataset's local folder, makes every file
    name a link to the file; `settings`, (setting, value) rows of what was trained
    (`analysis.report.trained_settings`).
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    thumbs = thumbs or {}
    votes, dupes = analysis.votes, analysis.dupes
    acc = analysis.accuracy["accuracy"]
    cards = [("images", f"{len(votes):,}"), ("classes", f"{len(analysis.classes):,}"),
             ("trainings", f"{len(analysis.accuracy):,}"),
             ("held-out accuracy", f"{acc.mean():.4f}" if len(acc) else "-"),
             (f"dupes {analysis.set_name}", f"{len(dupes):,}")]
    if analysis.num_issues is not None:
        cards.append(("cleanlab estimate", f"{analysis.num_issues:,}"))
    warnings = quality_warnings(analysis)
    banner = ('<div class="warn"><b>The votes of this run may not be trustworthy:</b><ul>'
              + "".join(f"<li>{_esc(w)}</li>" for w in warnings) + "</ul></div>"
              if warnings else "")
    parts = [f"<h1>{_esc(title)}</h1>", banner, '<div class="cards">' + "".join(
        f'<div class="card"><span class=muted>{_esc(k)}</span><b>{_esc(v)}</b></div>'
        for k, v in cards) + "</div>"]
    parts.append(f'<p class="muted">{_esc(selection_text(analysis).plain)}</p>')
    parts.append(html_table(thresholds_section(analysis)))
    parts.append(_table(f"dupes ({analysis.set_name}): {len(dupes):,} images",
                        SAMPLE_HEADER, _sample_rows(dupes, thumbs, link_base),
                        note="every dupe; click a column to sort, point at an image to enlarge "
                             "it; combined: the measured best ranking (BENCHMARKS.md), as a "
                             "percentile (1 = most suspect)", table_id="dupes", filters=True))
    ranked = highest_losses(votes, k=top)
    parts.append(_table(f"top {len(ranked)} held-out losses", SAMPLE_HEADER,
                        _sample_rows(ranked, thumbs, link_base),
                        note="every loss is out-of-sample: from models that never saw the image"))
    if sheets:
        parts.append("<h2>contact sheets</h2><ul>" + "".join(
            f'<li><a href="{_esc(s)}">{_esc(s)}</a></li>' for s in sheets) + "</ul>")
    if settings:
        parts.append(_table("what was trained", [("setting", True), ("value, and why", True)],
                            [f'<td class="l">{_esc(k)}</td><td class="l">{_esc(v)}</td>'
                             for k, v in settings]))
    if analysis.confusion is not None:
        parts.append(confusion_html(analysis.confusion, analysis.classes))
    if analysis.per_class is not None:
        parts.append(html_table(class_errors_section(analysis)))
    if analysis.fit is not None:
        parts.append(_table("per training: training vs held-out accuracy",
                            [("repeat", False), ("fold", False), ("train acc", False),
                             ("held-out acc", False), ("gap", False)],
                            [f"<td>{int(r.repeat)}</td><td>{int(r.fold)}</td>"
                             + _num(r.train_accuracy, ".4f") + _num(r.heldout_accuracy, ".4f")
                             + _num(r.gap, "+.4f") for r in analysis.fit.itertuples()],
                            note="train acc: augmented training half, last epoch"))
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + f"<script>{SCRIPT}</script></body></html>\n")
