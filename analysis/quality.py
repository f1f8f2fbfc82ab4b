"""Whether a run's votes can be trusted: a gate in front of the dupes list.

Votes mean something only when the models that cast them learned the images. The gate looks
at what the data can show, not at held-out accuracy alone: against the given labels even a
perfect model scores only the share of right labels (0.598 with CIFAR-10N's "worse" labels,
where a warning based on accuracy alone called 71% real errors "the models' own mistakes").
So the accuracy is judged against the ceiling the estimated noise leaves, and beside it stands
how often two trainings agree on an image, which models that learned the images do whatever
their labels. A run that fails says so first, with advice measured for its kind of model.
"""
from __future__ import annotations

import numpy as np

from analysis.run_analysis import Analysis

# held-out accuracy must be at least this share of the way from chance to the noise ceiling
MIN_LIFT = 0.5
# two trainings must name the same class for an image at least this often. Measured
# (BENCHMARKS.md "Review order and the weak-model warning"): 0.52 for the small CNN on the
# photos (true accuracy 0.40, dupes 24% real errors); 0.67-0.98 in the 12 other passes, 0.67
# for the small CNN under 41% human noise, whose dupes were 88% real errors
MIN_AGREEMENT = 0.6
# more than this share of all images flagged, and well above the estimated noise, is more
# than the wrong labels of the dataset
MAX_FLAGGED = 0.15
# the noise estimate of weak models runs high; a ceiling below this would excuse anything
MAX_NOISE_FOR_CEILING = 0.5

# What to try, by the kind of model that cast the votes, with what was measured
# (BENCHMARKS.md "Models that see"). Training longer is not offered: on CIFAR-10N "worse" a
# budget that chose 29 epochs moved held-out accuracy from 0.340 to 0.330.
ADVICE = {
    "scratch": "start from a pretrained backbone: --mode frozen (on 2,000 CIFAR-10 photos "
               "held-out accuracy 0.38 -> 0.68 in a fifth of the time), or --mode finetune "
               "on GPUs",
    "frozen": "fine-tune the backbone on GPUs (--mode finetune), or a stronger backbone "
              "(--backbone, --weights); for small gray images the small CNN from scratch "
              "(--mode scratch) measured better (MNIST 0.92 vs 0.86)",
    "finetune": "more epochs of fine-tuning on GPUs (--epochs), or a stronger backbone "
                "(--backbone, --weights)",
}
GENERIC_ADVICE = ("start from a pretrained backbone (--mode frozen, or --mode finetune), or "
                  "a stronger one (--backbone)")


def advice(mode: str | None) -> str:
    """What to try for models of `mode` (scratch, frozen, finetune; None: unknown)."""
    return ADVICE.get(mode or "", GENERIC_ADVICE)


def noise_ceiling(analysis: Analysis) -> float:
    """About what a perfect model would score against the given labels: one minus confident
    learning's estimated share of wrong labels (capped, as weak models inflate it)."""
    n = len(analysis.votes)
    if not n or analysis.num_issues is None:
        return 1.0
    return 1.0 - min(analysis.num_issues / n, MAX_NOISE_FOR_CEILING)


def quality_warnings(analysis: Analysis, *, mode: str | None = None,
                     min_lift: float = MIN_LIFT, min_agreement: float = MIN_AGREEMENT,
                     max_flagged: float = MAX_FLAGGED) -> list[str]:
    """Reasons the votes of `analysis` should not be trusted yet, each with what to do (for
    models of `mode`, by default the analysis' own); [] when none."""
    for name, v in (("min_lift", min_lift), ("min_agreement", min_agreement),
                    ("max_flagged", max_flagged)):
        if not 0 < v < 1:
            raise ValueError(f"{name} must be in (0, 1), got {v}")
    out = []
    n = len(analysis.votes)
    if n == 0 or analysis.accuracy.empty:
        return out
    todo = advice(mode or analysis.mode)
    chance = float(analysis.votes["given_class"].value_counts(normalize=True).max())
    accuracy = float(np.average(analysis.accuracy["accuracy"], weights=analysis.accuracy["n"]))
    ceiling = noise_ceiling(analysis)
    need = chance + min_lift * max(0.0, ceiling - chance)
    if accuracy < need:
        noise = ("" if analysis.num_issues is None else
                 f" (confident learning estimates {analysis.num_issues / n:.0%} of the labels "
                 "wrong)")
        out.append(f"the models are weak: held-out accuracy {accuracy:.3f} against the given "
                   f"labels, where always guessing the largest class gets {chance:.3f} and a "
                   f"perfect model about {ceiling:.3f}{noise}; below {need:.3f} many dupes "
                   f"are the models' own mistakes. To fix: {todo}")
    agreement = analysis.agreement
    if agreement is not None and agreement < min_agreement:
        out.append(f"the models disagree: two trainings name the same class for an image "
                   f"{agreement:.0%} of the time (under {min_agreement:.0%}), so they have "
                   f"not learned the images and many dupes are their own mistakes; the top "
                   f"of the list is the most reliable part. To fix: {todo}")
    flagged = len(analysis.dupes) / n
    estimated = None if analysis.num_issues is None else analysis.num_issues / n
    if flagged > max_flagged and (estimated is None or flagged > 1.5 * estimated):
        out.append(f"{len(analysis.dupes):,} of {n:,} images ({flagged:.0%}) are flagged"
                   + ("" if estimated is None else
                      f", against an estimated {estimated:.0%} wrong labels")
                   + f": weak or mismatched models, or a low threshold, are the likelier "
                     f"cause. Review the top of the list first, or: {todo}")
    return out
