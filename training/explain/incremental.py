"""Exact incremental occlusion: each occluded copy recomputes only what its grey patch changes.

Occlusion runs the model once per patch position, yet a patch changes only a small window of the input, and a conv
layer's output changes only where its kernel touches a changed input pixel. Following Krypton (Nakandala, Kumar and
Papakonstantinou, SIGMOD 2019, "Incremental and Approximate Inference for Faster Occlusion-based Deep CNN
Explanations"), this module treats each occluded copy as the unoccluded image's activations (computed once per image,
the *base*) plus one changed window per layer:

- the input's window is the patch;
- a pointwise layer (batch norm, activation, rescaling, a 1x1 conv, dropout at inference) maps the window's values;
- a conv, depthwise conv, max pool, valid average pool or zero padding maps the window to the output window its
  kernel reaches, computed on the input window grown by the kernel's halo, read from the base where the copy did not
  change it (zero padding outside the map, as the layer pads);
- a merge (add, multiply, concatenate on channels, ...) takes the union of its inputs' windows;
- everything else (global pooling, flatten, dense, layers it does not know) sees the whole copy, rebuilt from the
  base and the window, and computes normally from there on.

All copies in a pass share one window size per layer (the largest any of them needs; a larger window is still exact)
so every layer is one batched op on [copies, window, window, channels]. Once a window covers
``FULL_AREA_FRACTION`` of its map it becomes the whole map, where the window bookkeeping would cost more than it
saves; from then on a layer runs on the whole map with no gathers. The result is the model's own output for each
occluded copy up to float rounding (the same sums in another order), so the occlusion map is the exact one.

:class:`IncrementalOcclusion` walks the Keras functional graph itself; :func:`plan` says for a model and a patch size
which layers run incrementally and the fraction of multiply-adds computed against the naive way (one whole forward
pass per copy), without running anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

__all__ = ["FULL_AREA_FRACTION", "IncrementalOcclusion", "OcclusionPlan", "plan", "supports_incremental"]

# A window covering this much of its map becomes the whole map (see the module docstring).
FULL_AREA_FRACTION = 0.75

_POINTWISE: tuple[type, ...] = tuple(
    cls
    for cls in (
        getattr(keras.layers, name, None)
        for name in (
            "Activation",
            "ActivityRegularization",
            "AlphaDropout",
            "BatchNormalization",
            "Dropout",
            "ELU",
            "GaussianDropout",
            "GaussianNoise",
            "Identity",
            "LeakyReLU",
            "ReLU",
            "Rescaling",
            "SpatialDropout2D",
        )
    )
    if cls is not None
)
_MERGE: tuple[type, ...] = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
)


# ----------------------------------------------------------------------------------------------------------------
# What a layer does to a window: one record per node, shared by the graph code and the planner


@dataclass(frozen=True)
class _Axis:
    """One spatial axis of a windowed layer: kernel span ``(k - 1) * dilation + 1``, stride, padding before/after."""

    span: int
    stride: int
    before: int
    after: int

    def output_range(self, start: Any, end: Any, size_out: int, ops: Any) -> tuple[Any, Any]:
        """Outputs [first, last] whose kernel window touches input indices [start, end] (inclusive)."""
        low = start + self.before - (self.span - 1)  # padded index of the earliest window that still reaches start
        first = ops.maximum(0, -((-low) // self.stride))
        last = ops.minimum(size_out - 1, (end + self.before) // self.stride)
        return first, last


@dataclass(frozen=True)
class _Rule:
    """How one node maps windows: ``kind`` is pointwise, windowed, pad, merge or full."""

    kind: str
    rows: _Axis | None = None
    cols: _Axis | None = None
    fill: float = 0.0  # padding value of a windowed layer (max pooling pads with -inf)
    op: Callable[[tf.Tensor], tf.Tensor] | None = None  # windowed: the layer on an already padded window, VALID


def _axis(size_in: int, size_out: int, kernel: int, stride: int, dilation: int, padding: str) -> _Axis:
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return _Axis(span, stride, 0, 0)
    total = max((size_out - 1) * stride + span - size_in, 0)  # TensorFlow's SAME padding, the extra row after
    return _Axis(span, stride, total // 2, total - total // 2)


def _pairs(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _rule(node: Any) -> _Rule:
    """The rule of one node of the graph (``full`` for what the engine does not know)."""
    layer = node.operation
    if len(node.outputs) != 1 or len(node.output_tensors[0].shape) != 4:
        return _Rule("full")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return _Rule("full")
    (out,) = node.output_tensors
    if isinstance(layer, _MERGE):
        if isinstance(layer, keras.layers.Concatenate) and layer.axis not in (-1, 3):
            return _Rule("full")
        return _Rule("merge")
    if len(node.input_tensors) != 1 or len(node.input_tensors[0].shape) != 4:
        return _Rule("full")
    (inp,) = node.input_tensors
    if isinstance(layer, keras.layers.BatchNormalization) and layer.axis not in (-1, 3):
        return _Rule("full")  # normalising over a spatial axis mixes positions
    if isinstance(layer, _POINTWISE) or getattr(layer, "glimpse_pointwise", False):
        return _Rule("pointwise")
    if isinstance(layer, keras.layers.Softmax) and layer.axis in (-1, 3):
        return _Rule("pointwise")
    if isinstance(layer, keras.layers.Normalization) and tuple(layer.axis) in ((-1,), (3,)):
        return _Rule("pointwise")
    if isinstance(layer, keras.layers.ZeroPadding2D):
        (top, bottom), (left, right) = layer.padding
        return _Rule("pad", _Axis(1, 1, int(top), int(bottom)), _Axis(1, 1, int(left), int(right)))
    size_in, size_out = (int(inp.shape[1]), int(inp.shape[2])), (int(out.shape[1]), int(out.shape[2]))
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) and not isinstance(
        layer, (keras.layers.Conv2DTranspose, keras.layers.SeparableConv2D)
    ):
        if getattr(layer, "groups", 1) != 1:
            return _Rule("full")
        kernel, strides, dilation = _pairs(layer.kernel_size), _pairs(layer.strides), _pairs(layer.dilation_rate)
        if kernel == (1, 1) and strides == (1, 1):
            return _Rule("pointwise")
        rows = _axis(size_in[0], size_out[0], kernel[0], strides[0], dilation[0], layer.padding)
        cols = _axis(size_in[1], size_out[1], kernel[1], strides[1], dilation[1], layer.padding)
        return _Rule("windowed", rows, cols, 0.0, _conv_op(layer, strides, dilation))
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        average = isinstance(layer, keras.layers.AveragePooling2D)
        if average and layer.padding != "valid":
            return _Rule("full")  # SAME average pooling divides by the count of real pixels: not a padded window
        pool, strides = _pairs(layer.pool_size), _pairs(layer.strides)
        rows = _axis(size_in[0], size_out[0], pool[0], strides[0], 1, layer.padding)
        cols = _axis(size_in[1], size_out[1], pool[1], strides[1], 1, layer.padding)
        pooling = tf.nn.avg_pool2d if average else tf.nn.max_pool2d
        return _Rule(
            "windowed",
            rows,
            cols,
            0.0 if average else -math.inf,
            lambda x, p=pool, s=strides, f=pooling: f(x, p, s, "VALID"),
        )
    return _Rule("full")


def _conv_op(layer: Any, strides: tuple[int, int], dilation: tuple[int, int]) -> Callable[[tf.Tensor], tf.Tensor]:
    """The conv layer on a padded window with VALID padding: the same sums as the layer, bias and activation."""
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)

    def run(x: tf.Tensor) -> tf.Tensor:
        kernel = tf.cast(layer.kernel, x.dtype)
        if depthwise:
            y = tf.nn.depthwise_conv2d(x, kernel, (1, *strides, 1), "VALID", dilations=dilation)
        else:
            y = tf.nn.convolution(x, kernel, strides=strides, padding="VALID", dilations=dilation)
        if layer.use_bias:
            y = y + tf.cast(layer.bias, y.dtype)
        return layer.activation(y) if layer.activation is not None else y

    return run


def _nodes(model: keras.Model) -> Iterator[Any]:
    """The model's computing nodes in an order where every input is computed first."""
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                yield node


