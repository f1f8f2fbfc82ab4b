"""Report sections built once from an Analysis and rendered by both reports: the terminal's
rich tables (`analysis.report.rich_table`) and the HTML page (`analysis.html.html_table`).
A section is plain data: a title, a header and rows of cells, each cell its text and, for
numbers, the value a sortable HTML table sorts by."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from analysis.columns import Column
from analysis.run_analysis import Analysis


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None     # the sort key of a number (None: sorts as text)
    left: bool = False             # text is left-aligned, numbers right


@dataclass(frozen=True)
class Section:
    title: str
    header: list[tuple[str, bool]]          # (label, left-aligned)
    rows: list[list[Cell]]
    note: str = ""
    marks: list[str] = field(default_factory=list)  # per row: a mark after the first cell


def number(v, fmt: str) -> Cell:
    """A number as a cell; None and NaN show as '-' (and sort last)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return Cell("-", -1e99)
    return Cell(format(v, fmt), float(v))


def text(v) -> Cell:
    return Cell(str(v), left=True)


def score_cells(row, columns: list[Column]) -> list[Cell]:
    """One image's score cells (a row of a vote table), for the registry's `columns`."""
    return [number(float(getattr(row, c.name, float("nan"))), c.fmt) for c in columns]


def thresholds_section(analysis: Analysis) -> Section:
    """How many images each vote threshold makes dupes, the selected one marked."""
    bound = (f" and p(suggested) >= {analysis.min_ratio:g} x p(given)"
             if analysis.min_ratio else "")
    n = max(len(analysis.votes), 1)
    rows, marks = [], []
    for thr, count in analysis.per_threshold.items():
        rows.append([text(thr), number(count, ","), number(count / n, ".2%")])
        marks.append("  <- selected" if thr == str(analysis.threshold) else "")
    return Section("dupes per vote threshold" + bound,
                   [("votes for one wrong class", True), ("images", False), ("share", False)],
                   rows, marks=marks)


def class_errors_section(analysis: Analysis, *, top: int | None = None) -> Section | None:
    """The given classes by held-out error rate (the worst `top`, or all)."""
    if analysis.per_class is None:
        return None
    table = analysis.per_class if top is None else analysis.per_class.head(top)
    rows = [[text(r[1]), number(r.n, ","), number(r.error_rate, ".2%"), text(r.most_taken_for),
             number(r.share_of_errors, ".0%"), number(r.precision, ".3f")]
            for r in table.itertuples()]
    title = "held-out error rate per given class" + (f" (worst {top})" if top else "")
    return Section(title, [("class", True), ("predictions", False), ("error rate", False),
                           ("most taken for", True), ("share of errors", False),
                           ("precision", False)], rows)
