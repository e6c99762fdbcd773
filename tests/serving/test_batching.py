"""BatchScheduler unit tests with a fake run function (the real session is covered by the server tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping

import numpy as np
import pytest

from glimpse_wire.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, ServingError, Unavailable
from serving.batching import BatchScheduler, input_batch_size
from serving.config import BatchingOptions


class Recorder:
    """A run function: doubles ``x``, records every merged batch, optionally blocks until released."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, inputs: Mapping[str, np.ndarray], deadline: float | None) -> dict[str, np.ndarray]:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(np.array(inputs["x"]))
        return {"y": inputs["x"] * 2, "n": np.full(len(inputs["x"]), len(inputs["x"]))}


@pytest.fixture
def make() -> Iterator:
    schedulers: list[BatchScheduler] = []

    def factory(**options) -> BatchScheduler:
        scheduler = BatchScheduler(BatchingOptions(**{"num_batch_threads": 1, **options}))
        schedulers.append(scheduler)
        return scheduler

    yield factory
    for scheduler in schedulers:
        scheduler.close(timeout=5)


def run_concurrently(scheduler: BatchScheduler, run, arrays: list[np.ndarray], key="k") -> list:
    results: list = [None] * len(arrays)

    def one(i: int) -> None:
        try:
            results[i] = scheduler.run(key, {"x": arrays[i]}, run)
        except ServingError as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(arrays))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_concurrent_tasks_are_merged_and_split_back(make) -> None:
    scheduler = make(max_batch_size=8, batch_timeout_micros=500_000)
    run = Recorder()
    arrays = [np.array([float(i)], dtype=np.float32) for i in range(6)]
    results = run_concurrently(scheduler, run, arrays)
    assert len(run.batches) == 1 and len(run.batches[0]) == 6
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [2.0 * i])
        assert result["n"].tolist() == [6]


def test_batches_never_exceed_max_batch_size(make) -> None:
    scheduler = make(max_batch_size=4, batch_timeout_micros=100_000, max_enqueued_batches=10)
    run = Recorder()
    results = run_concurrently(scheduler, run, [np.ones(1, np.float32)] * 10)
    assert all(isinstance(r, dict) for r in results)
    assert sum(len(b) for b in run.batches) == 10
    assert max(len(b) for b in run.batches) <= 4 and len(run.batches) >= 3


def test_different_keys_are_not_merged(make) -> None:
    scheduler = make(max_batch_size=8, batch_timeout_micros=100_000, num_batch_threads=2)
    run = Recorder()
    a = threading.Thread(target=scheduler.run, args=("a", {"x": np.ones(1)}, run))
    b = threading.Thread(target=scheduler.run, args=("b", {"x": np.ones(1)}, run))
    a.start(), b.start()
    a.join(5), b.join(5)
    assert sorted(len(x) for x in run.batches) == [1, 1]


def test_padding_to_allowed_batch_sizes_is_sliced_off(make) -> None:
    scheduler = make(max_batch_size=8, batch_timeout_micros=500_000, allowed_batch_sizes=(2, 4, 8))
    run = Recorder()
    arrays = [np.array([10.0 + i], dtype=np.float32) for i in range(3)]
    results = run_concurrently(scheduler, run, arrays)
    (batch,) = run.batches
    assert len(batch) == 4  # 3 rows padded up to the allowed size 4
    assert batch[3] == batch[2]  # padded with a copy of the last task's first row
    assert sorted(float(r["y"][0]) for r in results) == [20.0, 22.0, 24.0]
    assert all(len(r["y"]) == 1 for r in results)


def test_task_larger_than_max_batch_size(make) -> None:
    scheduler = make(max_batch_size=2)
    with pytest.raises(InvalidArgument) as err:
        scheduler.run("k", {"x": np.ones(3)}, Recorder())
    assert err.value.message == "Task size 3 is larger than maximum input batch size 2"