def supports_incremental(model: keras.Model) -> tuple[bool, str]:
    """(whether some layer of ``model`` runs incrementally, a one-line reason). It does when the model's input
    reaches at least one windowed layer through pointwise, pad and merge layers only."""
    if len(model.inputs) != 1 or len(model.outputs) != 1 or len(model.inputs[0].shape) != 4:
        return False, "one 4-D image input and one output are needed"
    region = {id(model.inputs[0])}
    for node in _nodes(model):
        if not any(id(t) in region for t in node.input_tensors):
            continue
        rule = _rule(node)
        if rule.kind == "windowed":
            return True, f"incremental from the input to at least {node.operation.name!r}"
        if rule.kind == "full":
            return False, f"layer {node.operation.name!r} ({type(node.operation).__name__}) sees the whole image"
        region.add(id(node.output_tensors[0]))
    return False, "no conv or pooling layer on the image"


# ----------------------------------------------------------------------------------------------------------------
# The planner: window sizes and multiply-adds, in Python


@dataclass(frozen=True)
class OcclusionPlan:
    """What the engine does for one model and patch: windows per layer and the multiply-adds against naive."""

    incremental_layers: int  # nodes computed on a window smaller than the map
    total_layers: int
    macs_incremental: int  # per occluded copy, the layers' multiply-adds as the engine computes them
    macs_naive: int  # per occluded copy, one whole forward pass

    @property
    def macs_fraction(self) -> float:
        """Multiply-adds computed per copy over those of a whole forward pass (1.0 when nothing is saved)."""
        return self.macs_incremental / self.macs_naive if self.macs_naive else 1.0


