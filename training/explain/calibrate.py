"""How many images per forward pass run fastest for one model on this machine: the expanding methods' chunk size.

Occlusion, SmoothGrad and integrated gradients turn one image into many model inputs and run them in chunks of a
size that is fixed when the graph is traced. Which size is fastest depends on the model and the device: on 2 CPU
cores MobileNetV2 224 was fastest per image at batch 4 on one host and at 32 on another (where batch 1 took twice as
long per image), and a GPU gains up to its width. :func:`fastest_batch` measures it: the model's forward pass at each
candidate batch size, per image, and picks the cheapest. ``ExplainModel`` calls it once per model when no chunk size
is given, so the exporter measures on the machine that exports.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["CANDIDATES", "Calibration", "affordable", "device_description", "fastest_batch", "measure_batches"]

# The batch sizes tried, smallest first.
CANDIDATES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
# Largest input tensor tried, in bytes: 64 MiB is 111 images at 224x224x3 float32, 21 at 512x512x3.
_MAX_INPUT_BYTES = 64 << 20
# Each timed sample runs at least this many images (several calls at small batch sizes), so that one scheduler hiccup
# does not decide a batch-1 sample.
_MIN_SAMPLE_IMAGES = 8
# "Clearly" slower per image than the best so far (going up stops after two such sizes in a row).
_SLOWER = 1.10


@dataclass(frozen=True)
class Calibration:
    """What :func:`fastest_batch` measured.

    ``chunk_size``: the candidate with the lowest median time per image (the smaller one on a tie).
    ``per_image_s``: median seconds per image of each candidate measured, ascending batch size (candidates above the
    early stop, over the bytes cap or beyond the time budget are absent). ``device``: what ran it
    (:func:`device_description`). ``seconds``: wall time of the whole calibration, tracing and warm-up included.
    """

    chunk_size: int
    per_image_s: Mapping[int, float]
    device: str
    seconds: float


def fastest_batch(
    model: Any,
    image_shape: Sequence[int],
    candidates: Sequence[int] = CANDIDATES,
    *,
    rounds: int = 3,
    budget_s: float = 20.0,
    max_input_bytes: int = _MAX_INPUT_BYTES,
) -> Calibration:
    """Time ``model(x, training=False)`` at each candidate batch size on the current default device; returns the
    fastest per image with the measurements.

    ``image_shape``: (H, W, C) of the float32 input. Candidates whose input tensor would exceed ``max_input_bytes``
    are not tried (the smallest always is). The forward is one ``tf.function`` with an unknown batch dimension
    (traced once), fed a constant mid-grey batch; see :func:`measure_batches` for the timing and its bounds.

    Cost: the tracing plus about ``(rounds + 1) x sum(candidates)`` images of forward passes, capped by
    ``budget_s``. Measured on 2 CPU cores (Xeon): the tests' 64x64 CNN 0.15-0.25 s, MobileNetV2 224 about 6 s
    (about 8.7 ms per image from batch 8 up, 16.5 ms at batch 1); under load the budget cuts the repetitions.
    """
    shape = tuple(int(d) for d in image_shape)
    tried = affordable(candidates, shape, max_input_bytes)
    forward = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, *shape], tf.float32)]
    )

    def run(batch: int) -> None:
        outputs = forward(batches[batch])
        for tensor in tf.nest.flatten(outputs):
            tensor.numpy()  # wait for the device: a GPU runs asynchronously

    with tf.init_scope():  # eagerly, also when asked while a graph is being traced
        batches = {b: tf.constant(np.full((b, *shape), 127.5, np.float32)) for b in tried}
        return measure_batches(run, tried, rounds=rounds, budget_s=budget_s, device=device_description())


def affordable(
    candidates: Sequence[int], image_shape: Sequence[int], max_input_bytes: int = _MAX_INPUT_BYTES
) -> list[int]:
    """The candidate batch sizes, ascending, whose float32 input of ``image_shape`` (H, W, C) per image fits in
    ``max_input_bytes`` (the smallest candidate always)."""
    image_bytes = 4 * math.prod(int(d) for d in image_shape)
    ordered = sorted(set(candidates))
    return [b for b in ordered if b * image_bytes <= max_input_bytes] or ordered[:1]


def measure_batches(
    run: Callable[[int], Any],
    candidates: Sequence[int],
    *,
    rounds: int = 3,
    budget_s: float = 20.0,
    device: str = "",
    clock: Callable[[], float] = time.perf_counter,
) -> Calibration:
    """Time ``run(batch)`` (one forward pass of ``batch`` images) at each candidate; the core of :func:`fastest_batch`.

    Built for a shared, noisy host. A first sweep goes up the candidates, warming each up with one untimed call and
    timing one sample (at least ``_MIN_SAMPLE_IMAGES`` images, several calls at small sizes); it stops going up once
    two sizes in a row are clearly (10%) slower per image than the best so far, or when the next size would not fit
    in ``budget_s``. Then up to ``rounds - 1`` more rounds time every swept size once more, interleaved and in
    alternating order, so that a change of load hits all sizes alike; a round starts only if its estimated cost fits
    in what is left of the budget. Each size's time per image is the median of its samples. ``clock``: seconds.
    """
    sizes = sorted(set(candidates))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"candidate batch sizes must be one or more integers >= 1, got {list(candidates)}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    start = clock()
    samples: dict[int, list[float]] = {}

    def images(batch: int) -> int:
        return batch * max(1, -(-_MIN_SAMPLE_IMAGES // batch))

    def sample(batch: int) -> float:
        calls = images(batch) // batch
        begin = clock()
        for _ in range(calls):
            run(batch)
        return (clock() - begin) / (calls * batch)

    def best() -> float:
        return min(statistics.median(s) for s in samples.values())

    for batch in sizes:
        if samples and clock() - start + (batch + images(batch)) * best() > budget_s:
            break
        run(batch)
        samples[batch] = [sample(batch)]
        recent = [samples[b][0] for b in list(samples)[-2:]]
        if len(samples) >= 3 and all(t > _SLOWER * best() for t in recent):
            break
    swept = list(samples)
    for round_index in range(1, rounds):
        cost = sum(images(b) for b in swept) * best()
        if clock() - start + cost > budget_s:
            break
        for batch in swept if round_index % 2 == 0 else reversed(swept):
            samples[batch].append(sample(batch))
    per_image = {b: statistics.median(s) for b, s in samples.items()}
    chosen = min(per_image, key=lambda b: (per_image[b], b))
    return Calibration(chosen, per_image, device, clock() - start)


def device_description() -> str:
    """The device a model runs on by default here, in words: the first GPU's name, else the CPU model and its cores."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
        return f"GPU: {name}" + (f" (1 of {len(gpus)})" if len(gpus) > 1 else "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {_cpu_model()}, {cores} cores"


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
