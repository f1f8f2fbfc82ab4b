"""The plan of a pass: durations, the estimate, fitting a --budget, the ETA, the plan table."""
from dataclasses import replace

import pytest
from rich.console import Console

from analysis.report import format_duration
from orchestrator.config import parse_duration
from orchestrator.pipeline.cluster import Slots
from orchestrator.pipeline.plan import (FIXED_S, MAX_EPOCHS, MIN_EPOCHS, SIDE_BY_SIDE, BudgetError,
                                        DataShape, Probe, make_plan, plan_table,
                                        progressive_factor, training_seconds)
from orchestrator.pipeline.progress import eta_seconds
from orchestrator.run.records import TrainingState
from trainers.hyp import Hyp

RATES = Probe(train_rate=1000.0, predict_rate=4000.0, seconds=2.0, images=512)


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("10m", 600),
                                           ("2h", 7200), ("1h30m", 5400), ("1.5m", 90),
                                           (" 3M ", 180)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-5m", "10x", "m", "5m10", "nan", "1e3",
                                  "10 minutes"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_a_training_costs_its_epochs_and_its_predictions():
    hyp = Hyp(epochs=10, progressive=0.0, flip=False)
    # 10,000 images: 10 epochs of 5,000 at 1,000/s, and 5,000 predicted at 4,000/s at the end
    # and after epochs 5 (every 5th, the last excepted)
    assert training_seconds(hyp, 10_000, RATES, epoch_losses=5) == pytest.approx(50 + 2 * 1.25)
    assert training_seconds(hyp, 10_000, RATES, epoch_losses=0) == pytest.approx(50 + 1.25)
    # test-time views multiply the final prediction: the mirror, and two shifted copies
    assert training_seconds(replace(hyp, flip=True, tta=True, tta_shift=1), 10_000, RATES,
                            epoch_losses=5) == pytest.approx(50 + (4 + 1) * 1.25)
    assert 0.5 < progressive_factor(0.5) < 0.8 and progressive_factor(0) == 1.0


def _plan(image_size=28, slots=2, **kw):
    args = dict(data_mode="auto", trainings=20, rates=RATES, epoch_losses=0)
    data = DataShape(n_images=10_000, n_classes=10, image_size=image_size, channels=1,
                     aspect="pad")
    plan = make_plan(Hyp(epochs=20), data=data, slots=Slots(slots, 1.0, 0.0), **{**args, **kw})
    return plan, plan.hyp


def test_the_plan_resolves_the_model_and_estimates_waves_of_trainings():
    plan, hyp = _plan()
    assert hyp.model == plan.model == "smallcnn" and hyp.epochs == 20
    assert plan.estimate_s == pytest.approx(10 * plan.training_s + FIXED_S)
    assert _plan(image_size=96)[0].model == "resnet18"
    assert _plan(slots=20)[0].estimate_s == pytest.approx(plan.training_s + FIXED_S)
    # trainings side by side are slower than the probe's training alone
    alone = _plan(slots=1)[0]
    assert alone.training_s == pytest.approx(training_seconds(hyp, 10_000, RATES, 0))
    assert plan.training_s == pytest.approx(SIDE_BY_SIDE * alone.training_s)


def test_a_budget_picks_the_most_epochs_that_fit_or_refuses_with_what_would():
    plan, hyp = _plan(budget_s=600)
    assert MIN_EPOCHS <= hyp.epochs < 20 and plan.epochs == hyp.epochs
    assert plan.estimate_s <= 600
    longer, _ = _plan(budget_s=1200)
    assert longer.epochs > plan.epochs
    assert "fit the budget of 10.0 min" in plan.budget_note
    assert _plan(budget_s=10 ** 7)[0].epochs == MAX_EPOCHS
    with pytest.raises(BudgetError, match="cannot be met.*Give --budget"):
        _plan(budget_s=30)
    # what is already spent (the scan) and the sanity check count against the budget
    assert _plan(budget_s=600, spent_s=200)[0].epochs < plan.epochs
    assert _plan(budget_s=600, sanity=True)[0].epochs <= plan.epochs


def test_eta_uses_the_plan_until_trainings_finish_then_their_measured_time():
    items = [(r, f) for r in range(2) for f in (0, 1)]
    assert eta_seconds(items, {}, slots=2, planned_s=10.0) == pytest.approx(20.0)
    half = {(0, 0): TrainingState("running", epoch=5, epochs=10)}
    assert eta_seconds(items, half, slots=2, planned_s=10.0) == pytest.approx(17.5)
    done = {(0, 0): TrainingState("done", seconds=30.0), (0, 1): TrainingState("failed")}
    assert eta_seconds(items, done, slots=2, planned_s=10.0) == pytest.approx(30.0)
    assert eta_seconds(items, {}, slots=2, planned_s=None) is None


def test_the_plan_table_names_model_estimate_and_budget():
    plan, _ = _plan(budget_s=600)
    console = Console(record=True, width=140)
    console.print(plan_table(plan.to_dict()))
    text = console.export_text()
    for part in ("smallcnn", f"{plan.epochs} epochs", "2 at a time", "1,000 training images/s",
                 f"about {format_duration(plan.estimate_s)}", "fit the budget"):
        assert part in text, text
    assert format_duration(5) == "5.0 s" and format_duration(600) == "10.0 min"
    assert format_duration(7500) == "2 h 05 min"


