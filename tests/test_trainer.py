import numpy as np
import pytest
import torch

from trainers.augment import batch_flip, batch_translate
from trainers.hyp import Hyp
from trainers.models import make_model, resolve_model
from trainers.train import train


def test_training_learns_digits_and_predicts_only_the_held_out_half():
    from sklearn.datasets import load_digits
    d = load_digits()
    keep = np.flatnonzero(d.target < 4)[:400]
    images = np.round(d.images[keep] * (255 / 16)).astype(np.uint8)[..., None]
    labels = d.target[keep]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(keep))
    tr, ev = perm[:200], perm[200:]
    out = train(Hyp(epochs=8, batch_size=32, flip=False, translate=1, width=16), images, labels, tr, ev, seed=0)
    assert out.probs.shape == (200, 4) and out.pred.shape == (200,) and out.loss.shape == (200,)
    np.testing.assert_allclose(out.probs.sum(1), 1, atol=1e-4)
    assert (out.pred == labels[ev]).mean() > 0.9  # chance is 0.25
    # the held-out loss is plain cross-entropy against the given labels
    np.testing.assert_allclose(out.loss, -np.log(out.probs[np.arange(200), labels[ev]]),
                               rtol=1e-3, atol=1e-4)
    again = train(Hyp(epochs=8, batch_size=32, flip=False, translate=1, width=16), images, labels, tr, ev, seed=0)
    np.testing.assert_allclose(again.probs, out.probs, atol=1e-5)  # seeded: reproducible


def test_hyp_rejects_unknown_names():
    with pytest.raises(ValueError, match="valid names"):
        Hyp.from_dict({"epochs": 3, "learning_rate": 0.1})
    assert Hyp.from_dict(Hyp(epochs=3).to_dict()) == Hyp(epochs=3)


def test_models_by_size():
    assert resolve_model("auto", 32) == "smallcnn" and resolve_model("auto", 128) == "resnet18"
    with pytest.raises(ValueError, match="valid choices"):
        resolve_model("vgg", 32)
    m = make_model("resnet18", in_channels=1, num_classes=3, image_size=96)
    assert m(torch.zeros(2, 1, 96, 96)).shape == (2, 3)


def test_augmentations_move_pixels_but_keep_content():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    t = batch_translate(x, 2, g)
    assert t.shape == x.shape and not torch.equal(t, x)
    assert torch.equal(batch_translate(x, 0, g), x)
    f = batch_flip(x.repeat(64, 1, 1, 1), g)
    flipped = (f == x.repeat(64, 1, 1, 1).flip(3)).flatten(1).all(1)
    same = (f == x.repeat(64, 1, 1, 1)).flatten(1).all(1)
    assert (flipped | same).all() and 0 < flipped.sum() < 128
