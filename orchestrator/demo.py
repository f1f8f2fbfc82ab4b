"""The bundled demo dataset: scikit-learn's handwritten digits as PNG class folders, with
planted label noise whose truth is kept beside the data, so a run can be scored."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from orchestrator import rundir


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
