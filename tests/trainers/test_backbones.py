"""Pretrained backbones: the offline EfficientNet-Lite0 weights give the reference
implementation's ImageNet logits, and a weights file that does not fit is refused with counts."""
import numpy as np
import pytest
import torch

from trainers.backbones import (LITE0, LITE_ENSEMBLE, WeightsMismatch, build, embed,
                                feature_extractor, package_weights, spec_of,
                                weights_of)
from trainers.heads import train_head
from trainers.hyp import Hyp


@pytest.mark.parametrize("name", [LITE0, "efficientnet_lite2"])
def test_lite_weights_give_the_reference_implementations_imagenet_logits(name):
    from efficientnet_lite_pytorch import EfficientNet
    ref = EfficientNet.from_pretrained(name.replace("_", "-"),
                                       weights_path=str(package_weights(name))).eval()
    size = spec_of(name).size  # the reference's 'same' padding is fixed for its own size
    ours, got = build(name, size=size)
    ours.eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ref(x) - ours(x)).abs().max().item()
    assert diff <= 1e-4, diff
    assert len(got.sha256) == 64 and got.name.endswith(".pth")


def test_a_weights_file_of_another_architecture_is_refused_with_the_counts(tmp_path):
    import torchvision
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet.pt")
    with pytest.raises(WeightsMismatch, match=r"0 of \d+ tensors fit, \d+ missing"):
        build(LITE0, size=128, weights=str(tmp_path / "resnet.pt"))
    # one tensor of the wrong shape is enough to refuse the whole file
    state = torch.load(package_weights(LITE0), weights_only=True)
    state["_conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(WeightsMismatch, match="1 of the wrong shape"):
        build(LITE0, size=128, weights=str(tmp_path / "cut.pt"))


def test_features_and_a_head_separate_two_colour_classes():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 90, (20, 40, 40, 3), dtype=np.uint8)
    light = rng.integers(160, 255, (20, 40, 40, 3), dtype=np.uint8)
    images, labels = np.concatenate([dark, light]), np.repeat([0, 1], 20)
    ext, _ = feature_extractor(LITE0, size=64)
    features = embed(ext, images, batch=16)
    assert features.shape == (40, 1280) and features.dtype == np.float16
    assert np.isfinite(features.astype(np.float32)).all()
    order = rng.permutation(40)
    held = train_head(Hyp(), features, labels, order[:20], order[20:], seed=0, num_classes=2)
    assert (held.pred == labels[order[20:]]).mean() == 1.0
    assert held.probs.shape == (20, 2) and np.allclose(held.probs.sum(1), 1, atol=1e-5)


def test_an_ensemble_concatenates_its_backbones_features_and_records_both_weights():
    images = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    ext, got = feature_extractor(LITE_ENSEMBLE, size=64)
    parts = [feature_extractor(name, size=64) for name in LITE_ENSEMBLE.split("+")]
    features = embed(ext, images)
    assert features.shape == (3, 2560)
    np.testing.assert_array_equal(features, np.concatenate([embed(e, images) for e, _ in parts], 1))
    assert got.name == "+".join(w.name for _, w in parts) and len(got.sha256) == 64
    assert got not in [w for _, w in parts] and weights_of(LITE_ENSEMBLE, size=64) == got
    with pytest.raises(ValueError, match="frozen features only"):
        build(LITE_ENSEMBLE, size=64)
    with pytest.raises(WeightsMismatch, match="--weights gives one file"):
        weights_of(LITE_ENSEMBLE, size=64, weights=str(package_weights(LITE0)))


