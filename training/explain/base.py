"""What every in-graph method shares: its registry record, per-example inputs and checks, batch expansion, heatmaps.

A method module (``gradcam.py``, ``occlusion.py``, ...) defines ``METHOD``, an :class:`ExplainMethod` whose ``build``
receives the :class:`~training.explain.model.ExplainModel` and the request as :class:`Inputs`: images, class index
and its ``glimpse_wire.contract.METHOD_PARAMS`` as [B] tensors, already converted, broadcast and checked by
:func:`prepare` (the checks come from the contract's dtypes and bounds, so no method repeats them). ``build`` gates
its first op on ``Inputs.checks`` (plus any checks of its own) with :func:`gate` and returns the contract's outputs;
class-attribution methods build them with :func:`attribution_result`.

Methods that turn one image into many model inputs (occlusion positions, SmoothGrad samples, integration steps) use
:func:`expand`, :func:`expanded_sum` and :func:`expanded_values`, which pack the expanded inputs of the whole request
densely into passes of ``chunk_size`` images, so per-example parameters may differ across a batch at no padding cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from glimpse_wire.contract import (
    ATTRIBUTION_METHODS,
    IN_CLASS_INDEX,
    METHOD_PARAMS,
    OUT_ATTRIBUTION,
    OUT_CLASS_INDEX,
    OUT_HEATMAP,
    OUT_PROBABILITIES,
    OUT_SCORE,
    MethodParam,
    explain_outputs,
    explain_signature,
)
from training.explain.model import ExplainModel

__all__ = [
    "ExplainMethod",
    "Inputs",
    "param_dtype",
    "prepare",
    "gate",
    "target_class",
    "attribution_result",
    "saliency_result",
    "expand",
    "expanded_sum",
    "expanded_values",
    "minmax_heatmap",
    "saliency_heatmap",
]

_DTYPES = {"int32": tf.int32, "float32": tf.float32, "bool": tf.bool}
# Chunks of an expanded request in flight at once: the next chunk's forward starts while the previous one
# finishes, which keeps both cores of a small CPU busy at small batch sizes (about 20% faster occlusion on 2 cores).
_PARALLEL_CHUNKS = 2


@dataclass(frozen=True)
class Inputs:
    """A request after :func:`prepare`: everything is a tensor with one value per image."""

    images: tf.Tensor  # float32 [B,H,W,C], pixels 0-255
    class_index: tf.Tensor  # int32 [B], -1 = predicted class
    params: Mapping[str, tf.Tensor]  # the method's METHOD_PARAMS, each [B] in its contract dtype
    checks: tuple[Any, ...]  # assertions the outputs must wait for (shape, range)


@dataclass(frozen=True)
class ExplainMethod:
    """One registered explanation method: what the registry, the exporter and the docs know about it.

    ``name`` is the contract's method name (``glimpse_wire.contract.EXPLAIN_METHODS``); its parameters, signature key
    and output aliases come from the contract, never from here. ``build(model, inputs)`` makes the outputs.
    ``supports(model)`` says whether a model can serve it (e.g. Grad-CAM needs a conv layer); when not, asking for
    it raises ValueError(``unsupported``) and the exporter leaves its signature out. ``summary``: one line for the
    docs table.
    """

    name: str
    build: Callable[[ExplainModel, Inputs], dict[str, tf.Tensor]]
    summary: str
    supports: Callable[[ExplainModel], bool] = lambda model: True
    unsupported: str = ""

    @property
    def params(self) -> tuple[MethodParam, ...]:
        """The per-example parameters, in signature order (``METHOD_PARAMS[name]``)."""
        return METHOD_PARAMS[self.name]

    @property
    def signature(self) -> str:
        """The signature key, ``explain_<name>``."""
        return explain_signature(self.name)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The output aliases of its signature (``explain_outputs(name)``)."""
        return explain_outputs(self.name)

    @property
    def is_attribution(self) -> bool:
        """Whether it maps the evidence for a class (``ATTRIBUTION_METHODS``), as opposed to showing activations."""
        return self.name in ATTRIBUTION_METHODS


def param_dtype(param: MethodParam) -> tf.DType:
    """The TensorFlow dtype of a contract parameter."""
    return _DTYPES[param.dtype]


