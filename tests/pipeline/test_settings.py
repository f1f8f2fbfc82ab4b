"""One settings path: `dupes sanity` checks what `dupes run` trains (real photos on disk, a
real pass on a private local Ray)."""
import re

import numpy as np
import pytest
from PIL import Image

from orchestrator.cli.main import main


def write_photos(root, per_class=24, seed=0):
    """Colour JPEGs of 80-120 px (above the CPU size cap of 64 px), two learnable classes."""
    rng = np.random.default_rng(seed)
    for c, (lo, hi) in {"dark": (0, 110), "light": (140, 255)}.items():
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            side = int(rng.integers(80, 121))
            px = rng.integers(lo, hi, (side, side + 7, 3), dtype=np.uint8)
            Image.fromarray(px).save(root / c / f"{i}.jpg", quality=90)
    return root


def rows(text: str) -> dict[str, str]:
    """{first cell: second cell} of every two-column table row printed."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 2 and cells[0]:
            out[cells[0]] = cells[1]
    return out


@pytest.mark.ray
def test_sanity_prints_the_model_size_and_hyperparameters_that_run_trains(tmp_path, capsys):
    data = write_photos(tmp_path / "photos")
    # from scratch (colour photos would get frozen features: tests/pipeline/test_frozen.py)
    assert main(["sanity", str(data), "--mode", "scratch"]) == 0
    sanity = rows(capsys.readouterr().out)
    assert main(["run", str(data), "--out", str(tmp_path / "run"), "--repeats", "1",
                 "--no-sanity", "--mode", "scratch"]) == 0
    ran = rows(capsys.readouterr().out)
    for key in ("model", "training", "epochs", "progressive", "translate", "whiten"):
        assert sanity[key] == ran[key], (key, sanity, ran)
    size = re.search(r"\d+x\d+x\d", ran["data"]).group(0)
    assert size == "64x64x3" and size in sanity["data"]  # the CPU cap, in both
    assert sanity["model"].startswith("smallcnn")  # not the ResNet-18 of a 128 px cap
