"""The mode `auto` resolves to, the aspect that goes with it, and flags that do not apply to
the resolved training (reported, never silently ignored)."""
from dataclasses import replace

import pytest

from orchestrator.pipeline.settings import (aspect_for, ignored_flags, resolve_hyperparameters,
                                            resolve_mode)
from trainers.hyp import Hyp


def test_auto_chooses_frozen_for_colour_and_scratch_for_small_gray_images():
    colour, why = resolve_mode(Hyp(), given=(), image_size=64, channels=3, gpu=False)
    assert colour.mode == "frozen" and "colour" in why["mode"]
    gray, why = resolve_mode(Hyp(), given=(), image_size=28, channels=1, gpu=False)
    assert gray.mode == "scratch" and "gray" in why["mode"]
    large, _ = resolve_mode(Hyp(), given=(), image_size=128, channels=1, gpu=True)
    assert large.mode == "frozen"
    forced, why = resolve_mode(Hyp(mode="scratch"), given=("mode",), image_size=64,
                               channels=3, gpu=False)
    assert forced.mode == "scratch" and why == {}
    assert aspect_for(Hyp(), gpu=False)(64, 3) == "squash"
    assert aspect_for(Hyp(), gpu=False)(28, 1) == "pad"


def test_fine_tuning_trains_the_backbone_from_its_weights():
    hyp, _ = resolve_hyperparameters(Hyp(mode="finetune"), given=("mode",), n_images=100,
                                     image_size=64, channels=3, gpu=False)
    assert hyp.model == "efficientnet_lite0" and hyp.pretrained


def test_flags_for_another_kind_of_training_are_named():
    frozen = Hyp(mode="frozen")
    assert ignored_flags(frozen, ["epochs", "lr", "head_l2"]) == ["--epochs", "--lr"]
    scratch = replace(Hyp(mode="scratch"), model="smallcnn")
    assert ignored_flags(scratch, ["pretrained", "head_l2", "width"]) == ["--head-l2",
                                                                        "--pretrained"]
    resnet = replace(Hyp(mode="scratch"), model="resnet18")
    assert ignored_flags(resnet, ["pretrained", "width"]) == ["--width"]


def test_a_forced_mode_without_weights_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="gone.pt: no such file"):
        resolve_mode(Hyp(mode="frozen", weights=str(tmp_path / "gone.pt")), given=(),
                     image_size=64, channels=3, gpu=False)


def test_pretrained_on_small_gray_images_fine_tunes_instead_of_being_ignored():
    hyp, why = resolve_hyperparameters(Hyp(pretrained=True), given=("pretrained",),
                                       n_images=100, image_size=28, channels=1, gpu=False)
    assert hyp.mode == "finetune" and hyp.model == "efficientnet_lite0"
    assert "--pretrained asks for a pretrained start" in why["mode"]
    resnet, _ = resolve_hyperparameters(Hyp(pretrained=True, model="resnet18"),
                                        given=("pretrained", "model"), n_images=100,
                                        image_size=28, channels=1, gpu=False)
    assert resnet.mode == "finetune" and resnet.model == "resnet18"
    # colour images: frozen features start from the pretrained weights already
    colour, _ = resolve_hyperparameters(Hyp(pretrained=True), given=("pretrained",),
                                        n_images=100, image_size=64, channels=3, gpu=False)
    assert colour.mode == "frozen"


def test_frozen_features_default_to_the_lite_ensemble_and_fine_tuning_to_lite0():
    colour, why = resolve_mode(Hyp(), given=(), image_size=64, channels=3, gpu=False)
    assert colour.backbone == "efficientnet_lite0+efficientnet_lite2"
    assert why["backbone"].startswith("efficientnet_lite0+efficientnet_lite2: ")
    tuned, _ = resolve_hyperparameters(Hyp(mode="finetune"), given=("mode",), n_images=100,
                                       image_size=64, channels=3, gpu=False)
    assert tuned.backbone == tuned.model == "efficientnet_lite0"
    one, why = resolve_mode(Hyp(backbone="efficientnet_lite2"), given=("backbone",),
                            image_size=64, channels=3, gpu=False)
    assert one.mode == "frozen" and one.backbone == "efficientnet_lite2" and "backbone" not in why


def test_an_ensemble_refuses_fine_tuning_and_a_single_weights_file(tmp_path):
    ensemble = "efficientnet_lite0+efficientnet_lite2"
    with pytest.raises(ValueError, match="ensemble: frozen features only"):
        resolve_mode(Hyp(mode="finetune", backbone=ensemble), given=("mode", "backbone"),
                     image_size=64, channels=3, gpu=False)
    (tmp_path / "w.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="--weights gives one file"):
        resolve_mode(Hyp(mode="frozen", backbone=ensemble, weights=str(tmp_path / "w.pt")),
                     given=("mode", "backbone", "weights"), image_size=64, channels=3, gpu=False)
    with pytest.raises(ValueError, match="--model efficientnet_lite0\\+efficientnet_lite2 is an "
                                         "ensemble"):
        resolve_hyperparameters(Hyp(mode="scratch", model=ensemble), given=("mode", "model"),
                                n_images=100, image_size=64, channels=3, gpu=False)


def head_setting(name: str, n: int, **given) -> tuple:
    """A colour pass's frozen-head setting `name` over `n` images, `given` as flags, and why
    the pass chose it ("" when a flag did)."""
    hyp, why = resolve_hyperparameters(Hyp(**given), given=tuple(given), n_images=n,
                                       image_size=64, channels=3, gpu=False)
    return getattr(hyp, name), why.get(name, "")


def test_the_heads_l2_follows_the_size_of_a_training_half_unless_a_flag_sets_it():
    small, why = head_setting("head_l2", 400)
    assert small == 300 and "halves of 200 images, under 500" in why
    large, why = head_setting("head_l2", 10_000)
    assert large == 1000 and "halves of 5,000" in why
    assert head_setting("head_l2", 400, head_l2=50.0) == (50.0, "")


def test_heads_are_pruned_from_halves_of_1000_images_unless_a_flag_says():
    small, why = head_setting("head_prune", 1_998)
    assert not small and why.startswith("off: heads on halves of 999 images, under 1,000")
    large, why = head_setting("head_prune", 2_000)
    assert large and why.startswith("on: heads on halves of 1,000 images")
    assert head_setting("head_prune", 400, head_prune=True) == (True, "")
    assert head_setting("head_prune", 10_000, head_prune=False) == (False, "")


def test_a_hub_backbone_named_on_the_command_line_is_not_traded_for_the_small_cnn():
    # not in any cache here: auto keeps it (the pass downloads it, or says how to get it
    # offline) rather than training the small CNN the user did not ask for
    for name in ("timm:resnet18", "resnet50"):
        hyp, _ = resolve_mode(Hyp(backbone=name), given=("backbone",), image_size=64,
                              channels=3, gpu=False)
        assert hyp.mode == "frozen" and hyp.backbone == name