def test_defaults_follow_the_data_and_keep_what_was_given():
    from orchestrator.pipeline.settings import SEEN_PER_TRAINING, SIZED_EPOCHS, sized_defaults

    data = dict(n_images=10_000, image_size=28, channels=1, gpu=False)
    hyp, chosen = sized_defaults(Hyp(), given=[], **data)
    assert hyp.epochs == SEEN_PER_TRAINING // 5_000 and hyp.width == 16
    assert hyp.progressive == 0.5 and set(chosen) >= {"epochs", "width", "lr", "progressive"}
    assert chosen["epochs"].startswith(f"{hyp.epochs}: ")
    # what a flag set stays, and is not reported as chosen
    kept, chosen = sized_defaults(Hyp(width=48, epochs=3), given=["width", "epochs"], **data)
    assert (kept.width, kept.epochs) == (48, 3) and not {"width", "epochs"} & set(chosen)
    # tiny and huge datasets: the epochs stay within bounds; small images: no resizing
    assert sized_defaults(Hyp(), given=[], **{**data, "n_images": 200})[0].epochs == SIZED_EPOCHS[1]
    assert sized_defaults(Hyp(), given=[], **{**data, "n_images": 10**7})[0].epochs == \
        SIZED_EPOCHS[0]
    assert sized_defaults(Hyp(), given=[], **{**data, "image_size": 8})[0].progressive == 0
    # shifts of 1 px up to 32 px (measured), and 1-px shifted views at prediction
    assert (hyp.translate, hyp.tta_shift) == (1, 1)
    assert sized_defaults(Hyp(), given=[], **{**data, "image_size": 48})[0].translate == 2
    # airbench's whitening layer from 24 px: it trims a pixel, too many for 8-px digits
    assert hyp.whiten and chosen["whiten"].startswith("on: ")
    small, why = sized_defaults(Hyp(), given=[], **{**data, "image_size": 8})
    assert not small.whiten and why["whiten"].startswith("off: 8 px images, under 24")
    # measured on CPUs only: a GPU cluster or a torchvision model keeps the defaults
    assert sized_defaults(Hyp(), given=[], **{**data, "gpu": True}) == (Hyp(), {})
    assert sized_defaults(Hyp(), given=[], **{**data, "image_size": 96}) == (Hyp(), {})


def test_the_plan_table_says_what_was_chosen_and_why():
    plan, _ = _plan(chosen={"flip": "off: mirroring changes the labels (...)"})
    console = Console(record=True, width=200)
    console.print(plan_table(plan.to_dict()))
    text = console.export_text()
    assert "flip" in text and "off: mirroring changes the labels" in text


def test_a_frozen_plan_estimates_the_embedding_and_the_heads_or_refuses_a_budget():
    from orchestrator.pipeline.plan import make_frozen_plan
    data = DataShape(n_images=10_000, n_classes=10, image_size=32, channels=3, aspect="squash")
    rates = Probe(train_rate=50.0, predict_rate=2_000.0, seconds=3.0, images=64)
    embedding = {"backbone": "efficientnet_lite0", "size": 192, "weights": "w.pth",
                 "sha256": "ab" * 32, "dim": 1280}
    plan = make_frozen_plan(Hyp(mode="frozen", embed_size=192), data=data,
                            slots=Slots(2, 1.0, 0.0), trainings=20, rates=rates,
                            embedding=embedding, embed_todo=1.0, actors=1)
    assert plan.embed_s == pytest.approx(200.0)  # 10,000 images at 50/s on one actor
    assert plan.training_s == pytest.approx(5.0 * SIDE_BY_SIDE)
    assert plan.estimate_s == pytest.approx(200.0 + 10 * 5.0 * SIDE_BY_SIDE + FIXED_S)
    resumed = make_frozen_plan(Hyp(mode="frozen"), data=data, slots=Slots(2, 1.0, 0.0),
                               trainings=4, rates=rates, embedding=embedding, embed_todo=0.0,
                               actors=1)
    assert resumed.embed_s == 0.0  # every shard embedded already
    console = Console(record=True, width=160)
    console.print(plan_table(plan.to_dict()))
    text = console.export_text()
    assert "frozen efficientnet_lite0 features at 192 px" in text and "embedding" in text
    with pytest.raises(BudgetError, match="embedding 10,000 images"):
        make_frozen_plan(Hyp(mode="frozen"), data=data, slots=Slots(2, 1.0, 0.0),
                         trainings=20, rates=rates, embedding=embedding, embed_todo=1.0,
                         actors=1, budget_s=60.0)


def test_the_embedding_pool_takes_one_actor_per_gpu_or_per_node():
    from orchestrator.pipeline.embed import pool_shape
    assert pool_shape({"CPU": 2.0}, 1) == (1, 1.0, 0.0, 2)  # a free CPU beside the actor
    assert pool_shape({"CPU": 64.0}, 4) == (4, 15.0, 0.0, 16)
    assert pool_shape({"CPU": 32.0, "GPU": 4.0}, 1) == (4, 7.0, 1.0, 7)
