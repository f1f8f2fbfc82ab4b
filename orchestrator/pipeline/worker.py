"""The per-worker loop that Ray Train runs: take a training from the board, train, hand back."""
from __future__ import annotations

import os
import time
import traceback
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray
import torch
from ray.train import get_context

from analysis.confident import confident_thresholds, thresholds_json
from orchestrator.run.records import Item
from orchestrator.run.remote import ShardStore
from trainers.data import choose_mode, make_feed
from trainers.hyp import Hyp
from trainers.heads import train_head
from trainers.shards import ShardedFeatures, ShardedImages
from trainers.train import train


@dataclass
class WorkerConfig:
    """What every Ray Train worker gets (`train_loop_config={"worker": WorkerConfig(...)}`)."""

    board: object                   # the Board actor handle
    images: ShardedImages           # the image cache by shard name (located on each node)
    store: ShardStore               # where the shards are
    folds: list                     # [ObjectRef of the repeats x N fold table] (not resolved)
    labels: np.ndarray              # given label per sample
    hyp: Hyp
    train_seed: int
    threads: int = 1                # torch threads per worker
    record_every: int = 0           # held-out metrics every k-th epoch; 0 = off
    data_mode: str = "auto"         # resident, streamed, or auto (trainers.data.choose_mode)
    device_share: float = 0.0       # GPUs per training (0: CPU, shared by the node's workers)
    num_classes: int = 0            # classes of the dataset (a head's outputs)
    inject_failure: str | None = None  # fault injection for tests (DUPES_INJECT_FAILURE)
    features: ShardedFeatures | None = None  # frozen mode: the embeddings by shard name
    feature_store: ShardStore | None = None  # ... and where they are


def prediction_table(sample_id: np.ndarray, label: np.ndarray, pred: np.ndarray,
                     loss: np.ndarray, probs: np.ndarray) -> pa.Table:
    """The held-out predictions of one training (repeat and fold are its partition)."""
    n, c = probs.shape
    return pa.table({
        "sample_id": pa.array(sample_id, pa.int64()),
        "label": pa.array(label, pa.int16()),
        "pred": pa.array(pred, pa.int16()),
        "loss": pa.array(loss, pa.float32()),
        "probs": pa.FixedSizeListArray.from_arrays(
            pa.array(probs.reshape(-1), pa.float32()), c),
    })


def epoch_table(sample_id: np.ndarray, record) -> pa.Table:
    """Held-out loss, margin and class of every epoch of one training (an `EpochRecord`)."""
    e, n = record.loss.shape
    return pa.table({
        "sample_id": pa.array(np.tile(sample_id, e), pa.int64()),
        "epoch": pa.array(np.repeat(record.epoch, n), pa.int16()),
        "loss": pa.array(record.loss.reshape(-1), pa.float32()),
        "margin": pa.array(record.margin.reshape(-1), pa.float32()),
        "pred": pa.array(record.pred.reshape(-1), pa.int16()),
    })


def top_losses(sample_id: np.ndarray, losses: np.ndarray | None, k: int = 12) -> list:
    """The `k` largest held-out losses as [(sample_id, loss)], for the live progress."""
    if losses is None or not len(losses):
        return []
    top = np.argsort(-losses)[:k]
    return [(int(sample_id[i]), float(losses[i])) for i in top]


def training_seed(train_seed: int, repeat: int, fold: int) -> int:
    """Training randomness of one training, independent of the split seed."""
    ss = np.random.SeedSequence([int(train_seed), int(repeat), int(fold), 0x7EA1])
    return int(ss.generate_state(1)[0])


