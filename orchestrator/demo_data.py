"""The bundled demo dataset: scikit-learn's handwritten digits as PNG class folders, with
planted label noise whose truth is kept beside the data, so a run can be scored; and the
demo's settings (light: the CLI's flags are generated from them without Ray)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from orchestrator.config import opt
from orchestrator.run import rundir
from orchestrator.run.storage import parse_local_path
from trainers.hyp import Hyp


def write_digits(out: Path, *, noise: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Write the 1,797 digits to `out/<digit>/digit_NNNN.png`, moving a `noise` share of them
    into a wrong class folder. Returns (and writes to `out/../planted.csv`) the planted flips."""
    from sklearn.datasets import load_digits

    if not 0 <= noise < 1:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    labels = digits.target.astype(int)
    rng = np.random.default_rng(seed)
    n_flip = int(round(noise * len(labels)))
    flip = rng.choice(len(labels), size=n_flip, replace=False)
    given = labels.copy()
    # a uniformly random *other* class: offset 1..9 modulo 10
    given[flip] = (labels[flip] + rng.integers(1, 10, size=n_flip)) % 10
    out = Path(out)
    for c in range(10):
        (out / str(c)).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (img, g) in enumerate(zip(images, given)):
        rel = f"{g}/digit_{i:04d}.png"
        Image.fromarray(img, "L").save(out / rel)
        if g != labels[i]:
            rows.append({"relpath": rel, "true_class": str(labels[i]), "given_class": str(g)})
    planted = pd.DataFrame(rows, columns=["relpath", "true_class", "given_class"])
    rundir.write_csv(out.parent / "planted.csv", planted)
    return planted


# The digits are 8 px: shifts of 1 px. Flips are left to the pass's mirror check, which
# finds that a mirrored digit is another digit (or none) and turns them off.
DEMO_HYP = Hyp(translate=1)


@dataclass
class DemoSettings:
    out: Path | None = opt(None, "demo directory: data/, planted.csv and run/ go here; none: "
                           "runs/demo-<date-time>", parse=parse_local_path)
    noise: float = opt(0.05, "share of images moved to a wrong class folder", min=0)
    noise_seed: int = opt(0, "seed of the planted noise")
    review_simulate: bool = opt(False, "go on through the review loop: an automatic technician "
                                "who knows the planted truth reviews the dupes, the corrected "
                                "dataset is built, and a second round runs on it (about twice "
                                "the time)")