def prepare(model: ExplainModel, method: str, images: Any, class_index: Any, params: Mapping[str, Any]) -> Inputs:
    """Convert a request for ``method`` to :class:`Inputs`, with the checks the contract implies.

    ``images``: [B,H,W,C] at the model's input shape (ValueError otherwise); ``class_index`` and every parameter: a
    scalar (broadcast to [B]) or one value per image. ``params`` holds some of the method's ``METHOD_PARAMS``; a
    missing one takes its contract default, so that callers written before a parameter was added keep working
    (TypeError naming any parameter the method does not have). In the graph: every [B] input must have B values,
    ``class_index`` must be in [-1, C-1] and each numeric parameter within its contract bounds (InvalidArgumentError
    naming the method and the parameter).
    """
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    if images.shape.rank != 4 or tuple(images.shape[1:]) != model.image_shape:
        raise ValueError(f"{method}: images must be [B,{','.join(map(str, model.image_shape))}], got {images.shape}")
    batch = tf.shape(images)[0]
    checks = []
    class_index, check = _per_example(method, IN_CLASS_INDEX, class_index, tf.int32, batch)
    checks.append(check)
    message = f"{method}: class_index must be -1 (predicted class) or in [0, {model.num_classes - 1}]"
    checks.append(tf.debugging.assert_less(class_index, model.num_classes, message=message))
    checks.append(tf.debugging.assert_greater_equal(class_index, -1, message=message))
    expected = {p.name: p for p in METHOD_PARAMS[method]}
    unknown = sorted(set(params) - set(expected))
    if unknown:
        raise TypeError(f"{method}: unexpected parameters {unknown}; the method takes {sorted(expected)}")
    values: dict[str, tf.Tensor] = {}
    for name, spec in expected.items():
        value, check = _per_example(method, name, params.get(name, spec.default), param_dtype(spec), batch)
        checks.append(check)
        if spec.dtype != "bool":
            if spec.minimum is not None:
                checks.append(
                    tf.debugging.assert_greater_equal(
                        value,
                        tf.cast(spec.minimum, value.dtype),
                        message=f"{method}: {name} must be >= {spec.minimum:g}",
                    )
                )
            if spec.maximum is not None:
                checks.append(
                    tf.debugging.assert_less_equal(
                        value,
                        tf.cast(spec.maximum, value.dtype),
                        message=f"{method}: {name} must be <= {spec.maximum:g}",
                    )
                )
        values[name] = value
    return Inputs(images, class_index, values, tuple(c for c in checks if c is not None))


def _per_example(method: str, name: str, value: Any, dtype: tf.DType, batch: tf.Tensor) -> tuple[tf.Tensor, Any]:
    """``value`` as a [B] tensor of ``dtype`` and the check that it has B values (None for a broadcast scalar)."""
    value = tf.convert_to_tensor(value)
    if value.dtype != dtype:
        value = tf.cast(value, dtype)
    if value.shape.rank == 0:
        return tf.fill([batch], value), None
    if value.shape.rank not in (None, 1):
        raise ValueError(f"{method}: {name} must be a [B] tensor (one value per image), got shape {value.shape}")
    check = tf.debugging.assert_equal(tf.size(value), batch, message=f"{method}: {name} must have one value per image")
    return tf.reshape(value, [-1]), check


def gate(inputs: Inputs, *extra: Any, also: Sequence[tf.Tensor] = ()) -> tuple[tf.Tensor, ...]:
    """The images (and each tensor of ``also``) made to wait for the input checks and ``extra`` ones, so that a bad
    request fails with its check's message before any work. Returns (images, *also)."""
    with tf.control_dependencies([*inputs.checks, *extra]):
        return (tf.identity(inputs.images), *(tf.identity(t) for t in also))


