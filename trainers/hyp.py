"""Hyperparameters of one training (no torch import: the CLI and reports read them too)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

MODELS = ("auto", "smallcnn", "resnet18")


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
