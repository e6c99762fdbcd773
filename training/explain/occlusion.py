"""Occlusion sensitivity (tf-explain's OcclusionSensitivity, generalised to any stride), exact or adaptive.

A grey square (127.5, mid-grey of the 0-255 input) of side ``patch_size`` is put at each grid position
``(i*s, j*s)``; the map at that cell is ``1 - p_c(occluded image)``; the ``ceil(H/s) x ceil(W/s)`` grid is resized
bilinearly (half-pixel centres, as tf-explain's cv2.resize) to [H,W]. With stride = patch size (the default) the map is
tf-explain's exactly; edge patches are cut at the border. ``attribution`` is that [B,H,W] map, ``heatmap`` its per-image
min-max normalisation. More than ``ExplainerConfig.max_occlusion_positions`` positions per image fail fast.

``mode`` (per image, ``glimpse_wire.contract.OCCLUSION_MODES``):

- ``exact`` (0): every cell. Each occluded copy's output comes from the incremental engine
  (``training.explain.incremental``: the image's activations once, then per layer only what the patch changes) when
  the model's layers allow it and it was measured faster than whole forward passes for this model on this device
  (:func:`occlusion_engine`); otherwise from whole forward passes. The map is the same either way.
- ``naive`` (1): every cell, one whole forward pass per occluded copy.
- ``adaptive`` (2): the cells of every ``ADAPTIVE_COARSE_STEP``-th row and column, the others interpolated from them,
  then the ``ADAPTIVE_REFINE_FRACTION`` of the interpolated cells with the highest estimate evaluated too (the
  contract's rule, which the explain API's black-box path follows as well).

Whole-pass copies are packed densely across the request into passes of ``chunk_size``; the incremental engine runs
one image at a time (its copies in passes of its own measured size, ``EngineChoice.chunk_size``), so that it holds
one image's base activations whatever the batch size. Measured peak RSS of a process building the EfficientNet-Lite0
explainer at 224 and explaining one image incrementally at 32-64 copies per pass: 2.1 GiB for patches 16 to 112
(1.15 GiB with whole passes at chunk 16; docs/explanations.md has the figures).
"""

from __future__ import annotations

import statistics
import time
import weakref
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from glimpse_wire.contract import (
    ADAPTIVE_COARSE_STEP,
    ADAPTIVE_REFINE_FRACTION,
    OCCLUSION_ENGINES,
    OCCLUSION_MODES,
    OUT_EVALUATED_POSITIONS,
    OUT_OCCLUSION_ENGINE,
)
from training.explain.base import (
    ExplainMethod,
    Inputs,
    attribution_result,
    expand,
    expanded_values,
    gate,
    minmax_heatmap,
    target_class,
)
from training.explain.calibrate import CANDIDATES, affordable, measure_batches
from training.explain.incremental import IncrementalOcclusion, plan, supports_incremental
from training.explain.model import ExplainModel

__all__ = ["GREY_VALUE", "METHOD", "EngineChoice", "occlusion_engine", "occlusion_geometry", "explain_occlusion"]

# tf-explain's occlusion patch value (utils/image.py apply_grey_patch); our models take 0-255, so it is mid-grey.
GREY_VALUE = 127.5
_EXACT, _NAIVE, _ADAPTIVE = (OCCLUSION_MODES.index(name) for name in ("exact", "naive", "adaptive"))
# Timing of the two engines when an explainer is built: rounds of (naive, incremental), alternated.
_ENGINE_ROUNDS = 3
# Time allowed for measuring the incremental engine's chunk size (measure_batches stops sweeping past it).
_ENGINE_CHUNK_BUDGET_S = 20.0


