"""The neighbour score: label agreement among the nearest neighbours in embedding space, never
counting the image itself or its exact duplicates."""
import numpy as np
import pytest

from analysis.neighbours import nearest, neighbour_agreement


def clusters(n_per=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16) * 10
    x = np.concatenate([c + rng.normal(0, 0.5, (n_per, 16)) for c in centres])
    return x.astype(np.float32), np.repeat([0, 1, 2], n_per)


def test_a_mislabelled_point_disagrees_with_its_neighbours():
    x, labels = clusters()
    labels = labels.copy()
    labels[5] = 2  # a cluster-0 point labelled 2
    score = neighbour_agreement(x, labels, k=5)
    assert score[5] == 0.0
    assert np.delete(score, 5).min() >= 0.8


def test_self_and_exact_duplicates_are_never_neighbours():
    x, labels = clusters()
    labels = labels.copy()
    labels[5] = 2
    # three exact copies of the wrong image, all labelled 2 as well: with them counted, its
    # own copies would vouch for the wrong label
    x = np.concatenate([x, x[[5, 5, 5]]])
    labels = np.concatenate([labels, [2, 2, 2]])
    sha1 = np.array([f"h{i}" for i in range(len(x))], dtype=object)
    sha1[[5, 60, 61, 62]] = "same"
    idx = nearest(x, k=5, sha1=sha1)
    assert not (idx == np.arange(len(x))[:, None]).any()
    for i in (5, 60, 61, 62):
        assert not np.isin(idx[i], [5, 60, 61, 62]).any()
    assert neighbour_agreement(x, labels, k=5, sha1=sha1)[5] == 0.0
    assert neighbour_agreement(x, labels, k=5)[5] >= 0.6  # without sha1: the copies vouch


APPROX = """
import numpy as np
from analysis.neighbours import neighbour_agreement
from tests.analysis.test_neighbours import clusters
x, labels = clusters(n_per=200)
exact = neighbour_agreement(x, labels, k=10)
approx = neighbour_agreement(x, labels, k=10, exact_max=100)
print(float(np.abs(exact - approx).mean()))
"""


def test_the_approximate_index_agrees_with_exact_search():
    # in a child process: faiss brings its own OpenMP runtime, which this test process (torch's
    # runtime already loaded by other tests) should not have to share
    import subprocess
    import sys
    from pathlib import Path
    pytest.importorskip("faiss")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", APPROX], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) < 0.02


def test_bad_inputs_name_the_problem():
    x, labels = clusters()
    with pytest.raises(ValueError, match="one row per label"):
        neighbour_agreement(x[:10], labels)
    with pytest.raises(ValueError, match="k must be"):
        neighbour_agreement(x, labels, k=0)
