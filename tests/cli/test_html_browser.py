"""The HTML report in a real headless browser (Debian's chromium), via the screenshot script."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.cli.main import main
from tests.conftest import write_digit_dataset

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="no chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    data = write_digit_dataset(tmp_path / "data", classes=(0, 1, 7), per_class=30)
    run = tmp_path / "run"
    assert main(["run", str(data), "--out", str(run), "--repeats", "2", "--no-sanity",
                 "--epochs", "4", "--width", "8", "--batch-size", "16", "--no-flip",
                 "--threshold", ">=1", "--min-ratio", "0"]) == 0
    assert (run / "report.html").is_file()  # every run writes it
    shot = tmp_path / "shot.png"
    res = subprocess.run([str(ROOT / "scripts" / "screenshot_report.sh"), str(run / "report.html"),
                          str(shot), "1000x1400"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (1400, 1000)
    # a rendered page: mostly white background with text and thumbnails, not a blank or
    # error page
    assert (img > 240).mean() > 0.5 and (img < 100).mean() > 0.005