@dataclass(frozen=True)
class EngineChoice:
    """How ``mode=exact`` computes the occluded outputs for one model on this device, and why.

    ``engine``: "incremental" or "naive". ``reason``: a sentence for the model card and the API. ``naive_s`` and
    ``incremental_s``: the measured median seconds of one image's default grid (None when not measured).
    ``macs_fraction``: the incremental engine's multiply-adds per copy over a whole forward pass at the default grid.
    ``chunk_size``: the occluded copies per pass of the incremental engine (None for the naive engine, whose passes
    hold the model's ``chunk_size`` images): ``ExplainerConfig.chunk_size`` when the config fixes it, else the size
    measured fastest per copy for this model on this device (:func:`_engine_chunk`). It differs from the whole
    passes' size because an incremental pass is many small window ops, whose fixed cost a larger pass spreads.
    """

    engine: str
    reason: str
    naive_s: float | None = None
    incremental_s: float | None = None
    macs_fraction: float | None = None
    chunk_size: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "reason": self.reason,
            "naive_ms": None if self.naive_s is None else round(self.naive_s * 1000, 1),
            "incremental_ms": None if self.incremental_s is None else round(self.incremental_s * 1000, 1),
            "macs_fraction": None if self.macs_fraction is None else round(self.macs_fraction, 3),
            "chunk_size": self.chunk_size,
        }


_CHOICES: weakref.WeakKeyDictionary[Any, dict[tuple[int, str], tuple[EngineChoice, IncrementalOcclusion | None]]] = (
    weakref.WeakKeyDictionary()
)


