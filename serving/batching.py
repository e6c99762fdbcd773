"""Server-side batching, as TF Serving's BatchingSession over a SharedBatchScheduler.

Concurrent runs with the same key (model, version, signature, fed aliases, fetched aliases: TF Serving's
"tensor signature") are merged along dimension 0 into one batch of at most ``max_batch_size`` rows, run once, and
the outputs split back. A batch is processed when it is full, or when its first task has waited
``batch_timeout_micros`` (0: as soon as a batch thread is free); ``num_batch_threads`` threads process batches from
all queues. Each queue holds at most ``max_enqueued_batches`` batches (the open one included); a task that would
need another batch waits briefly for room (TF Serving's BatchSchedulerRetrier) and is then refused with TF Serving's
UNAVAILABLE "The batch scheduling queue to which this task was submitted is full". With ``allowed_batch_sizes`` a
batch is padded up to the next allowed size with copies of the first row of its last task; padding rows are dropped
from the outputs. Error messages are TF Serving's.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from glimpse_wire.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    ServingError,
    Unavailable,
    error_for,
)
from serving.config import BatchingOptions

__all__ = ["BatchScheduler", "RunFn", "input_batch_size"]

# Runs merged inputs (alias -> array) before an absolute monotonic deadline (or None); returns alias -> array.
RunFn = Callable[[Mapping[str, np.ndarray], "float | None"], Mapping[str, np.ndarray]]

_RETRY_SECONDS = 0.010  # BatchSchedulerRetrier's default max_time_micros
_QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


def input_batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    """The 0th-dimension size shared by all inputs, with BatchingSession's errors."""
    if not inputs:
        raise InvalidArgument("Batching Run() must have at least one input tensor")
    size: int | None = None
    for array in inputs.values():
        if np.ndim(array) == 0:
            raise InvalidArgument("Batching Run() input tensors must have at least one dimension")
        if size is None:
            size = int(np.shape(array)[0])
        elif int(np.shape(array)[0]) != size:
            raise InvalidArgument("Batching Run() input tensors must have equal 0th-dimension size")
    assert size is not None
    return size


@dataclass(eq=False)
class _Task:
    inputs: Mapping[str, np.ndarray]
    size: int
    run: RunFn
    enqueued: float
    deadline: float | None
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: ServingError | None = None


@dataclass(eq=False)
class _Batch:
    opened: float
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0


@dataclass(eq=False)
class _Queue:
    key: Hashable
    batches: deque[_Batch] = field(default_factory=deque)


def _copy_error(error: ServingError) -> ServingError:
    return error_for(error.code, error.message)


