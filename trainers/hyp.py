"""Hyperparameters of one training (no torch import: the CLI and reports read them too)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# any torchvision classifier works by name; these are the ones documented and tested
MODELS = ("auto", "smallcnn", "resnet18", "resnet50", "efficientnet_b0", "convnext_tiny",
          "vit_b_16")


@dataclass(frozen=True)
class Hyp:
    """Hyperparameters of one training."""

    model: str = "auto"            # smallcnn (<= 64 px), resnet18 (larger), or auto
    width: int = 32                # channels of the small CNN's first block
    epochs: int = 20               # passes over the training half
    batch_size: int = 128          # images per optimizer step
    lr: float = 0.05               # peak of the one-cycle learning rate (SGD, Nesterov)
    momentum: float = 0.9
    weight_decay: float = 5e-4     # L2 per step, applied to conv and linear weights
    label_smoothing: float = 0.0   # training loss only; held-out loss is plain cross-entropy
    mixup: float = 0.0             # alpha of the Beta(alpha, alpha) mixing weight; 0 = off
    flip: bool = True              # random left-right mirror
    translate: int = 2             # max random shift in px (reflect padding)
    tta: bool = True               # held-out predictions average the image and its mirror
                                   #   (only when flip is on: a mirrored digit is another digit)
    progressive: float = 0.0       # progressive resizing: first epochs at this fraction of the
                                   #   size, full size from 75% of training; 0 = off
    crop_scale: float = 0.35       # random-resized-crop min area for images > 64 px; 0 = off
    pretrained: bool = False       # torchvision's ImageNet weights (downloaded once)
    weights: str | None = None     # local weights file instead (offline clusters)
    backbone_lr: float = 0.1       # with pretrained/weights: backbone LR = lr x this
    compile: bool = False          # torch.compile the model (pays off on GPU, long trainings)
    eval_batch_size: int = 1024    # images per held-out prediction batch

    @classmethod
    def from_dict(cls, d: dict) -> "Hyp":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown hyperparameters {unknown}: valid names are {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)
