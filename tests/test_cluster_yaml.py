"""cluster.yaml passes Ray's own cluster-launcher validation (and a broken one does not)."""
import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config
    cfg = prepare_config(copy.deepcopy(cfg))
    validate_config(cfg)
    return cfg


def test_cluster_yaml_is_valid():
    cfg = validate(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    assert set(cfg["available_node_types"]) == {"head", "gpu_worker"}
    assert "pip install -e ~/dupes" in " ".join(cfg["setup_commands"])


def test_validator_rejects_a_broken_config():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["head_node_type"] = "no_such_type"
    with pytest.raises(Exception):
        validate(cfg)
