"""The work board on a real local Ray: hand-out, completion, failures, worker-group restarts."""
import numpy as np
import pyarrow as pa
import pytest
import ray

from orchestrator.pipeline.board import Board


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_board_hands_out_each_training_once_and_survives_a_restart(local_ray):
    items = [(r, f) for r in range(3) for f in (0, 1)]
    board = Board.remote(items)
    assert ray.get(board.join.remote(0, "w0")) == 0
    assert ray.get(board.join.remote(1, "w1")) == 0
    a, b = ray.get(board.next.remote("w0")), ray.get(board.next.remote("w1"))
    assert {a, b} == {(0, 0), (0, 1)}
    table = pa.table({"x": pa.array(np.arange(5))})
    ray.get(board.finish.remote("w0", a, table, {"seconds": 1.0}))
    progress, results, failures = ray.get(board.poll.remote())
    assert [r[0] for r in results] == [a] and failures == []
    assert ray.get(results[0][1][0]).equals(table)  # the board owns the result object
    assert progress[a].status == "writing" and progress[b].status == "running"

    # rank 0 joins again: Ray Train restarted the group, so b (in flight) is handed out again
    assert ray.get(board.join.remote(0, "w0b")) == 1
    ray.get(board.join.remote(1, "w1b"))
    got = [ray.get(board.next.remote("w0b"))]
    assert got[0] == b
    # the old worker's late result for b is stale and ignored
    ray.get(board.finish.remote("w1", b, table, {}))
    assert ray.get(board.poll.remote())[1] == []
    ray.get(board.fail.remote("w0b", b, "Traceback\nValueError: bad"))
    _, _, failures = ray.get(board.poll.remote())
    assert failures == [(b, "Traceback\nValueError: bad")]
    rest = []
    while (item := ray.get(board.next.remote("w1b"))) is not None:
        rest.append(item)
    assert sorted(rest) == [(1, 0), (1, 1), (2, 0), (2, 1)]  # nothing twice, a and b not again


def test_elastic_restarts_on_fewer_or_more_workers_requeue_what_was_in_flight(local_ray):
    board = Board.remote([(r, f) for r in range(3) for f in (0, 1)])
    for rank in (0, 1):
        assert ray.get(board.join.remote(rank, f"w{rank}", 2)) == 0
    a, b = ray.get(board.next.remote("w0")), ray.get(board.next.remote("w1"))
    # a node is lost: the group restarts with one worker (rank 0 again)
    assert ray.get(board.join.remote(0, "solo", 1)) == 1
    assert {ray.get(board.next.remote("solo")) for _ in range(2)} == {a, b}
    # a replacement node: the group restarts with three, and rank 2, never seen before,
    # happens to join first; the new size alone tells the board that it is a new group
    assert ray.get(board.join.remote(2, "n2", 3)) == 2
    assert ray.get(board.join.remote(0, "n0", 3)) == 2  # same group: no second restart
    assert ray.get(board.join.remote(1, "n1", 3)) == 2
    handed = [ray.get(board.next.remote("n0")) for _ in range(6)]
    assert sorted(handed) == [(r, f) for r in range(3) for f in (0, 1)]


def test_a_stopped_board_hands_out_nothing_and_tells_trainings_to_stop(local_ray):
    board = Board.remote([(0, 0), (0, 1), (1, 0)])
    ray.get(board.join.remote(0, "w0"))
    item = ray.get(board.next.remote("w0"))
    assert ray.get(board.epoch.remote(item, 0, 5, 1.0)) is False
    ray.get(board.stop.remote())
    assert ray.get(board.epoch.remote(item, 1, 5, 0.9)) is True
    assert ray.get(board.next.remote("w0")) is None
