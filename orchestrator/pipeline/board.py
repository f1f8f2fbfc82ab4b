"""The work board: a queue of (repeat, fold) trainings that Ray Train workers pull from.

One Ray Train run with one worker per slot pays the launch cost once; each worker then takes
trainings from this actor until none are left, so a slow training never holds up the others.
Held-out results are put into the object store by the board, which makes the board their
owner: they outlive the worker that produced them until the driver has written them.
"""
from __future__ import annotations

import time
from collections import deque

import ray

from orchestrator.run.records import Item, Status, TrainingState


@ray.remote(num_cpus=0)
class Board:
    def __init__(self, items: list[Item]):
        self.queue: deque[Item] = deque(items)
        self.in_flight: dict[Item, str] = {}     # item -> worker id
        self.done: set[Item] = set()
        self.ranks: dict[int, str] = {}           # world rank -> worker id of this generation
        self.generation = 0
        self.world_size: int | None = None
        self.progress: dict[Item, TrainingState] = {}  # the trainings' states: owned here
        self.results: list[tuple[Item, list, dict, list | None]] = []  # + epoch refs
        self.failures: list[tuple[Item, str]] = []
        self.stopping = False                     # the driver is leaving: hand out no more

    def join(self, rank: int, worker: str, world_size: int | None = None) -> int:
        """A worker starts. A rank joining twice, or a group of another size (an elastic
        restart on fewer or more nodes), means Ray Train restarted the whole worker group
        after a failure: every training in flight was lost and goes back in the queue."""
        resized = world_size is not None and self.world_size not in (None, world_size)
        if rank in self.ranks or resized:
            self.generation += 1
            self.ranks = {}
            for item in list(self.in_flight):
                self.queue.appendleft(item)
                self.progress[item] = TrainingState(Status.RETRYING)
            self.in_flight = {}
        self.ranks[rank] = worker
        self.world_size = world_size
        return self.generation

    def next(self, worker: str) -> Item | None:
        while self.queue and not self.stopping:
            item = self.queue.popleft()
            if item in self.done or item in self.in_flight:
                continue
            self.in_flight[item] = worker
            self.progress[item] = TrainingState(Status.RUNNING, worker=worker, start=time.time())
            return item
        return None

    def epoch(self, item: Item, epoch: int, epochs: int, loss: float,
              heldout_loss: float | None = None, top: list | None = None) -> bool:
        """A training's progress; returns whether it should stop (the driver is leaving)."""
        p = self.progress.setdefault(item, TrainingState())
        p.status, p.epoch, p.epochs, p.loss = Status.RUNNING, epoch + 1, epochs, loss
        if heldout_loss is not None:
            p.heldout_loss, p.top = heldout_loss, top or []
        return self.stopping

    def drop(self, items: list[Item]) -> None:
        """Trainings the budget cannot afford leave the queue (a resume trains them)."""
        gone = set(map(tuple, items))
        self.queue = deque(i for i in self.queue if tuple(i) not in gone)
        for item in gone:
            if item not in self.in_flight and item not in self.done:
                self.progress.pop(item, None)

    def stop(self) -> None:
        """The driver leaves early (an error, Ctrl-C): workers take no new training and end
        the ones in progress at their next epoch, so Ray Train's run ends by itself."""
        self.stopping = True

    def finish(self, worker: str, item: Item, table, metrics: dict, epochs=None) -> None:
        if self.in_flight.get(item) != worker or item in self.done:
            return  # a stale worker of an earlier generation; its item was handed out again
        del self.in_flight[item]
        self.done.add(item)
        p = self.progress[item]
        p.status, p.top = Status.WRITING, []  # the live top losses are of running trainings
        for name in ("seconds", "train_accuracy", "heldout_accuracy", "n_heldout", "worker",
                     "data_mode"):
            if name in metrics:
                setattr(p, name, metrics[name])
        self.results.append((item, [ray.put(table)], metrics,
                             [ray.put(epochs)] if epochs is not None else None))

    def fail(self, worker: str, item: Item, error: str) -> None:
        if self.in_flight.get(item) == worker:
            del self.in_flight[item]
            self.done.add(item)  # a deterministic error would repeat: record it, go on
            self.progress[item] = TrainingState(Status.FAILED, error=error)
            self.failures.append((item, error))

    def poll(self) -> tuple[dict, list, list]:
        """Progress of every training, plus results and failures not yet collected."""
        results, self.results = self.results, []
        failures, self.failures = self.failures, []
        return dict(self.progress), results, failures

    def node(self) -> str:
        """The node this board runs on (it must be the driver's)."""
        return ray.get_runtime_context().get_node_id()

    def written(self, item: Item) -> None:
        self.progress[item].status = Status.DONE
