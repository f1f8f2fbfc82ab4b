import pytest

from orchestrator.config import RunConfig
from orchestrator.pipeline.cluster import ResourceError, plan_resources


def cfg(**kw):
    return RunConfig(data_dir="d", run_dir="r", **kw)


def test_cpu_slots_leave_one_cpu_for_the_writer():
    assert plan_resources(cfg(), {"CPU": 3}, 20) == (2, 1.0, 0.0)
    assert plan_resources(cfg(cpus_per_training=2), {"CPU": 9}, 20) == (4, 2.0, 0.0)
    assert plan_resources(cfg(), {"CPU": 17}, 3) == (3, 1.0, 0.0)  # never more than trainings


def test_gpus_are_used_when_present_and_can_be_packed():
    assert plan_resources(cfg(), {"CPU": 16, "GPU": 1}, 20) == (1, 15.0, 1.0)
    assert plan_resources(cfg(gpus_per_training=0.5), {"CPU": 16, "GPU": 2}, 20) == (4, 3.0, 0.5)
    assert plan_resources(cfg(gpus_per_training=0), {"CPU": 5, "GPU": 1}, 20) == (4, 1.0, 0.0)


def test_impossible_requests_name_the_flag():
    with pytest.raises(ResourceError, match="--gpus-per-training"):
        plan_resources(cfg(gpus_per_training=1), {"CPU": 4}, 20)
    with pytest.raises(ResourceError, match="--cpus-per-training"):
        plan_resources(cfg(cpus_per_training=4), {"CPU": 3}, 20)


def test_custom_resources_per_training_limit_the_slots():
    c = cfg(resources_per_training={"trainer_node": 1})
    assert plan_resources(c, {"CPU": 9, "trainer_node": 2}, 20) == (2, 1.0, 0.0)
    with pytest.raises(ResourceError, match="trainer_node.*ray start --resources"):
        plan_resources(c, {"CPU": 9}, 20)


@pytest.mark.parametrize("text", ['{"CPU": 1}', "[1]", '{"x": -1}', "{x"])
def test_resources_flag_refuses_bad_json(text, capsys):
    from orchestrator.cli.main import main
    with pytest.raises(SystemExit):
        main(["run", "d", "--resources-per-training", text])
    assert "--resources-per-training" in capsys.readouterr().err