def target_class(class_index: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    """The explained class per image: ``class_index``, or the predicted class where it is -1."""
    predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return tf.where(class_index < 0, predicted, class_index)


def attribution_result(
    heatmap: tf.Tensor, attribution: tf.Tensor, class_index: tf.Tensor, probabilities: tf.Tensor
) -> dict[str, tf.Tensor]:
    """The outputs of a class-attribution method (``ATTRIBUTION_OUTPUTS``), ``score`` read from ``probabilities``."""
    score = tf.gather(probabilities, class_index, batch_dims=1)
    return {
        OUT_HEATMAP: tf.identity(heatmap, name=OUT_HEATMAP),
        OUT_ATTRIBUTION: tf.identity(attribution, name=OUT_ATTRIBUTION),
        OUT_CLASS_INDEX: tf.identity(class_index, name=OUT_CLASS_INDEX),
        OUT_SCORE: tf.identity(score, name=OUT_SCORE),
        OUT_PROBABILITIES: tf.identity(probabilities, name=OUT_PROBABILITIES),
    }


def saliency_result(
    attribution: tf.Tensor, percentile: float, class_index: tf.Tensor, probabilities: tf.Tensor
) -> dict[str, tf.Tensor]:
    """:func:`attribution_result` of a pixel-level map, its heatmap the map clipped at ``percentile``."""
    return attribution_result(saliency_heatmap(attribution, percentile), attribution, class_index, probabilities)


# ----------------------------------------------------------------------------------------------------------------
# Batch expansion: one image -> many model inputs, packed densely across the request


def expand(counts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Items of a ragged per-example expansion: (total, example id per item, index within its example)."""
    total = tf.reduce_sum(counts)
    starts = tf.cumsum(counts, exclusive=True)
    ids = tf.repeat(tf.range(tf.size(counts)), counts)
    local = tf.range(total) - tf.gather(starts, ids)
    return total, ids, local


def expanded_sum(
    model: ExplainModel,
    total: tf.Tensor,
    batch: tf.Tensor,
    item_fn: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
) -> tf.Tensor:
    """Sum ``item_fn`` over items 0..total-1 in chunks of ``model.chunk_size``, per example.

    ``item_fn(idx [m]) -> (example ids [m], values [m,H,W,C])``; returns [B,H,W,C].
    """
    chunk = model.chunk_size
    n_chunks = (total + chunk - 1) // chunk

    def body(i: tf.Tensor, acc: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        idx = tf.range(i * chunk, tf.minimum((i + 1) * chunk, total))
        ids, values = item_fn(idx)
        return i + 1, acc + tf.math.unsorted_segment_sum(values, ids, batch)

    acc0 = tf.zeros(tf.concat([[batch], model.image_shape], axis=0), tf.float32)
    _, acc = tf.while_loop(
        lambda i, _: i < n_chunks, body, (tf.constant(0), acc0), parallel_iterations=_PARALLEL_CHUNKS
    )
    return acc


def expanded_values(
    model: ExplainModel, total: tf.Tensor, item_fn: Callable[[tf.Tensor], tf.Tensor], chunk: int | None = None
) -> tf.Tensor:
    """Concatenate ``item_fn(idx [m]) -> [m]`` over items 0..total-1, in chunks of ``chunk`` (default
    ``model.chunk_size``; [0] when ``total`` is 0)."""
    chunk = chunk or model.chunk_size
    n_chunks = (total + chunk - 1) // chunk
    # slot 0 holds an empty vector, so that the concatenation is defined when there are no items
    out0 = tf.TensorArray(tf.float32, size=n_chunks + 1, infer_shape=False, element_shape=tf.TensorShape([None]))
    out0 = out0.write(0, tf.zeros([0], tf.float32))

    def body(i: tf.Tensor, out: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
        idx = tf.range(i * chunk, tf.minimum((i + 1) * chunk, total))
        return i + 1, out.write(i + 1, item_fn(idx))

    _, out = tf.while_loop(
        lambda i, _: i < n_chunks, body, (tf.constant(0), out0), parallel_iterations=_PARALLEL_CHUNKS
    )
    return out.concat()


# ----------------------------------------------------------------------------------------------------------------
# Heatmap normalisation (attribution -> [B,H,W] in [0, 1])


def minmax_heatmap(values: tf.Tensor) -> tf.Tensor:
    """Per-image min-max normalisation of [B,H,W] to [0, 1]; a constant map becomes zeros."""
    low = tf.reduce_min(values, axis=(1, 2), keepdims=True)
    high = tf.reduce_max(values, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(values - low, high - low)


def saliency_heatmap(attribution: tf.Tensor, percentile: float = 99.0) -> tf.Tensor:
    """Heatmap of a pixel attribution [B,H,W,C]: sum of |a| over channels (tf-explain's channel reduction), divided
    by the per-image ``percentile`` of that magnitude (the maximum where the percentile is 0) and clipped to [0, 1]."""
    magnitude = tf.reduce_sum(tf.abs(attribution), axis=-1)  # [B,H,W]
    height, width = magnitude.shape[1], magnitude.shape[2]
    flat = tf.reshape(magnitude, [-1, height * width])
    n = height * width
    # The value at sorted position floor(q * (n - 1)) is the smallest of the top (n - that position) values.
    top = n - int(percentile / 100.0 * (n - 1))
    cut = tf.math.top_k(flat, k=top, sorted=True).values[:, -1]
    peak = tf.reduce_max(flat, axis=1)
    scale = tf.where(cut > 0, cut, peak)[:, tf.newaxis, tf.newaxis]
    return tf.clip_by_value(tf.math.divide_no_nan(magnitude, scale), 0.0, 1.0)
