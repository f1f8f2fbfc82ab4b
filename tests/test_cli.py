"""CLI errors: bad input exits 2 with a message naming the file or folder and the fix."""
import pytest
from PIL import Image
import numpy as np

from orchestrator.cli import get_args_parser, main


def test_missing_dataset_and_missing_arguments(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().out
    assert main(["run"]) == 2
    assert "--resume" in capsys.readouterr().out
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2


def test_class_too_small_is_named(tmp_path, capsys):
    for c, n in (("ok", 3), ("lonely", 1)):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(tmp_path / "data" / c / f"{i}.png")
    assert main(["run", str(tmp_path / "data"), "--out", str(tmp_path / "r")]) == 2
    out = capsys.readouterr().out
    assert "'lonely' (1 usable)" in out and "--min-per-class" in out


@pytest.mark.parametrize("argv", [["run", "d", "--repeats", "0"], ["run", "d", "--epochs", "-1"],
                                  ["run", "d", "--threshold", "lots"], ["run", "d", "--split", "x"]])
def test_invalid_flags_are_refused_by_the_parser(argv):
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(argv)