def test_full_queue_is_refused_like_tf_serving(make) -> None:
    gate = threading.Event()
    scheduler = make(max_batch_size=1, max_enqueued_batches=1, batch_timeout_micros=0)
    run = Recorder(gate)
    first = threading.Thread(target=scheduler.run, args=("k", {"x": np.ones(1)}, run))
    first.start()
    assert run.started.wait(5)  # the first batch is running (no longer queued)
    second = threading.Thread(target=scheduler.run, args=("k", {"x": np.ones(1)}, run))
    second.start()  # fills the one queued batch
    time.sleep(0.1)
    with pytest.raises(Unavailable) as err:
        scheduler.run("k", {"x": np.ones(1)}, run)
    assert err.value.message == "The batch scheduling queue to which this task was submitted is full"
    gate.set()
    first.join(5), second.join(5)
    assert len(run.batches) == 2


def test_shapes_must_agree_without_padding(make) -> None:
    scheduler = make(max_batch_size=8, batch_timeout_micros=200_000)
    results = run_concurrently(scheduler, Recorder(), [np.ones((1, 2)), np.ones((1, 3))])
    assert all(isinstance(r, FailedPrecondition) for r in results)
    assert "from different tasks have different shapes and padding is turned off" in results[0].message


def test_variable_length_inputs_are_padded(make) -> None:
    scheduler = make(max_batch_size=8, batch_timeout_micros=200_000, pad_variable_length_inputs=True)
    run = Recorder()
    results = run_concurrently(scheduler, run, [np.ones((1, 2)), np.ones((1, 3))])
    assert run.batches[0].shape == (2, 3)
    assert sorted(r["y"].shape for r in results) == [(1, 3), (1, 3)]


def test_expired_tasks_are_not_run(make) -> None:
    scheduler = make(max_batch_size=8, batch_timeout_micros=100_000)
    run = Recorder()
    with pytest.raises(ResourceExhausted) as err:
        scheduler.run("k", {"x": np.ones(1)}, run, deadline=time.monotonic() + 0.01)
    assert err.value.message == "Run() timeout exceeded while waiting in batching queue"
    assert run.batches == []


def test_run_errors_reach_every_task(make) -> None:
    scheduler = make(max_batch_size=8, batch_timeout_micros=100_000)

    def broken(inputs, deadline):
        raise InvalidArgument("bad batch")

    results = run_concurrently(scheduler, broken, [np.ones(1), np.ones(1)])
    assert [type(r) for r in results] == [InvalidArgument, InvalidArgument]
    assert results[0] is not results[1]


def test_output_batch_must_match_input(make) -> None:
    scheduler = make(max_batch_size=8)
    with pytest.raises(FailedPrecondition) as err:
        scheduler.run("k", {"x": np.ones(2)}, lambda inputs, deadline: {"y": np.ones(3)})
    assert "0th dimension does not equal the sum" in err.value.message


def test_close_drains_open_batches(make) -> None:
    scheduler = make(max_batch_size=8, batch_timeout_micros=10_000_000)  # would wait 10 s
    run = Recorder()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(scheduler.run("k", {"x": np.ones(1)}, run)))
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    scheduler.close(timeout=5)
    thread.join(5)
    assert time.monotonic() - started < 2 and result["y"].tolist() == [2.0]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "Batching Run() must have at least one input tensor"),
        ({"x": np.float32(1)}, "Batching Run() input tensors must have at least one dimension"),
        ({"x": np.ones(2), "z": np.ones(3)}, "Batching Run() input tensors must have equal 0th-dimension size"),
    ],
)
def test_input_batch_size_errors(inputs, message) -> None:
    with pytest.raises(InvalidArgument) as err:
        input_batch_size(inputs)
    assert err.value.message == message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 4, "allowed_batch_sizes": (2, 3)}, "Last entry in allowed_batch_sizes must match"),
        ({"max_batch_size": 4, "allowed_batch_sizes": (3, 2, 4)}, "monotonically increasing"),
        ({"num_batch_threads": 0}, "num_batch_threads must be positive"),
    ],
)
def test_invalid_options(options, message) -> None:
    from serving.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        BatchingOptions(**options)