def test_stage_features_follow_the_final_ones_from_the_same_forward_pass():
    from orchestrator.run.embeddings import EmbedSpec
    images = np.random.default_rng(2).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    plain, _ = feature_extractor(LITE_ENSEMBLE, size=64)
    staged, _ = feature_extractor(LITE_ENSEMBLE, size=64, stages=True)
    a, b = embed(plain, images).astype(np.float32), embed(staged, images).astype(np.float32)
    assert b.shape == (3, spec_of(LITE_ENSEMBLE, stages=True).dim) == (3, 1280 + 624 + 1280 + 680)
    # Lite0's final features, then its 3 stages', then Lite2's: the finals are unchanged
    np.testing.assert_array_equal(b[:, :1280], a[:, :1280])
    np.testing.assert_array_equal(b[:, 1904:1904 + 1280], a[:, 1280:])
    assert np.abs(b[:, 1280:1904]).sum() > 0
    # a run recorded before stage features resumes into its own folder, never mixing widths
    old = {"backbone": LITE_ENSEMBLE, "size": 192, "weights": "w", "sha256": "ab" * 32,
           "dim": 2560}
    assert EmbedSpec(**old).key != EmbedSpec(**{**old, "dim": 3864, "stages": True}).key


def test_the_backbones_known_by_name_are_the_specs():
    from trainers import hyp
    from trainers.backbones import SPECS
    assert set(hyp.BACKBONES) == set(SPECS)  # the CLI's validation and the specs agree


def test_backbone_names_take_any_ensemble_and_timm_models_and_list_the_valid_forms():
    from trainers.hyp import backbone_name, model_name
    for ok in ("auto", "efficientnet_lite1+efficientnet_lite2", "timm:resnet18",
               "timm:vit_small_patch14_dinov2.lvd142m", "timm:convnext_atto+efficientnet_lite0"):
        assert backbone_name(ok) == ok
        Hyp(backbone=ok, model=ok).check()  # a run recorded with it loads again
    with pytest.raises(ValueError, match="valid choices are auto, efficientnet_lite0.*timm:NAME"):
        backbone_name("resnet9")
    with pytest.raises(ValueError, match="unknown timm model 'not_a_model'"):
        backbone_name("timm:not_a_model")
    with pytest.raises(ValueError, match=r"unknown timm model 'resnet18\.bogus'"):
        backbone_name("timm:resnet18.bogus")  # a known model with a tag timm does not know
    assert model_name("vit_b_16") == "vit_b_16" and model_name("smallcnn") == "smallcnn"
    with pytest.raises(ValueError, match=r"invalid hyperparameters: backbone='timm:nope'"):
        Hyp(backbone="timm:nope").check()


def test_a_timm_backbone_takes_its_config_and_a_local_file_strictly(tmp_path):
    """Any timm model by name: size and statistics from its pretrained config, features as
    timm computes them before its classifier (a ViT at a size that is not its own nor a
    whole number of its patches), weights
    from a local file (.pt or .safetensors), and a file for another architecture refused."""
    import timm
    from safetensors.torch import save_file
    name = "timm:vit_tiny_patch16_224"
    spec = spec_of(name)
    assert (spec.size, spec.mean, spec.dim, spec.classifier) == (224, (0.5,) * 3, 192, ("head.",))
    ref = timm.create_model("vit_tiny_patch16_224", dynamic_img_size=True,
                            dynamic_img_pad=True).eval()
    torch.save(ref.state_dict(), tmp_path / "vit.pt")
    save_file(ref.state_dict(), str(tmp_path / "vit.safetensors"))
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), np.uint8)
    for file in ("vit.pt", "vit.safetensors"):
        # 72 px: not a whole number of 16-px patches (DINOv2's 14-px ones at 192 px neither)
        ext, got = feature_extractor(name, size=72, weights=str(tmp_path / file))
        features = embed(ext, images)
        with torch.inference_mode():
            x = ext.prepare(torch.from_numpy(images))
            want = ref.forward_head(ref.forward_features(x), pre_logits=True).numpy()
        assert features.shape == (3, 192)
        np.testing.assert_allclose(features.astype(np.float32), want, atol=5e-3, rtol=5e-3)
        assert got.name == file and len(got.sha256) == 64
    with pytest.raises(WeightsMismatch, match=r"0 of \d+ tensors fit, \d+ missing"):
        build("timm:resnet18", size=64, weights=str(tmp_path / "vit.pt"))


def test_a_timm_backbone_without_network_names_the_offline_fix(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as with no network
    with pytest.raises(WeightsMismatch, match="give --weights PATH"):
        build("timm:resnet18", size=64)
