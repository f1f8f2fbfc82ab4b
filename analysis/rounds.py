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
    # real error (1) or not (0) of each decided image, in the order the review listed them:
    # how the precision fell along the list ((), when the order is unknown)
    in_order: tuple[int, ...] = ()

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


def review_of(manifest: pd.DataFrame, exported: pd.DataFrame | None = None) -> Review:
    """The decisions in a manifest (`action` column: confirm, relabel, remove, unsure); with
    the review's `exported` rows (in their listed order, `sample_id`), also in that order."""
    if "action" not in manifest.columns:
        raise ValueError(f"a manifest needs an 'action' column, got {list(manifest.columns)}")
    counts = manifest["action"].value_counts()
    get = lambda a: int(counts.get(a, 0))  # noqa: E731
    in_order: tuple[int, ...] = ()
    if exported is not None and "sample_id" in manifest.columns:
        action = dict(zip(manifest["sample_id"].astype("int64"), manifest["action"]))
        in_order = tuple(int(action[s] in ("relabel", "remove"))
                         for s in exported["sample_id"].astype("int64")
                         if action.get(s) in ("confirm", "relabel", "remove"))
    return Review(reviewed=get("confirm") + get("relabel") + get("remove"),
                  relabelled=get("relabel"), removed=get("remove"), confirmed=get("confirm"),
                  in_order=in_order)


def expected_precision(review: Review, budget: int, *, blocks: int = 5) -> float:
    """The share of real errors a review of the next `budget` images should find, from how
    the last review's precision fell along its list: the list in `blocks` equal parts, the
    fall from the first part to the last extended geometrically over the next images (the
    next round's list starts where the last one stopped). Without the order, the last
    review's precision. Measured on CIFAR-10N aggregate (BENCHMARKS.md "Close the loop"):
    0.91, 0.85, 0.75, 0.58, 0.52 along round 1's 500; round 2's 500 then held 0.37, where
    this predicts 0.35 and round 1's mean precision said 0.72."""
    n = len(review.in_order)
    if n < 2 * blocks:
        return review.precision
    size = n / blocks
    parts = [float(np.mean(review.in_order[int(k * size):int((k + 1) * size)]))
             for k in range(blocks)]
    first, last = max(parts[0], 1e-6), parts[-1]
    fall = min(1.0, max(0.5, (max(last, 1e-6) / first) ** (1 / (blocks - 1))))
    ahead = max(1, round(budget / size))
    return float(np.mean([last * fall ** j for j in range(1, ahead + 1)]))


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
    expected = expected_precision(last, b) if last is not None else None
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
