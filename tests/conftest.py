import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def tree_hash(root: Path) -> dict[str, str]:
    """relpath -> sha1 of every file under root (to prove a dataset was not modified)."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_digit_dataset(root: Path, classes=(0, 1, 7), per_class: int = 30) -> Path:
    """Real PNG class folders from scikit-learn's digits (a few classes, easy to learn)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    for c in classes:
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        idx = np.flatnonzero(d.target == c)[:per_class]
        for i in idx:
            img = np.round(d.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(img, "L").save(root / str(c) / f"d{i:04d}.png")
    return root


def write_noise_dataset(root: Path, classes=("a", "b", "c"), per_class: int = 40) -> Path:
    """Class folders of random 8 px images: nothing to learn, so labels cannot be followed."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def digit_data(tmp_path) -> Path:
    return write_digit_dataset(tmp_path / "data")
