"""Preflight checks before 20 trainings are spent on a broken setup.

Three questions, each with the likely cause when the answer is no:
1. Do the inputs look like images (not blank, not constant, sensible sizes and balance)?
2. Can the model overfit one small batch (loss near zero)? If not, the optimisation is broken:
   a zero or tiny learning rate, a model that cannot see the input, a dead pipeline.
3. Does a short training beat chance on held-out images? Memorising one batch does not need
   real labels; generalising does, so shuffled or meaningless labels fail here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from trainers.hyp import Hyp


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    cause: str = ""      # the likely cause when not ok
    warning: bool = False  # a doubt, not a failure
    value: float | None = None  # what was measured, where one number says it (an accuracy)


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok or c.warning for c in self.checks)


def input_checks(images: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[Check]:
    """Statistics of the decoded images and of the labels."""
    out = []
    x = images.astype(np.float32) / 255.0
    per_image_std = x.reshape(len(x), -1).std(1)
    blank = float((per_image_std < 1e-3).mean())
    mean, std = float(x.mean()), float(x.std())
    out.append(Check("input statistics", std > 0.02 and blank < 0.5,
                     f"pixel mean {mean:.3f}, std {std:.3f}; {blank:.1%} of images are uniform",
                     "most images are blank or constant: check the decoding (16-bit images, "
                     "alpha-only PNGs) or the export that produced them"))
    counts = np.bincount(labels, minlength=len(classes))
    ratio = counts.max() / max(counts.min(), 1)
    smallest = classes[int(np.argmin(counts))]
    out.append(Check("label balance", ratio <= 20, f"{len(classes)} classes, {counts.min()} to "
                     f"{counts.max()} images per class (ratio {ratio:.1f})",
                     f"class '{smallest}' is {ratio:.0f}x smaller than the largest: its images "
                     "will be flagged often; consider merging or adding images", warning=True))
    size = images.shape[1]
    out.append(Check("image size", size >= 8, f"training size {size}x{size} px, "
                     f"{images.shape[3]} channel(s)",
                     "images under 8 px carry too little to classify: pass a larger "
                     "--image-size"))
    return out


OVERFIT_BATCH, OVERFIT_EPOCHS = 32, 60  # the overfit check: images, epochs


def overfit_check(images, labels, hyp: Hyp, *, batch: int = OVERFIT_BATCH,
                  epochs: int = OVERFIT_EPOCHS, seed: int = 0, device: str = "cpu") -> Check:
    """Train on one small balanced batch without augmentation: the loss must fall near zero."""
    from trainers.train import train

    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:max(1, batch // (
        labels.max() + 1))] for c in np.unique(labels)])[:batch]
    losses = []
    h = replace(hyp, epochs=epochs, batch_size=len(idx), flip=False, translate=0, mixup=0.0,
                label_smoothing=0.0, progressive=0.0, crop_scale=0.0, tta=False)
    train(h, images, labels, idx, idx, seed=seed, device=device,
          on_epoch=lambda info: losses.append(info.train_loss))
    first, last = losses[0], min(losses[-5:])
    ok = last < 0.1 * max(first, 1e-6) and last < 0.2
    return Check("overfit one batch", ok, f"training loss {first:.3f} -> {last:.4f} on "
                 f"{len(idx)} images in {epochs} epochs",
                 "the model cannot even memorise one batch: the learning rate is zero or far "
                 "too small, or the inputs carry no signal (all images identical?)")


MIN_STEPS = 60    # optimizer steps of the learnability check's short training, at least
MAX_EPOCHS = 100  # ... and at most this many epochs to get them


BASELINE_PX = 32  # the baseline of a failed check: the small CNN on images this size at most
# Under this many held-out images a short training that stays near chance says nothing about
# the labels: 200 CIFAR-10 photos with right labels failed the check (100 held out)
SMALL_HELDOUT = 250


def learnability_size(n_images: int, image_size: int, hyp: Hyp, *, n: int = 2000
                      ) -> tuple[int, int]:
    """(images, epochs) of the learnability check's short training on `n_images` images: a
    sample of up to `n` (400 for images above 64 px), half trained on; a few epochs, but
    enough optimizer steps: a tiny dataset (30 training images, batches of 128) would
    otherwise get 8 steps and fail for want of training, not of labels."""
    if image_size > 64:
        n = min(n, 400)  # large images train slowly on a CPU head node: a smaller sample
    n = min(n, n_images)
    steps_per_epoch = max(1, -(-(n // 2) // hyp.batch_size))
    return n, min(MAX_EPOCHS, max(4, min(hyp.epochs, 8), -(-MIN_STEPS // steps_per_epoch)))


def baseline_hyp(hyp: Hyp) -> Hyp:
    """What the baseline trains: the small CNN with the default optimisation, keeping the
    augmentation and batch the user chose (they say what keeps a label)."""
    return Hyp(model="smallcnn", flip=hyp.flip, translate=hyp.translate,
               batch_size=hyp.batch_size, tta=hyp.tta)


def _smaller(images: np.ndarray, px: int) -> np.ndarray:
    """uint8 N x H x W x C images at most `px` on a side (area averaging)."""
    import torch

    if images.shape[1] <= px:
        return images
    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(px, px), mode="area")
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def learnability_check(images, labels, hyp: Hyp, *, n: int = 2000, epochs: int | None = None,
                       seed: int = 0, device: str = "cpu", baseline: bool = True) -> Check:
    """A short training on a small split must beat the majority class on held-out images.

    When it does not, the same check runs once more with `baseline_hyp` on images of at most
    BASELINE_PX: if that beats chance, the labels do follow the images and the chosen model
    or settings are what failed (too weak or too slow for this data here), which is a
    warning with what to change, not a verdict on the labels."""
    from trainers.train import train

    rng = np.random.default_rng(seed)
    n, auto_epochs = learnability_size(len(labels), images.shape[1], hyp, n=n)
    pick = rng.permutation(len(labels))[:n]
    half = len(pick) // 2
    tr, ev = pick[:half], pick[half:]
    h = replace(hyp, epochs=epochs or auto_epochs)
    out = train(h, images, labels, tr, ev, seed=seed, device=device)
    acc = float((out.pred == labels[ev]).mean())
    chance = float(np.bincount(labels[ev]).max() / len(ev))
    need = chance + 0.5 * (1 - chance) * 0.5  # a quarter of the way from chance to perfect
    check = Check("beats chance", acc >= need, f"held-out accuracy {acc:.3f} after {h.epochs} "
                  f"epochs on {len(tr)} images (majority class {chance:.3f}, needed "
                  f"{need:.3f})", "the labels do not follow the images: a shuffled or wrong "
                  "label column, classes that are not visually distinct, or a learning rate "
                  "far too high", value=acc)
    if check.ok or not baseline:
        return check
    small = _smaller(np.asarray(images), BASELINE_PX)
    base = None
    if not (baseline_hyp(hyp) == hyp and small.shape == images.shape):
        base = learnability_check(small, labels, baseline_hyp(hyp), n=n, seed=seed,
                                  device=device, baseline=False)
        if base.ok:
            return Check("beats chance", False, check.detail + f"; the small CNN at "
                         f"{small.shape[1]} px does ({base.detail.split(' after')[0]})",
                         f"the labels do follow the images (the small CNN with default "
                         f"settings at {small.shape[1]} px learns them), but this model and "
                         "these settings did not in a short training: too weak or too slow "
                         "for this data on this hardware. Try --model smallcnn, a smaller "
                         "--image-size, --pretrained, or more epochs (--budget); the run goes "
                         "on", warning=True)
        check.detail += (f"; the small CNN at {small.shape[1]} px did not either "
                         f"({base.detail})")
    # Below a quarter of the way, but far above what labels that do not follow the images
    # could reach by luck: hard classes and a short training (CIFAR-10 photos: 0.28 with
    # 1,000 images and 8 epochs, chance 0.11), not a broken label column.
    best = max(acc, base.value if base else 0.0)
    luck = chance + max(0.05, 4 * float(np.sqrt(chance * (1 - chance) / len(ev))))
    if best < luck:
        # a training from scratch on a small sample can stay near chance with right labels;
        # a logistic regression on pretrained features learns from a few hundred images
        features = feature_baseline(images, labels, tr, ev, seed=seed, device=device)
        if features is not None:
            if features >= luck:
                return Check("beats chance", False, check.detail + f"; a logistic regression "
                             f"on pretrained features reaches {features:.3f}",
                             "the labels do follow the images (a head on pretrained features "
                             "learns them), but training from scratch did not on so few "
                             "images: --mode frozen suits this data; the run goes on",
                             warning=True, value=acc)
            check.detail += f"; nor a head on pretrained features ({features:.3f})"
            return check
        if len(ev) < SMALL_HELDOUT:
            return Check("beats chance", False, check.detail + f"; {len(ev)} held-out "
                         "images are too few to tell", "too few images to judge the labels: "
                         f"a short training on {len(tr)} images can stay near chance with "
                         "right labels (a new user's 200 CIFAR-10 photos did). The run goes "
                         "on; the report says first if the votes cannot be trusted",
                         warning=True, value=acc)
    if best >= luck:
        return Check("beats chance", False, check.detail + f"; far above chance (luck would "
                     f"reach {luck:.3f})", "the labels do follow the images (far above "
                     "chance), but the models learn them slowly: hard classes, few images or "
                     "a short training. The run goes on; more epochs (--budget), "
                     "--pretrained or `dupes tune` make the votes more trustworthy, and the "
                     "report says first if they cannot be trusted", warning=True)
    return check


def feature_baseline(images, labels, tr, ev, *, seed: int = 0, device: str = "cpu",
                     size: int = 128) -> float | None:
    """Held-out accuracy of a logistic regression on frozen pretrained features (the
    offline EfficientNet-Lite0 at `size` px) trained on `tr`, or None where no weights are
    installed. A few seconds for a few hundred images on a CPU."""
    from trainers.backbones import LITE0, embed, feature_extractor, weights_available
    from trainers.heads import train_head

    if not weights_available(LITE0):
        return None
    ext, _ = feature_extractor(LITE0, size=size, device=device)
    idx = np.concatenate([tr, ev])
    feats = np.zeros((len(labels), ext.spec.dim), np.float16)
    feats[idx] = embed(ext, np.asarray(images)[idx])
    # a few hundred images: the L2 a pass gives halves under 500 images (BENCHMARKS.md); one
    # fit: a witness of whether the labels follow the images, not a detector
    out = train_head(Hyp(mode="frozen", head_l2=300.0, head_prune=False), feats,
                     np.asarray(labels), tr, ev, seed=seed,
                     num_classes=int(np.max(labels)) + 1, device=device)
    return float((out.pred == np.asarray(labels)[ev]).mean())


# Whether mirroring keeps the labels, from a model trained without flips: the share of its
# above-chance held-out accuracy it keeps on the mirrored held-out images. Measured with
# `mirror_check` (3 seeds each, `benchmarks/mirror_check.py`, BENCHMARKS.md): the digits
# 0.19-0.31, MNIST 0.35-0.41, Fashion-MNIST 0.77-0.83 (its shoes all point left: mirrored
# ones are new to the model), CIFAR-10 0.98-1.00. Flips help only data without a preferred
# orientation, so they need the photos' "as well as the originals".
MIRROR_KEEPS = 0.9
MIRROR_MIN_SKILL = 0.15  # above-chance accuracy below which the check cannot tell
MIRROR_SAMPLE, MIRROR_EPOCHS, MIRROR_BATCH = 2048, 4, 32


@dataclass
class Mirror:
    """What `mirror_check` measured, and its decision."""

    accuracy: float           # held-out accuracy of a model trained without flips
    mirrored_accuracy: float  # the same model on the same images mirrored
    chance: float             # the most common class's share of the held-out images
    seconds: float

    @property
    def kept(self) -> float:
        skill = self.accuracy - self.chance
        return (self.mirrored_accuracy - self.chance) / skill if skill > 0 else 0.0

    def decision(self) -> tuple[bool, str]:
        """(flip, why): flips only where mirrored images keep their labels; when the check's
        model is too weak to tell, none (a flip that changes labels teaches wrong ones; one
        left out only costs a little accuracy)."""
        measured = (f"a model trained without flips: held-out accuracy {self.accuracy:.2f}, "
                    f"{self.mirrored_accuracy:.2f} on the same images mirrored, chance "
                    f"{self.chance:.2f}")
        if self.accuracy - self.chance < MIRROR_MIN_SKILL:
            return False, f"off: undecided, the check's model is too weak to tell ({measured})"
        if self.kept >= MIRROR_KEEPS:
            return True, f"on: mirroring keeps the labels ({measured})"
        return False, f"off: mirroring changes the labels or their look ({measured})"


def mirror_check(images, labels, *, seed: int = 0, device: str = "cpu") -> Mirror:
    """Train the small CNN without flips on half of a sample (at most BASELINE_PX px: the
    mirror symmetry of a class shows at any size) and predict the other half as it is and
    mirrored. A few seconds on one CPU core."""
    import time

    from trainers.train import train

    t0 = time.perf_counter()
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(labels))[:MIRROR_SAMPLE])
    small, lab = _smaller(np.asarray(images)[pick], BASELINE_PX), labels[pick]
    n = len(lab)
    halves = rng.permutation(n)
    tr, ev = np.sort(halves[:n // 2]), np.sort(halves[n // 2:])
    both = np.concatenate([small, small[ev, :, ::-1]])  # mirrored held-out images appended
    h = Hyp(model="smallcnn", width=16, lr=0.2, epochs=MIRROR_EPOCHS, batch_size=MIRROR_BATCH,
            flip=False, translate=1)
    out = train(h, both, np.concatenate([lab, lab[ev]]), tr,
                np.concatenate([ev, n + np.arange(len(ev))]), seed=seed, device=device)
    right = out.pred == np.concatenate([lab[ev], lab[ev]])
    return Mirror(float(right[:len(ev)].mean()), float(right[len(ev):].mean()),
                  float(np.bincount(lab[ev]).max() / max(1, len(ev))),
                  time.perf_counter() - t0)


def sanity(images: np.ndarray, labels: np.ndarray, classes: list[str], hyp: Hyp, *,
           device: str = "cpu", seed: int = 0) -> Verdict:
    """All checks; the training checks are skipped when the inputs are already broken."""
    v = Verdict(input_checks(images, labels, classes))
    if not v.ok:
        return v
    v.checks.append(overfit_check(images, labels, hyp, seed=seed, device=device))
    if v.checks[-1].ok:
        v.checks.append(learnability_check(images, labels, hyp, seed=seed, device=device))
    return v
