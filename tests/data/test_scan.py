import hashlib

import numpy as np
import pytest
from PIL import Image

from orchestrator.data.scan import ScanError, scan_dataset
from tests.conftest import tree_hash


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "data"
    for c in ("cat", "dog"):
        (root / c / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / "cat/a.png")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "cat/b.jpg")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "dog/c.png")
    Image.fromarray(rng.integers(0, 65535, (16, 16), dtype=np.uint16)).save(root / "dog/sub/d.png")
    (root / "dog/empty.png").write_bytes(b"")
    (root / "dog/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "dog/notes.txt").write_text("hello")
    (root / "stray.png").write_bytes((root / "dog/c.png").read_bytes())
    (root / ".hidden").mkdir()
    return root


def test_bad_files_are_skipped_with_reasons_and_source_untouched(messy):
    before = tree_hash(messy)
    scan = scan_dataset(messy, image_size=12)
    assert tree_hash(messy) == before
    assert scan.index["relpath"].tolist() == ["cat/a.png", "cat/b.jpg", "dog/c.png", "dog/sub/d.png"]
    assert scan.classes == ["cat", "dog"]
    assert scan.index["label"].tolist() == [0, 0, 1, 1]
    reasons = dict(zip(scan.skipped["relpath"], scan.skipped["reason"]))
    assert set(reasons) == {"dog/empty.png", "dog/broken.png", "dog/notes.txt", "stray.png"}
    assert "empty file" in reasons["dog/empty.png"]
    assert "cannot decode" in reasons["dog/broken.png"]
    assert "not an image" in reasons["dog/notes.txt"]
    assert "class folder" in reasons["stray.png"]
    # one pass decodes everything to the training size; gray is promoted to RGB beside color
    assert scan.images.shape == (4, 12, 12, 3) and scan.images.dtype == np.uint8
    sha = hashlib.sha1((messy / "cat/a.png").read_bytes()).hexdigest()
    assert scan.index.loc[0, "sha1"] == sha
    assert scan.index.loc[0, "bytes"] == (messy / "cat/a.png").stat().st_size
    # the 16-bit image is scaled into 8 bits by its range (clipping would make it ~all 255)
    assert 80 < scan.images[3].mean() < 180


def test_small_class_is_an_error_naming_it(messy):
    (messy / "owl").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(messy / "owl/only.png")
    with pytest.raises(ScanError, match="'owl' \\(1 usable\\).*--min-per-class"):
        scan_dataset(messy, image_size=8)
    scan = scan_dataset(messy, image_size=8, min_per_class=2)
    assert scan.classes == ["cat", "dog"] and scan.dropped_classes == {"owl": 1}
    assert "class dropped" in dict(zip(scan.skipped["relpath"], scan.skipped["reason"]))["owl/only.png"]


def test_grayscale_dataset_stays_one_channel_and_auto_size(digit_data):
    scan = scan_dataset(digit_data)
    assert scan.images.shape == (90, 8, 8, 1)
    assert len(scan.skipped) == 0


def test_missing_or_flat_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ScanError, match="does not exist"):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat/a.png").write_bytes(b"")
    with pytest.raises(ScanError, match="no class sub-folders"):
        scan_dataset(tmp_path / "flat")
