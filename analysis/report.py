"""Rich renderables for a run's report, built by pure functions from an Analysis."""
from __future__ import annotations

import numpy as np
from rich.console import Group
from rich.table import Table

from analysis.run_analysis import Analysis


def accuracy_table(analysis: Analysis, seconds: dict[tuple[int, int], float] | None = None) -> Table:
    """Held-out accuracy of every training against the given labels, a row per repeat."""
    acc = analysis.accuracy
    table = Table(title="held-out accuracy per training (vs given labels)", header_style="bold")
    for col in ("repeat", "fold 0", "fold 1", "mean"):
        table.add_column(col, justify="right")
    by = {(int(r), int(f)): a for r, f, a in acc[["repeat", "fold", "accuracy"]].to_numpy()}
    seconds = seconds or {}
    for r in sorted({k[0] for k in by}):
        cells = []
        for f in (0, 1):
            a = by.get((r, f))
            s = seconds.get((r, f))
            cells.append("missing" if a is None else f"{a:.4f}" + (f" ({s:.1f}s)" if s else ""))
        vals = [by[(r, f)] for f in (0, 1) if (r, f) in by]
        table.add_row(str(r), *cells, f"{np.mean(vals):.4f}")
    if len(acc):
        table.add_section()
        table.add_row("all", "", "", f"{acc['accuracy'].mean():.4f}")
    return table


def threshold_table(analysis: Analysis) -> Table:
    table = Table(title="dupes per vote threshold", header_style="bold")
    table.add_column("votes for one wrong class")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    n = max(len(analysis.votes), 1)
    for thr, count in analysis.per_threshold.items():
        mark = "  <- selected" if thr == str(analysis.threshold) else ""
        table.add_row(thr + mark, f"{count:,}", f"{count / n:.2%}")
    return table


def confused_table(analysis: Analysis, *, top: int = 10) -> Table:
    table = Table(title=f"most confused pairs among dupes ({analysis.threshold})",
                  header_style="bold")
    table.add_column("given class")
    table.add_column("suggested class")
    table.add_column("dupes", justify="right")
    names = analysis.classes
    for given, sugg, count in analysis.confused.head(top).to_numpy():
        table.add_row(names[int(given)], names[int(sugg)], str(int(count)))
    return table


def dupes_table(analysis: Analysis, *, top: int = 20) -> Table:
    table = Table(title=f"top {top} dupes ({analysis.threshold}, of {len(analysis.dupes):,})",
                  header_style="bold")
    for col, just in [("relpath", "left"), ("given", "left"), ("suggested", "left"),
                      ("votes", "right"), ("mean loss", "right"), ("p(given)", "right")]:
        table.add_column(col, justify=just, overflow="fold")
    for row in analysis.dupes.head(top).itertuples():
        table.add_row(row.relpath, row.given_class, row.suggested_class,
                      f"{row.top_wrong_votes}/{row.n_evals}", f"{row.mean_loss:.2f}",
                      f"{row.mean_prob_given:.3f}")
    return table


def report(analysis: Analysis, *, seconds: dict | None = None, top: int = 20) -> Group:
    """The whole report: accuracy per training, dupes per threshold, confusions, top dupes."""
    return Group(accuracy_table(analysis, seconds), threshold_table(analysis),
                 confused_table(analysis), dupes_table(analysis, top=top))