def worker_loop(config: dict) -> dict:
    """Ray Train `train_loop_per_worker`: work through trainings until the board is empty.

    A training that raises is recorded on the board and the loop goes on: 19 finished
    trainings are never lost to the 20th.
    """
    cfg: WorkerConfig = config["worker"]
    board = cfg.board
    ctx = get_context()
    rank = ctx.get_world_rank()
    worker = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    generation = ray.get(board.join.remote(rank, worker, ctx.get_world_size()))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device()
    labels = np.asarray(cfg.labels)
    folds = ray.get(cfg.folds[0])          # repeats x N, int8
    share = cfg.device_share if device.type == "cuda" \
        else 1.0 / max(1, ctx.get_local_world_size())
    if cfg.features is not None:  # frozen mode: heads on the embeddings (memory-mapped)
        f = cfg.features
        features = ShardedFeatures([cfg.feature_store.local(n) for n in f.paths], f.shard_of,
                                   f.row_of)
        # what a resident head holds: its training half as float32
        half_bytes = (len(labels) - len(labels) // 2) * features.dim * 4
        streamed = choose_mode(cfg.data_mode, half_bytes, device, share=share) == "streamed"
        mode = "features, " + ("streamed" if streamed else "resident")
    else:
        images = ShardedImages([cfg.store.local(n) for n in cfg.images.paths],
                               cfg.images.shard_of, cfg.images.row_of)
        mode = choose_mode(cfg.data_mode, images.nbytes, device, share=share)
        feed = make_feed(images, device, mode=mode, seed=rank)  # resident: to the device once
    done = 0
    while (item := ray.get(board.next.remote(worker))) is not None:
        repeat, fold = item
        t_item = time.perf_counter()
        try:
            _inject_failure(cfg.inject_failure, repeat, fold, generation)
            held = np.flatnonzero(folds[repeat] == fold)
            trained = np.flatnonzero(folds[repeat] != fold)
            seed = training_seed(cfg.train_seed, repeat, fold)
            if cfg.features is not None:
                out = train_head(cfg.hyp, features, labels, trained, held, seed=seed,
                                 num_classes=cfg.num_classes, device=device,
                                 streamed=streamed)
            else:
                out = train(cfg.hyp, feed, labels, trained, held, seed=seed, device=device,
                            record_every=cfg.record_every,
                            on_epoch=lambda info, held=held: _report_epoch(
                                board, item, info, top_losses(held, info.heldout_losses)))
            table = prediction_table(held, labels[held], out.pred, out.loss, out.probs)
            epochs = epoch_table(held, out.epochs) if out.epochs is not None else None
            # the training's wall in this worker (what a budget is spent on), not its compute
            metrics = {"seconds": time.perf_counter() - t_item,
                       "train_accuracy": out.train_accuracy,
                       "heldout_accuracy": float((out.pred == labels[held]).mean()),
                       "n_heldout": int(len(held)), "worker": worker, "data_mode": mode}
            if out.left_out is not None:  # a pruned head
                metrics["left_out"] = out.left_out
            # confident learning's per-class thresholds of these predictions: with them the
            # analysis tests each prediction row alone, in its one streamed read
            metrics["cl_thresholds"] = thresholds_json(confident_thresholds(
                labels[held], out.probs, out.probs.shape[1]))
            ray.get(board.finish.remote(worker, item, table, metrics, epochs))
            done += 1
        except StopRequested:
            break  # not recorded: a resume trains it again
        except Exception:
            ray.get(board.fail.remote(worker, item, traceback.format_exc(limit=20)))
    return {"worker": worker, "trainings": done}


class StopRequested(Exception):
    """The driver is leaving (see `Board.stop`): end this training now."""


def _report_epoch(board, item: Item, info, top: list) -> None:
    # a round trip per epoch (about a millisecond) so that a driver leaving on an error or
    # Ctrl-C ends the trainings within an epoch instead of waiting for them to finish
    if ray.get(board.epoch.remote(item, info.epoch - 1, info.epochs, info.train_loss,
                                  info.heldout_loss, top)):
        raise StopRequested


def _inject_failure(spec: str | None, repeat: int, fold: int, generation: int) -> None:
    """Fault injection for tests and drills (env DUPES_INJECT_FAILURE on the driver).

    `r1f0:raise` makes training (1, 0) raise every time; `r1f0:crash` kills its worker
    process on the first attempt only, as a lost node would, so Ray Train restarts the group;
    `all:sleep5` makes every training 5 s slower, as a busier machine would.
    """
    for part in (spec or "").split(","):
        target, _, kind = part.partition(":")
        if target == "all" and kind.startswith("sleep"):
            time.sleep(float(kind[5:]))
        if target == f"r{repeat}f{fold}":
            if kind == "raise":
                raise RuntimeError(f"injected failure in training r{repeat}f{fold}")
            if kind == "crash" and generation == 0:
                os._exit(1)


def _device():
    if torch.cuda.is_available():
        return torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES to this worker's GPU
    return torch.device("cpu")
