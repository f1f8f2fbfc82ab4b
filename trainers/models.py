"""Models: a small fast CNN for small images, torchvision classifiers by name for larger.

No weights are downloaded unless asked for (`pretrained`), and `weights` loads a local file,
so offline clusters and tests never touch the network.
"""
from __future__ import annotations

import torch
from torch import nn

from trainers.hyp import MODELS, is_timm

WHITEN_K = 2  # px: airbench's whitening patch
SMALL_IMAGE_MAX = 64  # px: up to this size the small CNN is both faster and as accurate
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.GELU())


class SmallCNN(nn.Module):
    """A small fast net in the spirit of the fastest CIFAR-10 trainers (airbench): conv-BN-GELU
    blocks, two 2x poolings, global average pooling, a linear head.

    Pooling twice keeps enough resolution for 8-px images (8 -> 2) yet stays cheap on 64-px
    ones; global pooling makes it independent of the input size. A residual block at the
    widest level was measured on the digits (20 epochs, width 32, 1 CPU thread): 1.8x slower
    and less accurate (0.973 vs 0.981 held-out), so there is none. With `whiten` it starts
    with airbench's whitening layer, set from the data by `init_whitening` before training.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, stem_pool: int = 1,
                 whiten: bool = False):
        super().__init__()
        w = width
        # an average-pooling stem looks at large images at 1/stem_pool of their size: the
        # cheapest model that still sees every image (measured throughput in BENCHMARKS.md)
        stem = [nn.AvgPool2d(stem_pool)] if stem_pool > 1 else []
        # airbench's whitening layer: 2x2 filters set from the data by `init_whitening` and
        # never trained (their bias is), both signs of each so GELU drops no direction. It
        # trims a pixel: 8-px digits end at 1 px after the poolings, and their held-out
        # accuracy fell from 0.97 to 0.1-0.7, hence the sized defaults use it from 24 px only
        # (padding it back cost 28% of a CIFAR-10 training's time)
        white = 2 * WHITEN_K ** 2 * in_channels
        first = [nn.Conv2d(in_channels, white, WHITEN_K), nn.GELU(), conv_bn(white, w)] \
            if whiten else [conv_bn(in_channels, w)]
        self._whiten_at = len(stem) if whiten else None
        self.features = nn.Sequential(
            *stem, *first, conv_bn(w, w), nn.MaxPool2d(2),
            conv_bn(w, 2 * w), nn.MaxPool2d(2), conv_bn(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * w, num_classes)

    @property
    def whiten(self) -> nn.Conv2d | None:
        """The whitening layer, if the net has one."""
        return None if self._whiten_at is None else self.features[self._whiten_at]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def init_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Sets the whitening filters from `x` (training images, normalised, N C H W) and
        freezes them: the eigenvectors of the 2x2 patch covariance over 1/sqrt(eigenvalue
        + eps), so the layer's outputs are decorrelated at unit variance (airbench)."""
        with torch.no_grad():
            x = self.features[:self._whiten_at](x)  # the filters see what the layer will
        c, k = x.shape[1], WHITEN_K
        patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5)
        flat = patches.reshape(-1, c * k * k).float()
        values, vectors = torch.linalg.eigh(flat.T @ flat / len(flat))
        scale = (values.clamp_min(0) + eps).rsqrt().view(-1, 1, 1, 1)
        filters = vectors.T.reshape(-1, c, k, k) * scale
        with torch.no_grad():
            self.whiten.weight.copy_(torch.cat([filters, -filters]))
        self.whiten.weight.requires_grad_(False)


class GrayToRGB(nn.Module):
    """Feeds 1-channel images to a 3-channel backbone (and to its pretrained first layer)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)


def resolve_model(name: str, image_size: int) -> str:
    if name == "auto":
        return "smallcnn" if image_size <= SMALL_IMAGE_MAX else "resnet18"
    if name not in MODELS and not is_timm(name):
        raise ValueError(f"invalid model {name!r}: valid choices are {MODELS}, or timm:NAME")
    return name


def last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """(parent module, attribute name, layer) of the classifier: the model's last Linear."""
    found = None
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found = (parent, child_name, child)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no Linear layer to use as the classifier")
    return found


def make_model(name: str, *, in_channels: int, num_classes: int, image_size: int,
               width: int = 32, pretrained: bool = False, weights: str | None = None,
               stem_pool: int = 1, whiten: bool = False) -> nn.Module:
    """A model with a fresh `num_classes` head.

    `pretrained` loads torchvision's default weights for `name` (downloads them unless they
    are in torch's cache); `weights` loads a local state dict instead (offline clusters);
    either way the classifier is replaced by a new one.
    """
    name = resolve_model(name, image_size)
    if name == "smallcnn":
        model = SmallCNN(in_channels, num_classes, width, stem_pool, whiten)
        if weights:
            _load_weights(model, weights)
        return model
    import torchvision

    from trainers.backbones import LITES, build
    if name in LITES or is_timm(name) or (pretrained and not weights):
        # the package's or the hub's weights, loaded strictly (backbones.WeightsMismatch)
        model, _ = build(name, size=image_size, weights=weights,
                         pretrained=pretrained or bool(weights))
    else:
        model = torchvision.models.get_model(name, weights=None)
        if weights:
            _load_weights(model, weights)
    parent, attr, head = last_linear(model)
    setattr(parent, attr, nn.Linear(head.in_features, num_classes))
    return GrayToRGB(model) if in_channels == 1 else model


def classifier_prefix(model: nn.Module) -> str:
    """The state-dict prefix of the model's classifier (its last Linear), e.g. 'fc.'."""
    _, _, layer = last_linear(model)
    return next(f"{n}." for n, m in model.named_modules() if m is layer)


def _load_weights(model: nn.Module, path: str) -> None:
    """Every tensor but the classifier from `path`, or WeightsMismatch with the counts."""
    from trainers.backbones import load_strict, read_state
    load_strict(model, read_state(path), classifier=(classifier_prefix(model),), source=path)


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(last_linear(model)[2].parameters())