class _PyOps:
    maximum = staticmethod(max)
    minimum = staticmethod(min)


def _layer_macs(node: Any, rows: int, cols: int) -> int:
    """Multiply-adds of a conv/dense node producing ``rows x cols`` output pixels (0 for cheap layers)."""
    layer = node.operation
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return 0
    per_pixel = 1
    for d in kernel.shape:
        per_pixel *= int(d)
    if isinstance(layer, keras.layers.DepthwiseConv2D) or isinstance(layer, keras.layers.Conv2D):
        return per_pixel * rows * cols
    return per_pixel  # dense: once per copy


def plan(model: keras.Model, patch: int, stride: int) -> OcclusionPlan:
    """The engine's windows for ``patch`` x ``patch`` occlusion at ``stride`` on ``model``, over one pass holding
    every position of the grid (the window sizes the in-graph code uses when a chunk holds a full-size patch)."""
    height, width = int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2])
    patch = max(1, min(patch, height, width))
    tops = list(range(0, height, stride))
    lefts = list(range(0, width, stride))
    # per tensor: (row starts per position, col starts per position, rows, cols, full map rows, full map cols)
    windows: dict[int, tuple[list[int], list[int], int, int, int, int]] = {}
    rh, rw = min(patch, height), min(patch, width)
    windows[id(model.inputs[0])] = (
        [min(t, height - rh) for t in tops],
        [min(x, width - rw) for x in lefts],
        rh,
        rw,
        height,
        width,
    )
    incremental = total = macs_inc = macs_naive = 0
    for node in _nodes(model):
        total += 1
        out = node.output_tensors[0]
        spatial = len(out.shape) == 4
        out_h, out_w = (int(out.shape[1]), int(out.shape[2])) if spatial else (1, 1)
        full_macs = _layer_macs(node, out_h, out_w)
        macs_naive += full_macs
        ins = [windows.get(id(t)) for t in node.input_tensors]
        rule = _rule(node)
        if any(w is None for w in ins) or rule.kind == "full" or not ins:
            macs_inc += full_macs
            continue
        if rule.kind == "pointwise":
            window = ins[0]
        elif rule.kind == "pad":
            r0, c0, h, w, _, _ = ins[0]
            window = ([r + rule.rows.before for r in r0], [c + rule.cols.before for c in c0], h, w, out_h, out_w)
        elif rule.kind == "merge":
            r_lo = [min(w[0][i] for w in ins) for i in range(len(ins[0][0]))]
            r_hi = [max(w[0][i] + w[2] for w in ins) for i in range(len(ins[0][0]))]
            c_lo = [min(w[1][i] for w in ins) for i in range(len(ins[0][1]))]
            c_hi = [max(w[1][i] + w[3] for w in ins) for i in range(len(ins[0][1]))]
            window = _settle(r_lo, r_hi, c_lo, c_hi, out_h, out_w)
        else:
            r0, c0, h, w, _, _ = ins[0]
            rows = [rule.rows.output_range(r, r + h - 1, out_h, _PyOps) for r in r0]
            cols = [rule.cols.output_range(c, c + w - 1, out_w, _PyOps) for c in c0]
            window = _settle(
                [a for a, _ in rows],
                [b + 1 for _, b in rows],
                [a for a, _ in cols],
                [b + 1 for _, b in cols],
                out_h,
                out_w,
            )
        windows[id(out)] = window
        _, _, h, w, _, _ = window
        if h * w < out_h * out_w:
            incremental += 1
        macs_inc += _layer_macs(node, h, w)
    return OcclusionPlan(incremental, total, macs_inc, macs_naive)


