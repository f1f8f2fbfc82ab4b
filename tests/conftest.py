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


# The fast lane (`pytest -m "not ray"`) leaves out every test that starts Ray: those marked
# `ray` here, or by hand. A test is marked when its source, or the source of a fixture it
# uses, starts a pass or Ray (a CLI command that trains, ray.init, a subprocess running one);
# a test marked by mistake only makes the fast lane shorter.
_STARTS_RAY = ("ray.", '"run"', "'run'", '"demo"', '"tune"', "run_pass", "subprocess",
               "ray_start", "Cluster(", "bad_pass", "finished_run", "run_data")


def _starts_ray(source: str) -> bool:
    return any(s in source for s in _STARTS_RAY)


def pytest_collection_modifyitems(config, items):
    import inspect

    for item in items:
        if item.get_closest_marker("slow") or item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.ray)
            continue
        sources = [inspect.getsource(item.function)]
        for name in getattr(item, "fixturenames", ()):
            defs = item.session._fixturemanager.getfixturedefs(name, item)
            for d in defs or ():
                try:
                    sources.append(inspect.getsource(d.func))
                except (OSError, TypeError):
                    pass
        if any(_starts_ray(s) for s in sources):
            item.add_marker(pytest.mark.ray)


# A crash of the whole test process (SIGSEGV, seen in CI near the disk-full tests) must say
# where it happened. There, pytest's own faulthandler printed nothing; the suspect is Ray's
# fatal-signal handler, installed by ray.init in this process, whose output the fd capture
# would swallow. So before every test Python's handler is installed again, writing to the
# real stderr.
_REAL_STDERR = None


@pytest.fixture(autouse=True)
def _crash_traceback(request):
    import faulthandler
    import os

    global _REAL_STDERR
    if _REAL_STDERR is None:
        capman = request.config.pluginmanager.getplugin("capturemanager")
        err = getattr(getattr(capman, "_global_capturing", None), "err", None)
        fd = getattr(err, "targetfd_save", None)
        _REAL_STDERR = os.fdopen(os.dup(fd if fd is not None else 2), "w")
    faulthandler.enable(file=_REAL_STDERR, all_threads=True)
    yield
