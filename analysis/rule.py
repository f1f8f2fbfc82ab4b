"""The dupe rule: which images are flagged, as one typed value whose defaults live here only.

The run records it in `config.json`; `dupes report` and `dupes review export` may override any
part of it, and the rest comes from the run. Everything downstream (selection, the per-threshold
counts, the review export) takes a `DupeRule`, so no caller can silently fall back to another
default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from analysis.thresholds import Threshold, parse_threshold
from analysis.votes import RANKINGS

SELECTIONS = ("auto", "votes", "ranking")
# how many a ranking selects: the smallest of the estimates (precision first), or confident
# learning's count of the mean probabilities alone (more recall under heavy noise)
COUNTS = ("smallest", "mean")
# Below this mean held-out accuracy `auto` selects by ranking: on 10,000 CIFAR-10 images with
# 5% planted errors and frozen features (0.665 held-out accuracy) the votes (>= 8 of 10)
# flagged 1,359 images at precision 0.265, while the self-confidence ranking put 95 planted
# errors in its top 100 (issue #24); on MNIST, Fashion-MNIST and the digits (0.86-0.99) the
# votes with the ratio rule were measured good (BENCHMARKS.md "Dupe rule")
RANKING_BELOW_ACCURACY = 0.8


@dataclass(frozen=True)
class DupeRule:
    """An image is a dupe when it has `threshold` votes for one wrong class and, in the mean
    of its held-out probabilities, that class is at least `min_ratio` times as probable as its
    given label."""

    threshold: str = field(default=">=8", metadata={
        "help": "votes for one wrong class that make a dupe: 8 or '>=8' (at least 8), '10', "
                "'>9', '==9', '8-10'", "parse": lambda text: parse_threshold(text).text})
    min_ratio: float = field(default=2.0, metadata={
        "help": "a dupe's suggested class must also be at least R times as probable as its "
                "given label, in the mean of its held-out predictions; keeps out look-alikes "
                "the models are undecided about; 0 = votes alone, as the original method "
                "(measured in BENCHMARKS.md)", "metavar": "R", "min": 0.0})
    ignore_confirmed: bool = field(default=False, metadata={
        "help": "leave images a technician confirmed (the ledger) out of the dupes instead of "
                "marking them"})
    select: str = field(default="auto", metadata={
        "help": "how the dupe set is chosen: votes (the threshold and ratio above, the "
                "original method), ranking (the N most suspect images by --rank, N = the "
                "smallest of the images confident learning flags in --threshold of their "
                "held-out predictions, its count of confidently mislabelled images in their "
                "mean (uncalibrated) and the votes' count), or auto: ranking when the "
                "held-out accuracy is under 0.8, where votes of weak models flag far too much "
                "(BENCHMARKS.md)", "choices": SELECTIONS})
    count: str = field(default="smallest", metadata={
        "help": "how many dupes a ranking selects (--select ranking, or auto under weak "
                "models): smallest, the smallest of the three counts above (precision first: "
                "the set a technician reviews), or mean, confident learning's count of the "
                "mean probabilities alone (more recall under heavy noise: on CIFAR-10N's 41% "
                "noise F1 0.762 -> 0.808, on the photos' 5% 0.700 -> 0.644; BENCHMARKS.md)",
        "choices": COUNTS})
    rank: str = field(default="combined", metadata={
        "help": "what orders the dupes after their votes (the report, the HTML page, the "
                "review's file names): combined (the measured best worst case, BENCHMARKS.md), "
                "mean_loss, self_confidence, normalized_margin or aum",
        "choices": tuple(RANKINGS)})

    def __post_init__(self):
        parse_threshold(self.threshold)  # raises ValueError listing the valid forms
        if not (isinstance(self.min_ratio, (int, float)) and math.isfinite(self.min_ratio)
                and self.min_ratio >= 0):
            raise ValueError(f"min_ratio must be a finite number >= 0 (0 = votes alone), got "
                             f"{self.min_ratio}")
        if self.select not in SELECTIONS:
            raise ValueError(f"unknown select {self.select!r}: valid choices are "
                             f"{list(SELECTIONS)}")
        if self.count not in COUNTS:
            raise ValueError(f"unknown count {self.count!r}: valid choices are {list(COUNTS)}")
        if self.rank not in RANKINGS:
            raise ValueError(f"unknown rank {self.rank!r}: valid choices are {sorted(RANKINGS)}")
        object.__setattr__(self, "threshold", str(self.threshold))
        object.__setattr__(self, "min_ratio", float(self.min_ratio))

    @property
    def votes(self) -> Threshold:
        return parse_threshold(self.threshold)

    def with_threshold(self, threshold: str | Threshold) -> "DupeRule":
        """The same rule at another vote threshold (the report's per-threshold counts)."""
        return replace(self, threshold=str(threshold))


def implied(values: dict) -> dict:
    """Rule fields as given, with what they imply: a threshold or ratio given without a
    selection asks for the votes (a user who sets --threshold 7 wants the images with 7
    votes, whatever the held-out accuracy)."""
    if ("threshold" in values or "min_ratio" in values) and "select" not in values:
        return {**values, "select": "votes"}
    return dict(values)