def _settle(
    r_lo: list[int], r_hi: list[int], c_lo: list[int], c_hi: list[int], out_h: int, out_w: int
) -> tuple[list[int], list[int], int, int, int, int]:
    """Windows [lo, hi) per position made one size (the largest), kept inside the map, grown to the whole map past
    ``FULL_AREA_FRACTION``: the in-graph ``_settle`` in Python."""
    h = max(1, max(b - a for a, b in zip(r_lo, r_hi, strict=True)))
    w = max(1, max(b - a for a, b in zip(c_lo, c_hi, strict=True)))
    h, w = min(h, out_h), min(w, out_w)
    if h * w >= FULL_AREA_FRACTION * out_h * out_w:
        h, w = out_h, out_w
    return [min(max(a, 0), out_h - h) for a in r_lo], [min(max(a, 0), out_w - w) for a in c_lo], h, w, out_h, out_w


# ----------------------------------------------------------------------------------------------------------------
# The graph


@dataclass(frozen=True)
class _Window:
    """One 4-D tensor of the occluded copies: the base tensor of each copy's image plus its changed window."""

    base: tf.Tensor  # [B,h,w,c] the tensor for the unoccluded images
    values: tf.Tensor  # [m,rh,rw,c] each copy's values inside its window
    top: tf.Tensor  # [m] int32, the window's first row
    left: tf.Tensor  # [m] int32, the window's first column
    ids: tf.Tensor  # [m] int32, the image of each copy

    @property
    def size(self) -> tuple[int, int]:
        return int(self.base.shape[1]), int(self.base.shape[2])