class BatchScheduler:
    """A shared batch scheduler: ``run(key, inputs, run_fn, deadline)`` blocks until its slice of a batch is done."""

    def __init__(
        self,
        options: BatchingOptions,
        *,
        on_queued: Callable[[float], None] | None = None,
        on_run: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self._on_queued = on_queued
        self._on_run = on_run
        self._clock = clock
        self._cond = threading.Condition()
        self._queues: dict[Hashable, _Queue] = {}
        self._order: deque[Hashable] = deque()  # round robin over queues
        self._closing = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"{options.thread_pool_name}-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    # -- submitting ---------------------------------------------------------------------------------------------
    def run(
        self, key: Hashable, inputs: Mapping[str, np.ndarray], run_fn: RunFn, deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        size = input_batch_size(inputs)
        max_size = self.options.max_batch_size
        if size > max_size:
            raise InvalidArgument(f"Task size {size} is larger than maximum input batch size {max_size}")
        task = _Task(inputs=inputs, size=size, run=run_fn, enqueued=self._clock(), deadline=deadline)
        self._enqueue(key, task)
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def _enqueue(self, key: Hashable, task: _Task) -> None:
        give_up = self._clock() + _RETRY_SECONDS
        with self._cond:
            while True:
                if self._closing:
                    raise Unavailable("The batch scheduler is shutting down")
                queue = self._queues.get(key)
                if queue is None:
                    queue = self._queues[key] = _Queue(key)
                    self._order.append(key)
                batches = queue.batches
                if batches and batches[-1].size + task.size <= self.options.max_batch_size:
                    break
                if len(batches) < self.options.max_enqueued_batches:
                    batches.append(_Batch(opened=self._clock()))
                    break
                remaining = give_up - self._clock()
                if remaining <= 0:
                    raise Unavailable(_QUEUE_FULL)
                self._cond.wait(remaining)
            batch = batches[-1]
            if not batch.tasks:
                batch.opened = self._clock()
            batch.tasks.append(task)
            batch.size += task.size
            self._cond.notify_all()

    # -- processing ---------------------------------------------------------------------------------------------
    def _schedulable(self, queue: _Queue, now: float) -> bool:
        batches = queue.batches
        if not batches or not batches[0].tasks:
            return False
        if len(batches) > 1 or batches[0].size >= self.options.max_batch_size:
            return True
        return now >= batches[0].opened + self.options.batch_timeout_micros / 1e6

    def _next_batch(self) -> _Batch | None:
        """Under the lock: wait for a schedulable batch and take it; None once closing and drained."""
        while True:
            now = self._clock()
            wake: float | None = None
            for _ in range(len(self._order)):
                key = self._order[0]
                self._order.rotate(-1)
                queue = self._queues[key]
                if self._schedulable(queue, now):
                    batch = queue.batches.popleft()
                    if not queue.batches:
                        del self._queues[key]
                        self._order.remove(key)
                    self._cond.notify_all()  # room in the queue for waiting submitters
                    return batch
                if queue.batches and queue.batches[0].tasks:
                    due = queue.batches[0].opened + self.options.batch_timeout_micros / 1e6
                    wake = due if wake is None else min(wake, due)
            if self._closing and not self._queues:
                return None
            if self._closing and wake is not None:
                wake = now  # drain: process open batches without waiting for their timeout
                for queue in self._queues.values():
                    if queue.batches and queue.batches[0].tasks:
                        queue.batches[0].opened = -float("inf")
                continue
            self._cond.wait(None if wake is None else max(0.0, wake - now))

    def _worker(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            self._process(batch)

    def _process(self, batch: _Batch) -> None:
        now = self._clock()
        for task in batch.tasks:
            if self._on_queued is not None:
                self._on_queued(now - task.enqueued)
        try:
            deadlines = [t.deadline for t in batch.tasks]
            live = [d for d in deadlines if d is None or d > now]
            if not live:
                raise ResourceExhausted("Run() timeout exceeded while waiting in batching queue")
            deadline = None if any(d is None for d in live) else max(d for d in live if d is not None)
            merged, padding = self._merge(batch)
            outputs = batch.tasks[0].run(merged, deadline)
            if self._on_run is not None:
                self._on_run()
            self._split(batch, outputs, padding)
        except ServingError as e:
            for task in batch.tasks:
                task.error = _copy_error(e)
        except Exception as e:  # an unexpected failure must still release every waiting request
            for task in batch.tasks:
                task.error = Internal(f"Batch processing failed: {type(e).__name__}: {e}")
        finally:
            for task in batch.tasks:
                task.done.set()

    def _padded_size(self, size: int) -> int:
        for allowed in self.options.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size

    def _merge(self, batch: _Batch) -> tuple[dict[str, np.ndarray], int]:
        padding = self._padded_size(batch.size) - batch.size
        merged: dict[str, np.ndarray] = {}
        for alias in batch.tasks[0].inputs:
            parts = [np.asarray(t.inputs[alias]) for t in batch.tasks]
            if self.options.pad_variable_length_inputs:
                parts = _pad_to_common_shape(parts)
            else:
                reference = parts[0].shape[1:]
                if any(p.shape[1:] != reference for p in parts[1:]):
                    raise FailedPrecondition(
                        f"Tensors with name '{alias}' from different tasks have different shapes and padding is "
                        "turned off. Set pad_variable_length_inputs to true, or ensure that all tensors with the "
                        "same name have equal dimensions starting with the first dim."
                    )
            if padding:
                parts.append(np.repeat(parts[-1][:1], padding, axis=0))
            merged[alias] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return merged, padding

    def _split(self, batch: _Batch, outputs: Mapping[str, Any], padding: int) -> None:
        total = batch.size + padding
        for array in outputs.values():
            if np.ndim(array) == 0:
                raise FailedPrecondition("Batched output tensor has 0 dimensions")
            if np.shape(array)[0] != total:
                raise FailedPrecondition(
                    "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes of the "
                    "input tensors"
                )
        start = 0
        for task in batch.tasks:
            stop = start + task.size
            task.outputs = {alias: np.asarray(array)[start:stop] for alias, array in outputs.items()}
            start = stop

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """Process what is queued, then stop the batch threads (waiting at most ``timeout`` seconds)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))


def _pad_to_common_shape(parts: list[np.ndarray]) -> list[np.ndarray]:
    ndim = parts[0].ndim
    if any(p.ndim != ndim for p in parts):
        raise FailedPrecondition("All tensors with the same name must have the same rank to be padded")
    target = [max(p.shape[d] for p in parts) for d in range(1, ndim)]
    padded = []
    for p in parts:
        widths = [(0, 0)] + [(0, t - s) for s, t in zip(p.shape[1:], target, strict=True)]
        if any(w[1] for w in widths):
            fill: Any = b"" if p.dtype == object else 0
            p = np.pad(p, widths, mode="constant", constant_values=fill)
        padded.append(p)
    return padded