def occlusion_geometry(
    size: tuple[int, int], patch_size: tf.Tensor, stride: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-example occlusion grid: (patch [B], stride [B], grid rows [B], grid cols [B]).

    A patch size of 0 means ``min(H, W) // 8`` (at least 1); a stride of 0 means the patch size (tf-explain's grid).
    Patches start at 0, s, 2s, ... < H (resp. W), so the grid is ceil(H / s) x ceil(W / s); edge patches are cut.
    """
    height, width = size
    patch = tf.cast(patch_size, tf.int32)
    patch = tf.where(patch > 0, patch, max(1, min(height, width) // 8))
    step = tf.cast(stride, tf.int32)
    step = tf.where(step > 0, step, patch)
    rows = (height + step - 1) // step
    cols = (width + step - 1) // step
    return patch, step, rows, cols


# ----------------------------------------------------------------------------------------------------------------
# The two ways of computing p_c for a list of occluded copies


class _Copies(NamedTuple):
    """Occluded copies: image ``ids[i]`` with a grey square of side ``patches[i]`` at (``tops[i]``, ``lefts[i]``),
    scored for class ``classes[i]``; each field [m] int32."""

    ids: tf.Tensor
    tops: tf.Tensor
    lefts: tf.Tensor
    patches: tf.Tensor
    classes: tf.Tensor

    def pick(self, idx: tf.Tensor) -> _Copies:
        return _Copies(*(tf.gather(field, idx) for field in self))


def _confidence(
    model: ExplainModel,
    images: tf.Tensor,
    copies: _Copies,
    engine: IncrementalOcclusion | None = None,
    base: dict[int, tf.Tensor] | None = None,
) -> tf.Tensor:
    """p_c of each copy [m]: from the incremental ``engine`` on the images' ``base`` activations when given, else
    from whole forward passes of the occluded images."""
    if engine is not None:
        occluded = engine.occluded(base, copies.ids, copies.tops, copies.lefts, copies.patches, GREY_VALUE)
        return tf.gather(tf.cast(occluded, tf.float32), copies.classes, batch_dims=1)
    height, width = model.image_shape[:2]
    ys = tf.range(height)[tf.newaxis, :]
    xs = tf.range(width)[tf.newaxis, :]
    top, left, size = copies.tops[:, tf.newaxis], copies.lefts[:, tf.newaxis], copies.patches[:, tf.newaxis]
    in_rows = (ys >= top) & (ys < top + size)  # [m,H]
    in_cols = (xs >= left) & (xs < left + size)  # [m,W]
    mask = (in_rows[:, :, tf.newaxis] & in_cols[:, tf.newaxis, :])[..., tf.newaxis]
    occluded = tf.where(mask, tf.constant(GREY_VALUE, tf.float32), tf.gather(images, copies.ids))
    probs = model.forward(occluded).probabilities
    return tf.gather(probs, copies.classes, batch_dims=1)


def _confidences(
    model: ExplainModel,
    engine: IncrementalOcclusion | None,
    images: tf.Tensor,
    items: tf.Tensor,
    ids: tf.Tensor,
    tops: tf.Tensor,
    lefts: tf.Tensor,
    patch: tf.Tensor,
    target: tf.Tensor,
    naive: tf.Tensor,
    total: tf.Tensor,
    engine_chunk: int | None = None,
) -> tf.Tensor:
    """p_target for the grid items ``items`` (indices into the request's flat cell list), scattered into a [total]
    vector (0 elsewhere). Items of images whose mode is naive (``naive`` [B]), or all items without an engine, run as
    whole forward passes packed across the request; the others incrementally, one image at a time (in passes of
    ``engine_chunk`` copies), so that only one image's base activations are held at once whatever the batch size."""
    image_of = tf.gather(ids, items)
    on_engine = ~tf.gather(naive, image_of) if engine is not None else tf.zeros_like(items, tf.bool)
    chosen = tf.boolean_mask(items, ~on_engine)
    image = tf.gather(ids, chosen)
    copies = _Copies(
        image, tf.gather(tops, chosen), tf.gather(lefts, chosen), tf.gather(patch, image), tf.gather(target, image)
    )
    values = expanded_values(model, tf.size(chosen), lambda idx: _confidence(model, images, copies.pick(idx)))
    out = tf.tensor_scatter_nd_update(tf.zeros([total], tf.float32), chosen[:, tf.newaxis], values)
    if engine is None:
        return out
    incremental = tf.boolean_mask(items, on_engine)
    owner = tf.gather(ids, incremental)

    def one_image(b: tf.Tensor, out: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        mine = tf.boolean_mask(incremental, tf.equal(owner, b))
        n = tf.size(mine)
        base = engine.base(images[b : b + 1])
        copies = _Copies(
            tf.zeros([n], tf.int32),
            tf.gather(tops, mine),
            tf.gather(lefts, mine),
            tf.fill([n], patch[b]),
            tf.fill([n], target[b]),
        )
        values = expanded_values(
            model, n, lambda idx: _confidence(model, images, copies.pick(idx), engine, base), engine_chunk
        )
        return b + 1, tf.tensor_scatter_nd_update(out, mine[:, tf.newaxis], values)

    # parallel_iterations=1: one image's base activations at a time (the memory bound in the module docstring)
    _, out = tf.while_loop(
        lambda b, _: b < tf.shape(images)[0], one_image, (tf.constant(0), out), parallel_iterations=1
    )
    return out


# ----------------------------------------------------------------------------------------------------------------
# Adaptive: interpolation of the coarse cells and the choice of the cells to refine


def _interpolate(index: tf.Tensor, last: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The coarse indices a <= index <= b around ``index`` (b = a past the last coarse index ``last``) and the
    weight of b: index = (1 - w) a + w b."""
    step = ADAPTIVE_COARSE_STEP
    a = tf.minimum((index // step) * step, last)
    b = tf.minimum(a + step, last)
    span = tf.cast(tf.maximum(b - a, 1), tf.float32)
    w = tf.where(b > a, tf.cast(index - a, tf.float32) / span, 0.0)
    return a, b, w


def _estimate(
    values: tf.Tensor,
    ids: tf.Tensor,
    r: tf.Tensor,
    c: tf.Tensor,
    rows: tf.Tensor,
    cols: tf.Tensor,
    starts: tf.Tensor,
) -> tf.Tensor:
    """Each cell's value interpolated from the coarse cells' ``values`` [total]: along the columns of the two coarse
    rows around it, then along the rows (the contract's order, float32)."""
    n_rows, n_cols, start = tf.gather(rows, ids), tf.gather(cols, ids), tf.gather(starts, ids)
    step = ADAPTIVE_COARSE_STEP
    r_a, r_b, w_r = _interpolate(r, ((n_rows - 1) // step) * step)
    c_a, c_b, w_c = _interpolate(c, ((n_cols - 1) // step) * step)

    def at(row: tf.Tensor, col: tf.Tensor) -> tf.Tensor:
        return tf.gather(values, start + row * n_cols + col)

    upper = (1.0 - w_c) * at(r_a, c_a) + w_c * at(r_a, c_b)
    lower = (1.0 - w_c) * at(r_b, c_a) + w_c * at(r_b, c_b)
    return (1.0 - w_r) * upper + w_r * lower


def _refine_items(candidates: tf.Tensor, estimate: tf.Tensor, ids: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """Of the cell indices ``candidates`` (row-major per image), the ceil(fraction * U) of each image with the highest
    ``estimate``, ties to the earlier cell."""
    est = tf.gather(estimate, candidates)
    image = tf.gather(ids, candidates)
    order = tf.argsort(-est, stable=True)
    order = tf.gather(order, tf.argsort(tf.gather(image, order), stable=True))  # grouped by image, best first
    per_image = tf.math.unsorted_segment_sum(tf.ones_like(image), image, batch)
    keep = tf.cast(tf.math.ceil(ADAPTIVE_REFINE_FRACTION * tf.cast(per_image, tf.float32)), tf.int32)
    sorted_image = tf.gather(image, order)
    rank = tf.range(tf.size(order)) - tf.gather(tf.cumsum(per_image, exclusive=True), sorted_image)
    return tf.gather(candidates, tf.boolean_mask(order, rank < tf.gather(keep, sorted_image)))


# ----------------------------------------------------------------------------------------------------------------


def explain_occlusion(model: ExplainModel, inputs: Inputs) -> dict[str, tf.Tensor]:
    """The occlusion map of each image for its target class (see the module docstring)."""
    height, width = model.image_shape[:2]
    patch, step, rows, cols = occlusion_geometry((height, width), inputs.params["patch_size"], inputs.params["stride"])
    mode = inputs.params["mode"]
    counts = rows * cols
    limit = model.config.max_occlusion_positions
    too_many = tf.debugging.assert_less_equal(
        counts,
        limit,
        message=f"occlusion: more than {limit} patch positions per image; use a larger patch size or stride",
    )
    (images,) = gate(inputs, too_many)
    probabilities = model.forward(images).probabilities
    target = target_class(inputs.class_index, probabilities)
    choice, engine = _choice(model)
    batch = tf.size(counts)
    total, ids, local = expand(counts)
    n_cols = tf.gather(cols, ids)
    r, c = local // n_cols, local % n_cols
    tops, lefts = r * tf.gather(step, ids), c * tf.gather(step, ids)
    starts = tf.cumsum(counts, exclusive=True)
    adaptive = tf.gather(mode, ids) == _ADAPTIVE
    coarse = (r % ADAPTIVE_COARSE_STEP == 0) & (c % ADAPTIVE_COARSE_STEP == 0)
    first = ~adaptive | coarse
    cells = tf.range(total)

    def confidences(items: tf.Tensor) -> tf.Tensor:
        return _confidences(
            model, engine, images, items, ids, tops, lefts, patch, target, mode == _NAIVE, total, choice.chunk_size
        )

    grid = 1.0 - confidences(tf.boolean_mask(cells, first))  # v = 1 - p_c, exact where evaluated
    estimate = _estimate(grid, ids, r, c, rows, cols, starts)
    refined = _refine_items(tf.boolean_mask(cells, ~first), estimate, ids, batch)
    refined_values = 1.0 - tf.gather(confidences(refined), refined)
    grid = tf.where(first, grid, estimate)
    grid = tf.tensor_scatter_nd_update(grid, refined[:, tf.newaxis], refined_values)

    def to_map(args: tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
        start, n, n_r, n_c = args
        cells_map = tf.reshape(grid[start : start + n], tf.stack([n_r, n_c, 1]))
        return tf.image.resize(cells_map, (height, width), method="bilinear")[..., 0]

    attribution = tf.map_fn(
        to_map,
        (starts, counts, rows, cols),
        fn_output_signature=tf.TensorSpec((height, width), tf.float32),
    )
    evaluated = tf.math.unsorted_segment_sum(tf.cast(first, tf.int32), ids, batch) + tf.math.unsorted_segment_sum(
        tf.ones_like(refined), tf.gather(ids, refined), batch
    )
    incremental = OCCLUSION_ENGINES.index("incremental" if engine is not None else "naive")
    used = tf.where(mode == _NAIVE, OCCLUSION_ENGINES.index("naive"), incremental)
    return {
        **attribution_result(minmax_heatmap(attribution), attribution, target, probabilities),
        OUT_EVALUATED_POSITIONS: tf.identity(evaluated, name=OUT_EVALUATED_POSITIONS),
        OUT_OCCLUSION_ENGINE: tf.identity(used, name=OUT_OCCLUSION_ENGINE),
    }


# ----------------------------------------------------------------------------------------------------------------
# Which engine mode=exact uses: measured once per model on this device


def occlusion_engine(model: ExplainModel) -> EngineChoice:
    """How ``mode=exact`` computes this model's occluded outputs (measured once per model; see :class:`EngineChoice`).

    The incremental engine is used when the model's layers allow it and one image's default grid
    (``min(H, W) // 8`` patches, stride = patch) ran faster with it than with whole forward passes at the model's
    chunk size, timed alternately over a few rounds on this device. On a tiny model the window bookkeeping costs more
    than the convs it saves, and whole passes win.
    """
    return _choice(model)[0]


def _choice(model: ExplainModel) -> tuple[EngineChoice, IncrementalOcclusion | None]:
    """The engine for ``model``, cached per Keras model, chunk size and configured engine (the exporter builds one
    explainer per signature; they share the measurement)."""
    wanted = model.config.occlusion_engine
    per_model = _CHOICES.setdefault(model.model, {})
    key = (model.chunk_size, wanted)
    if key not in per_model:
        if wanted == "auto":
            with tf.init_scope():  # measured eagerly, also when first asked while a signature is being traced
                per_model[key] = _measure(model)
        else:
            per_model[key] = _configured(model, wanted)
    return per_model[key]


def _configured(model: ExplainModel, wanted: str) -> tuple[EngineChoice, IncrementalOcclusion | None]:
    """The engine ``ExplainerConfig.occlusion_engine`` names, unmeasured (ValueError when the model's layers do not
    allow the incremental one)."""
    if wanted == "naive":
        return EngineChoice("naive", "naive engine configured (ExplainerConfig.occlusion_engine)"), None
    engine = IncrementalOcclusion(model.model)
    grid = _DefaultGrid(model)
    fraction = plan(model.model, grid.patch, grid.patch).macs_fraction
    with tf.init_scope():  # measured eagerly, also when first asked while a signature is being traced
        chunk = model.config.chunk_size or _engine_chunk(model, engine, grid)
    reason = (
        f"incremental engine configured (ExplainerConfig.occlusion_engine); {fraction:.0%} of the multiply-adds; "
        f"{chunk} copies per pass"
    )
    return EngineChoice("incremental", reason, macs_fraction=fraction, chunk_size=chunk), engine


class _DefaultGrid:
    """One image's default occlusion grid (``min(H, W) // 8`` patches, stride = patch) on a seeded random image: what
    the engine choice and the engine's chunk size are measured on."""

    def __init__(self, model: ExplainModel) -> None:
        height, width, channels = model.image_shape
        self.patch = max(1, min(height, width) // 8)
        cells = [(t, x) for t in range(0, height, self.patch) for x in range(0, width, self.patch)]
        self.size = len(cells)
        with tf.init_scope():
            rng = np.random.default_rng(0)
            self.image = tf.constant(rng.uniform(0, 255, (1, height, width, channels)), tf.float32)
            self.copies = _Copies(
                tf.zeros([len(cells)], tf.int32),
                tf.constant([t for t, _ in cells], tf.int32),
                tf.constant([x for _, x in cells], tf.int32),
                tf.fill([len(cells)], self.patch),
                tf.zeros([len(cells)], tf.int32),
            )


def _engine_chunk(model: ExplainModel, engine: IncrementalOcclusion, grid: _DefaultGrid) -> int:
    """The incremental engine's copies per pass that ran fastest per copy on the default grid here: the base
    activations computed once, then ``calibrate.measure_batches`` over the candidates that fit the grid and the
    calibration's input-size cap (a pass never holds more than that many whole copies, whatever the windows)."""
    base = engine.base(grid.image)
    candidates = [b for b in affordable(CANDIDATES, model.image_shape) if b <= grid.size] or [1]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)], autograph=False)
    def copies_pass(idx: tf.Tensor) -> tf.Tensor:
        return _confidence(model, grid.image, grid.copies.pick(idx), engine, base)

    def run(batch: int) -> None:
        copies_pass(tf.range(batch)).numpy()

    return measure_batches(run, candidates, rounds=3, budget_s=_ENGINE_CHUNK_BUDGET_S).chunk_size


def _measure(model: ExplainModel) -> tuple[EngineChoice, IncrementalOcclusion | None]:
    ok, reason = supports_incremental(model.model)
    if not ok:
        return EngineChoice("naive", f"incremental engine not applicable: {reason}"), None
    engine = IncrementalOcclusion(model.model)
    grid = _DefaultGrid(model)
    fraction = plan(model.model, grid.patch, grid.patch).macs_fraction
    engine_chunk = model.config.chunk_size or _engine_chunk(model, engine, grid)

    def whole_grid(use_engine: bool) -> tf.types.experimental.GenericFunction:
        @tf.function(autograph=False)
        def run() -> tf.Tensor:
            base = engine.base(grid.image) if use_engine else None

            def chunk(idx: tf.Tensor) -> tf.Tensor:
                return _confidence(model, grid.image, grid.copies.pick(idx), engine if use_engine else None, base)

            return expanded_values(model, tf.constant(grid.size), chunk, engine_chunk if use_engine else None)

        return run

    naive_fn, engine_fn = whole_grid(False), whole_grid(True)
    naive_fn(), engine_fn()  # trace and warm up
    naive_times, engine_times = [], []
    for _ in range(_ENGINE_ROUNDS):
        for fn, times in ((naive_fn, naive_times), (engine_fn, engine_times)):
            start = time.perf_counter()
            fn().numpy()
            times.append(time.perf_counter() - start)
    naive_s, engine_s = statistics.median(naive_times), statistics.median(engine_times)
    faster = engine_s < naive_s
    verdict = "faster" if faster else "not faster"
    choice = EngineChoice(
        "incremental" if faster else "naive",
        f"incremental engine measured {verdict} than whole forward passes here "
        f"({engine_s * 1000:.0f} ms at {engine_chunk} copies per pass vs {naive_s * 1000:.0f} ms at "
        f"{model.chunk_size}, for {grid.size} positions; {fraction:.0%} of the multiply-adds)",
        naive_s,
        engine_s,
        fraction,
        engine_chunk if faster else None,
    )
    return choice, engine if faster else None


METHOD = ExplainMethod(
    name="occlusion",
    build=explain_occlusion,
    summary="Occlusion sensitivity: `1 - p_c` with a grey square at each grid position; exact (incremental), naive "
    "or adaptive",
)
