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
    stages: bool = False  # the stage features beside the final ones (runs before them: off)

    @property
    def key(self) -> str:
        """The embedding folder's name: another backbone, size, weights or choice of
        features never reuses it (a resumed run never mixes widths)."""
        return f"{self.backbone}-{self.size}px-{self.sha256[:12]}" + (
            "-stages" if self.stages else "")


def embedding_store(run, spec: EmbedSpec) -> ShardStore:
    root = run.remote.uri if run.remote else run.path
    return ShardStore(storage.child(storage.child(root, "embeddings"), spec.key))


def stored_features(run, spec: EmbedSpec, *, local: bool = False
                    ) -> tuple[ShardStore, ShardedFeatures]:
    """The embedding store and the features in it, memory-mapped here with `local` (a
    bucket's shards copied to this node), else by shard name, to be located on each node
    (as `Run.images`)."""
    out = embedding_store(run, spec)
    p = run.placement()
    names = run.shard_names()
    return out, ShardedFeatures([out.local(n) for n in names] if local else names,
                                p["shard"].to_numpy(), p["row"].to_numpy())
