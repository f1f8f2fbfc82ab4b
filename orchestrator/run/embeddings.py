"""A run's embeddings (frozen mode) as stored data: which backbone, size and weights made them
(`EmbedSpec`), the folder they live in, and the features by shard. No Ray and no torch: the
reports read them (the neighbour score) as they read the image cache."""
from __future__ import annotations

from dataclasses import dataclass

from orchestrator.run import storage
from orchestrator.run.remote import ShardStore
from trainers.shards import ShardedFeatures


@dataclass(frozen=True)
class EmbedSpec:
    """What the embeddings are of: recorded in config.json and the report."""

    backbone: str
    size: int          # px the backbone saw
    weights: str       # the weights' file, package or hub entry
    sha256: str
    dim: int

    @property
    def key(self) -> str:
        """The embedding folder's name: another backbone, size or weights never reuses it."""
        return f"{self.backbone}-{self.size}px-{self.sha256[:12]}"


def embedding_store(run, spec: EmbedSpec) -> ShardStore:
    root = run.remote.uri if run.remote else run.path
    return ShardStore(storage.child(storage.child(root, "embeddings"), spec.key))


def features_for_workers(run, spec: EmbedSpec) -> tuple[ShardStore, ShardedFeatures]:
    """The embedding store and the features by shard name, to be located on each node."""
    out = embedding_store(run, spec)
    p = run.placement()
    return out, ShardedFeatures(run.shard_names(), p["shard"].to_numpy(), p["row"].to_numpy())
