"""Models: a small fast CNN for small images, torchvision ResNet-18 for larger ones."""
from __future__ import annotations

import torch
from torch import nn

from trainers.hyp import MODELS

SMALL_IMAGE_MAX = 64  # px: up to this size the small CNN is both faster and as accurate


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.GELU())


class SmallCNN(nn.Module):
    """Four conv-BN-GELU blocks, two 2x poolings, global average pooling, a linear head.

    Pooling twice keeps enough resolution for 8-px images (8 -> 2) yet stays cheap on 64-px
    ones; global pooling makes it independent of the input size.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(in_channels, w), conv_bn(w, w), nn.MaxPool2d(2),
            conv_bn(w, 2 * w), nn.MaxPool2d(2), conv_bn(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resolve_model(name: str, image_size: int) -> str:
    if name not in MODELS:
        raise ValueError(f"invalid model {name!r}: valid choices are {MODELS}")
    if name == "auto":
        return "smallcnn" if image_size <= SMALL_IMAGE_MAX else "resnet18"
    return name


def make_model(name: str, *, in_channels: int, num_classes: int, image_size: int,
               width: int = 32) -> nn.Module:
    """Build a freshly initialised model (no pretrained weights are downloaded)."""
    name = resolve_model(name, image_size)
    if name == "smallcnn":
        return SmallCNN(in_channels, num_classes, width)
    from torchvision.models import resnet18
    model = resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model
