"""The embedding pass of frozen mode: every image through a pretrained backbone once, as a Ray
Data job over the image cache's shards (an actor pool: one model load per actor, GPU actors
where the cluster has GPUs), into embedding shards beside the image shards.

Embedding shard k holds the features of image shard k's rows, so a sample's features are
found exactly where its pixels are (`trainers.shards.ShardedFeatures`). Each shard is written
whole and atomically (temp + rename, or one PUT); a resumed pass embeds only the shards that
are missing, and a different backbone, size or weights file gets its own folder.
"""
from __future__ import annotations

import io
import time

import numpy as np
from rich.console import Console

from orchestrator.errors import UsageError
from orchestrator.pipeline.cluster import alive_nodes
from orchestrator.run.directory import Run
from orchestrator.run.embeddings import EmbedSpec, embedding_store, stored_features
from orchestrator.run.remote import ShardStore
from trainers.shards import ShardedFeatures

PROGRESS_S = 10.0      # seconds between progress lines
EMBED_BATCH = 32       # images per forward pass on a CPU (channels-last: measured best of 32/64)
GPU_EMBED_BATCH = 256


def embed_size(hyp_size: int, *, gpu: bool, native: int) -> int:
    """The size the backbone sees: the flag's, else its own on GPUs, EMBED_CPU_SIZE on CPUs."""
    return hyp_size or (native if gpu else EMBED_CPU_SIZE)


# A one-off experiment, not a committed benchmark (BENCHMARKS.md "Models that see"): 2,000
# CIFAR-10 test images as 64-px squares, 5% planted, heads on halves of 1,000, 2 CPU
# threads: 128 px 0.65 held-out accuracy, 160 px 0.66-0.68, 192 px 0.696, 224 px 0.683;
# the speeds are benchmarks/embed_speed.py's (138, 53 and 39 images/s at 128, 192, 224 px)
EMBED_CPU_SIZE = 192


def describe(backbone: str, size: int, weights: str | None, *, stages: bool = False
             ) -> EmbedSpec:
    """The spec of an embedding, its weights loaded strictly once here (a file that does not
    fit is refused before any actor starts: `trainers.backbones.WeightsMismatch`); `stages`
    where every part of `backbone` has stage features (else the final ones alone)."""
    from trainers.backbones import WeightsMismatch, has_stages, spec_of, weights_of
    try:
        got = weights_of(backbone, size=size, weights=weights)
    except WeightsMismatch as e:
        raise UsageError(str(e)) from None
    stages = stages and has_stages(backbone)
    return EmbedSpec(backbone, size, got.name, got.sha256,
                     spec_of(backbone, stages=stages).dim, stages)


class EmbedShards:
    """A Ray Data actor: loads the backbone once, then embeds whole image shards and writes
    each one's embedding shard (returns only counts: the features never pass the driver)."""

    def __init__(self, spec: dict, weights: str | None, images: ShardStore, out: ShardStore,
                 threads: int):
        import torch
        from trainers.backbones import feature_extractor
        if threads:
            torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.ext, _ = feature_extractor(spec["backbone"], size=spec["size"], weights=weights,
                                        device=device, stages=spec["stages"])
        self.batch = GPU_EMBED_BATCH if device == "cuda" else EMBED_BATCH
        self.images, self.out = images, out

    def __call__(self, batch: dict) -> dict:
        from trainers.backbones import embed
        done, rows, seconds = [], [], []
        for k, name, out_name in zip(batch["shard"], batch["name"], batch["out"]):
            t0 = time.perf_counter()
            pixels = np.load(self.images.local(str(name)), mmap_mode="r")
            features = embed(self.ext, pixels, batch=self.batch)
            buf = io.BytesIO()
            np.save(buf, features)
            self.out.put(str(out_name), buf.getvalue())
            done.append(int(k))
            rows.append(len(features))
            seconds.append(time.perf_counter() - t0)
        return {"shard": np.array(done), "rows": np.array(rows), "seconds": np.array(seconds)}


def pool_shape(resources: dict, nodes: int) -> tuple[int, float, float, int]:
    """(actors, CPUs per actor, GPUs per actor, torch threads per actor): one actor per GPU;
    without GPUs one per node, using all but one of its CPUs (Ray Data needs a free CPU
    beside an actor pool, ../shared notes), and one thread per CPU it has."""
    gpus = int(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    if gpus:
        per = max(1.0, min(8.0, (cpus - 1) // gpus))
        return gpus, per, 1.0, int(per)
    per_node = max(1.0, cpus / max(1, nodes))
    actor_cpus = max(1.0, per_node - 1)
    return max(1, nodes), actor_cpus, 0.0, int(per_node)


def embed_pass(run: Run, spec: EmbedSpec, weights: str | None, console: Console) -> tuple[
        ShardedFeatures, dict]:
    """Embed every image shard that has no embedding shard yet; returns the features,
    memory-mapped, and what it cost ({"embed_s", "embedded", "reused"})."""
    images, out = run.shard_store(), embedding_store(run, spec)
    names = run.shard_names()
    have = out.names()
    todo = [k for k, n in enumerate(names) if n not in have]
    t0 = time.perf_counter()
    n_images = 0
    if todo:
        import ray
        import ray.data
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        actors, cpus, gpus, threads = pool_shape(ray.cluster_resources(), alive_nodes())
        actors = min(actors, len(todo))
        console.print(f"embedding {len(todo)} of {len(names)} image shard(s) through "
                      f"{spec.backbone} at {spec.size} px on {actors} actor(s) of {cpus:g} CPU"
                      + (f" + {gpus:g} GPU" if gpus else ""), highlight=False)
        items = [{"shard": k, "name": names[k], "out": names[k]} for k in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            EmbedShards, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus, num_gpus=gpus or None,
            fn_constructor_kwargs=dict(spec={"backbone": spec.backbone, "size": spec.size,
                                             "stages": spec.stages},
                                       weights=weights, images=images, out=out,
                                       threads=threads))
        t_line, done = time.perf_counter(), 0
        for row in ds.iter_rows():
            done += 1
            n_images += int(row["rows"])
            if time.perf_counter() - t_line > PROGRESS_S:
                t_line = time.perf_counter()
                console.print(f"embedding: {done}/{len(todo)} shards, {n_images:,} images, "
                              f"{n_images / (t_line - t0):,.0f} images/s", highlight=False)
    seconds = time.perf_counter() - t0
    if todo:
        console.print(f"embedded {n_images:,} images in {seconds:.1f} s "
                      f"({n_images / max(seconds, 1e-9):,.0f} images/s)", highlight=False)
    return stored_features(run, spec, local=True)[1], {"embed_s": seconds, "embedded": n_images,
                      "reused_shards": len(names) - len(todo)}


__all__ = ["EmbedSpec", "embed_pass", "describe", "embed_size", "embedding_store",
           "pool_shape"]