def _tf_settle(
    r_lo: tf.Tensor, r_hi: tf.Tensor, c_lo: tf.Tensor, c_hi: tf.Tensor, out_h: int, out_w: int
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(top [m], left [m], rows, cols): one window size for all copies, see the planner's ``_settle``."""
    h = tf.minimum(tf.maximum(tf.reduce_max(r_hi - r_lo), 1), out_h)
    w = tf.minimum(tf.maximum(tf.reduce_max(c_hi - c_lo), 1), out_w)
    whole = tf.cast(h * w, tf.float32) >= FULL_AREA_FRACTION * out_h * out_w
    h = tf.where(whole, out_h, h)
    w = tf.where(whole, out_w, w)
    top = tf.clip_by_value(r_lo, 0, out_h - h)
    left = tf.clip_by_value(c_lo, 0, out_w - w)
    return top, left, h, w


def _crop(
    state: _Window,
    top: tf.Tensor,
    left: tf.Tensor,
    rows: tf.Tensor,
    cols: tf.Tensor,
    pad: tuple[int, int, int, int],
    fill: float,
    padded_base: tf.Tensor,
) -> tf.Tensor:
    """Each copy's ``rows x cols`` window at (top, left) of its tensor padded by ``pad`` (top, bottom, left, right)
    with ``fill``: read from the copy's window where it changed, from ``padded_base`` elsewhere. [m,rows,cols,c]."""
    height, width = state.size
    whole = tf.logical_and(tf.equal(tf.shape(state.values)[1], height), tf.equal(tf.shape(state.values)[2], width))

    def from_whole() -> tf.Tensor:
        # the window is the whole map: the padded copy, cut to the window (every copy has the same one)
        padded = tf.pad(state.values, [[0, 0], [pad[0], pad[1]], [pad[2], pad[3]], [0, 0]], constant_values=fill)
        return padded[:, top[0] : top[0] + rows, left[0] : left[0] + cols, :]

    def from_parts() -> tf.Tensor:
        ys = top[:, tf.newaxis] + tf.range(rows)[tf.newaxis, :]  # [m, rows], padded coordinates
        xs = left[:, tf.newaxis] + tf.range(cols)[tf.newaxis, :]
        base = _gather_windows(padded_base, state.ids, ys, xs)
        ry = ys - (state.top + pad[0])[:, tf.newaxis]
        rx = xs - (state.left + pad[2])[:, tf.newaxis]
        vh, vw = tf.shape(state.values)[1], tf.shape(state.values)[2]
        inside = ((ry >= 0) & (ry < vh))[:, :, tf.newaxis] & ((rx >= 0) & (rx < vw))[:, tf.newaxis, :]
        item = tf.range(tf.shape(top)[0])
        changed = _gather_windows(state.values, item, tf.clip_by_value(ry, 0, vh - 1), tf.clip_by_value(rx, 0, vw - 1))
        return tf.where(inside[..., tf.newaxis], changed, base)

    return tf.cond(whole, from_whole, from_parts)


def _gather_windows(source: tf.Tensor, items: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor) -> tf.Tensor:
    """``source[items[i], ys[i][:, None], xs[i][None, :]]`` for each i: [m, len(ys[i]), len(xs[i]), c]."""
    shape = tf.stack([tf.shape(items)[0], tf.shape(ys)[1], tf.shape(xs)[1]])
    index = tf.stack(
        [
            tf.broadcast_to(items[:, tf.newaxis, tf.newaxis], shape),
            tf.broadcast_to(ys[:, :, tf.newaxis], shape),
            tf.broadcast_to(xs[:, tf.newaxis, :], shape),
        ],
        axis=-1,
    )
    return tf.gather_nd(source, index)


def _materialize(state: _Window) -> tf.Tensor:
    """The whole copies [m,h,w,c]."""
    height, width = state.size
    zero = tf.zeros_like(state.top)
    return _crop(state, zero, zero, tf.constant(height), tf.constant(width), (0, 0, 0, 0), 0.0, state.base)


class IncrementalOcclusion:
    """The exact occluded outputs of one functional Keras model, computed incrementally (see the module docstring).

    ``base(images)`` runs the model once on the unoccluded images and keeps every layer's output (and each windowed
    layer's padded input); ``occluded(base, ids, tops, lefts, patches, grey)`` then returns the model's output for
    each copy: image ``ids[i]`` with the square ``patches[i]`` at (``tops[i]``, ``lefts[i]``) set to ``grey``, cut at
    the border. Raises ValueError for a model the engine cannot run (:func:`supports_incremental`).
    """

    def __init__(self, model: keras.Model) -> None:
        ok, reason = supports_incremental(model)
        if not ok:
            raise ValueError(f"incremental occlusion does not apply: {reason}")
        self.model = model
        self.reason = reason
        self._rules = {id(node): _rule(node) for node in _nodes(model)}

    def base(self, images: tf.Tensor) -> dict[int, tf.Tensor]:
        """Every tensor of the model for ``images`` [B,H,W,C], keyed by its symbolic tensor's id, plus each windowed
        node's padded input (keyed by the node's id)."""
        values: dict[int, tf.Tensor] = {id(self.model.inputs[0]): images}
        for node in _nodes(self.model):
            args, kwargs = node.arguments.fill_in(values)
            kwargs = {**kwargs, "training": False} if _takes_training(node.operation) else kwargs
            out = node.operation(*args, **kwargs)
            values[id(node.output_tensors[0])] = out
            rule = self._rules[id(node)]
            if rule.kind == "windowed":
                (inp,) = node.input_tensors
                pad = [[0, 0], [rule.rows.before, rule.rows.after], [rule.cols.before, rule.cols.after], [0, 0]]
                values[id(node)] = tf.pad(values[id(inp)], pad, constant_values=rule.fill)
        return values

    def output(self, base: dict[int, tf.Tensor]) -> tf.Tensor:
        """The model's output for the unoccluded images, from ``base``."""
        return base[id(self.model.outputs[0])]

    def occluded(
        self,
        base: dict[int, tf.Tensor],
        ids: tf.Tensor,
        tops: tf.Tensor,
        lefts: tf.Tensor,
        patches: tf.Tensor,
        grey: float,
    ) -> tf.Tensor:
        """The model's output [m, ...] for the m occluded copies (see the class docstring)."""
        images = base[id(self.model.inputs[0])]
        height, width = int(images.shape[1]), int(images.shape[2])
        size = tf.reduce_max(patches)
        rows, cols = tf.minimum(size, height), tf.minimum(size, width)
        top = tf.clip_by_value(tops, 0, height - rows)
        left = tf.clip_by_value(lefts, 0, width - cols)
        ys = top[:, tf.newaxis] + tf.range(rows)[tf.newaxis, :]
        xs = left[:, tf.newaxis] + tf.range(cols)[tf.newaxis, :]
        window = _gather_windows(images, ids, ys, xs)
        ys = ys - tops[:, tf.newaxis]
        xs = xs - lefts[:, tf.newaxis]
        in_patch = ((ys >= 0) & (ys < patches[:, tf.newaxis]))[:, :, tf.newaxis] & (
            (xs >= 0) & (xs < patches[:, tf.newaxis])
        )[:, tf.newaxis, :]
        values = tf.where(in_patch[..., tf.newaxis], tf.constant(grey, window.dtype), window)
        states: dict[int, Any] = {id(self.model.inputs[0]): _Window(images, values, top, left, ids)}
        for node in _nodes(self.model):
            states[id(node.output_tensors[0])] = self._step(node, states, base)
        out = states[id(self.model.outputs[0])]
        return _materialize(out) if isinstance(out, _Window) else out

    def _step(self, node: Any, states: dict[int, Any], base: dict[int, tf.Tensor]) -> Any:
        layer = node.operation
        rule = self._rules[id(node)]
        ins = [states[id(t)] for t in node.input_tensors]
        out_base = base[id(node.output_tensors[0])]
        windows = [s for s in ins if isinstance(s, _Window)]
        if rule.kind == "full" or len(windows) != len(ins):
            pairs = zip(node.input_tensors, ins, strict=True)
            whole = {id(t): (_materialize(s) if isinstance(s, _Window) else s) for t, s in pairs}
            args, kwargs = node.arguments.fill_in(whole)
            kwargs = {**kwargs, "training": False} if _takes_training(layer) else kwargs
            return layer(*args, **kwargs)
        first = windows[0]
        out_h, out_w = int(out_base.shape[1]), int(out_base.shape[2])
        if rule.kind == "pointwise":
            kwargs = {"training": False} if _takes_training(layer) else {}
            return _Window(out_base, layer(first.values, **kwargs), first.top, first.left, first.ids)
        if rule.kind == "pad":
            return _Window(
                out_base, first.values, first.top + rule.rows.before, first.left + rule.cols.before, first.ids
            )
        if rule.kind == "merge":
            r_lo = tf.reduce_min(tf.stack([s.top for s in windows]), axis=0)
            r_hi = tf.reduce_max(tf.stack([s.top + tf.shape(s.values)[1] for s in windows]), axis=0)
            c_lo = tf.reduce_min(tf.stack([s.left for s in windows]), axis=0)
            c_hi = tf.reduce_max(tf.stack([s.left + tf.shape(s.values)[2] for s in windows]), axis=0)
            top, left, rows, cols = _tf_settle(r_lo, r_hi, c_lo, c_hi, out_h, out_w)
            crops = [_crop(s, top, left, rows, cols, (0, 0, 0, 0), 0.0, s.base) for s in windows]
            return _Window(out_base, layer(crops), top, left, first.ids)
        # windowed
        vh, vw = tf.shape(first.values)[1], tf.shape(first.values)[2]
        r_first, r_last = rule.rows.output_range(first.top, first.top + vh - 1, out_h, tf.math)
        c_first, c_last = rule.cols.output_range(first.left, first.left + vw - 1, out_w, tf.math)
        top, left, rows, cols = _tf_settle(r_first, r_last + 1, c_first, c_last + 1, out_h, out_w)
        in_rows = (rows - 1) * rule.rows.stride + rule.rows.span
        in_cols = (cols - 1) * rule.cols.stride + rule.cols.span
        pad = (rule.rows.before, rule.rows.after, rule.cols.before, rule.cols.after)
        window = _crop(
            first, top * rule.rows.stride, left * rule.cols.stride, in_rows, in_cols, pad, rule.fill, base[id(node)]
        )
        return _Window(out_base, rule.op(window), top, left, first.ids)


def _takes_training(layer: Any) -> bool:
    return bool(getattr(layer, "_call_has_training_arg", False))
