"""Whether a run's votes can be trusted: a gate in front of the dupes list.

Votes mean something only when the models that cast them are good: with held-out accuracy near
chance, most images collect wrong votes and the dupes are mostly the models' own errors. A weak
run says so first, with what to do, instead of handing a technician hundreds of false alarms.
"""
from __future__ import annotations

import numpy as np

from analysis.run_analysis import Analysis

# held-out accuracy must be at least this share of the way from chance to perfect
MIN_LIFT = 0.5
# more than this share of all images flagged is far above any label noise worth reviewing
MAX_FLAGGED = 0.15
FIXES = ("start from a pretrained backbone (--mode frozen, or --mode finetune), train longer "
         "(--epochs, or --budget), search the hyperparameters (dupes tune), or use a larger "
         "--image-size")


def quality_warnings(analysis: Analysis, *, min_lift: float = MIN_LIFT,
                     max_flagged: float = MAX_FLAGGED) -> list[str]:
    """Reasons the votes of `analysis` should not be trusted yet, each with what to do; []
    when none."""
    if not 0 < min_lift < 1 or not 0 < max_flagged < 1:
        raise ValueError(f"min_lift and max_flagged must be in (0, 1), got {min_lift}, "
                         f"{max_flagged}")
    out = []
    n = len(analysis.votes)
    if n == 0 or analysis.accuracy.empty:
        return out
    chance = float(analysis.votes["given_class"].value_counts(normalize=True).max())
    accuracy = float(np.average(analysis.accuracy["accuracy"], weights=analysis.accuracy["n"]))
    need = chance + min_lift * (1 - chance)
    if accuracy < need:
        out.append(f"the models are weak: held-out accuracy {accuracy:.3f} against the given "
                   f"labels, where always guessing the largest class gets {chance:.3f}; below "
                   f"{need:.3f} most votes are the models' own mistakes. To fix: {FIXES}")
    flagged = len(analysis.dupes) / n
    if flagged > max_flagged:
        out.append(f"{len(analysis.dupes):,} of {n:,} images ({flagged:.0%}) are flagged: far "
                   f"more than the wrong labels of a curated dataset, so weak or mismatched "
                   f"models are the likelier cause. Review the top of the list first, or: {FIXES}")
    return out
