"""The per-sample score columns of a vote table, registered once: their name, the label a
report shows, their format, and which way is suspect. The rich and HTML reports, the review
page and `--rank` (`analysis.votes.RANKINGS`) all read this registry, so a new score is added
here and where it is computed, and nowhere else."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str                      # in the vote table
    label: str                     # in a report's header
    fmt: str                       # format spec of a value
    suspect_high: bool | None      # a high value is suspect (True), a low one (False), neither
    rank: bool = False             # may order the dupes (`--rank`)
    report: bool = True            # shown in the reports' per-image tables


COLUMNS = (
    Column("mean_loss", "mean loss", ".2f", True, rank=True),
    Column("mean_prob_given", "p(given)", ".3f", False),
    Column("mean_prob_suggested", "p(suggested)", ".3f", None),
    Column("self_confidence", "self-confidence", ".3f", False, rank=True),
    Column("normalized_margin", "normalized margin", ".3f", False, rank=True, report=False),
    Column("aum", "AUM", ".3f", False, rank=True),
    # frozen mode: share of the 10 nearest neighbours in embedding space with the same label
    Column("neighbours", "neighbours agree", ".2f", False, rank=True),
    Column("combined", "combined", ".3f", True, rank=True),
)
BY_NAME = {c.name: c for c in COLUMNS}


def column(name: str) -> Column:
    if name not in BY_NAME:
        raise ValueError(f"unknown column {name!r}: valid choices are {sorted(BY_NAME)}")
    return BY_NAME[name]


def shown(names: tuple[str, ...] | None = None) -> list[Column]:
    """The report's per-image score columns, in registry order (or the ones named)."""
    return [c for c in COLUMNS if (c.name in names if names is not None else c.report)]
