"""Rounds of review, compared: what a round of corrections changed, and whether another round
is worth a technician's time.

The method's authors corrected what the trainings flagged and ran the method again on the
corrected dataset, ignoring images already confirmed. Each round is a run; a corrected copy
records the round it came from (`.dupes/provenance.json`), so a run knows its predecessor.
Everything here is pure: numbers of runs and of the manifests between them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from analysis.run_analysis import Analysis

# Another round is advised while a review of the next dupes is expected to find at least this
# share of real errors, and confident learning estimates at least this share of wrong labels
MIN_EXPECTED_PRECISION = 0.2
MIN_ESTIMATED_WRONG = 0.01


@dataclass(frozen=True)
class RoundStats:
    """One round's run in numbers."""

    name: str                     # how the table names it (the run's folder, or round N)
    round: int                    # 1 = a run on the original data, 2 = on its first correction
    images: int
    accuracy: float               # mean held-out accuracy against the given labels
    agreement: float | None       # how often two trainings name the same class for an image
    estimated_wrong: int | None   # confident learning's estimate of wrong labels
    dupes: int
    confirmed: int                # images of this run the ledger holds as confirmed


@dataclass(frozen=True)
class Review:
    """The decisions of a review between two rounds (a manifest's actions)."""

    reviewed: int                 # decided images: confirm, relabel, remove (unsure excluded)
    relabelled: int
    removed: int
    confirmed: int

    @property
    def precision(self) -> float:
        """The share of the reviewed images that were real errors (relabelled or removed)."""
        return (self.relabelled + self.removed) / self.reviewed if self.reviewed else float("nan")


def round_stats(analysis: Analysis, *, name: str, round: int) -> RoundStats:
    """The numbers of one run's analysis that rounds are compared by."""
    if round < 1:
        raise ValueError(f"round must be >= 1, got {round}")
    acc = analysis.accuracy
    return RoundStats(
        name=name, round=int(round), images=len(analysis.votes),
        accuracy=float(np.average(acc["accuracy"], weights=acc["n"])) if len(acc) else float("nan"),
        agreement=analysis.agreement, estimated_wrong=analysis.num_issues,
        dupes=len(analysis.dupes), confirmed=int(analysis.votes["confirmed"].sum()))


def review_of(manifest: pd.DataFrame) -> Review:
    """The decisions in a manifest (`action` column: confirm, relabel, remove, unsure)."""
    if "action" not in manifest.columns:
        raise ValueError(f"a manifest needs an 'action' column, got {list(manifest.columns)}")
    counts = manifest["action"].value_counts()
    get = lambda a: int(counts.get(a, 0))  # noqa: E731
    return Review(reviewed=get("confirm") + get("relabel") + get("remove"),
                  relabelled=get("relabel"), removed=get("remove"), confirmed=get("confirm"))


def compare_table(rounds: list[RoundStats], reviews: list[Review | None] | None = None
                  ) -> Table:
    """One row per round, in order; `reviews[k]` is the review that turned round k's data
    into round k+1's (None where unknown)."""
    if not rounds:
        raise ValueError("compare_table needs at least one round")
    reviews = list(reviews or [])
    table = Table(title="rounds compared", header_style="bold")
    for col in ("round", "run", "images", "held-out acc", "models agree", "est. wrong labels",
                "dupes", "confirmed", "then reviewed", "real errors (precision)"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for k, r in enumerate(rounds):
        rev = reviews[k] if k < len(reviews) else None
        est = ("-" if r.estimated_wrong is None else
               f"{r.estimated_wrong:,} ({r.estimated_wrong / max(1, r.images):.1%})")
        table.add_row(str(r.round), r.name, f"{r.images:,}", f"{r.accuracy:.3f}",
                      "-" if r.agreement is None else f"{r.agreement:.2f}", est,
                      f"{r.dupes:,}", f"{r.confirmed:,}",
                      "-" if rev is None else f"{rev.reviewed:,}",
                      "-" if rev is None or not rev.reviewed else
                      f"{rev.relabelled + rev.removed:,} ({rev.precision:.0%})")
    return table


def next_round(rounds: list[RoundStats], reviews: list[Review | None] | None = None, *,
               budget: int | None = None) -> Text:
    """Whether another round of review is worth it, from what the rounds so far measured:
    the share of real errors among the images last reviewed, how the held-out accuracy
    moved, and the wrong labels confident learning still estimates. `budget`: how many images
    the technician will review (default: as many as last time, or the current dupes)."""
    if not rounds:
        raise ValueError("next_round needs at least one round")
    cur = rounds[-1]
    reviews = list(reviews or [])
    last = next((r for r in reversed(reviews[:len(rounds) - 1]) if r is not None
                 and r.reviewed), None)
    b = budget if budget is not None else (last.reviewed if last else cur.dupes)
    est = cur.estimated_wrong
    share = est / cur.images if est is not None and cur.images else None
    facts = []
    if len(rounds) > 1:
        prev = rounds[-2]
        facts.append(f"held-out accuracy {prev.accuracy:.3f} -> {cur.accuracy:.3f} "
                     f"({(cur.accuracy - prev.accuracy) * 100:+.1f} points)")
    if last is not None:
        facts.append(f"the last review found {last.relabelled + last.removed:,} real errors in "
                     f"{last.reviewed:,} images ({last.precision:.0%})")
    if share is not None:
        facts.append(f"confident learning estimates {est:,} wrong labels left ({share:.1%})")
    # the next review's expected precision: the last one's, scaled by how much of the
    # estimated noise is left; without a review yet, the estimate's share of the dupes
    if last is not None and len(rounds) > 1 and rounds[-2].estimated_wrong:
        expected = last.precision * min(1.0, (est or 0) / rounds[-2].estimated_wrong)
    elif last is not None:
        expected = last.precision
    else:
        expected = None
    if expected is None:
        verdict = ("review the dupes, the most suspect first: no review has measured yet how "
                   "many of them are real errors")
    elif expected < MIN_EXPECTED_PRECISION or (share is not None
                                               and share < MIN_ESTIMATED_WRONG):
        verdict = (f"stop here: a review of {b:,} more images would find about "
                   f"{expected * b:.0f} real errors ({expected:.0%}), and the models see few "
                   "wrong labels left")
    else:
        verdict = (f"another round is worth it: a review of {b:,} images would find about "
                   f"{expected * b:.0f} real errors ({expected:.0%})")
    text = Text("next round: ", style="bold")
    text.append(verdict + (" (" + "; ".join(facts) + ")" if facts else ""))
    return text
