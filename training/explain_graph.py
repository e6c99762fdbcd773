"""The six explanation methods as in-graph TensorFlow functions.

``GraphExplainer`` wraps a functional Keras classifier (float32 pixels 0-255 in, softmax probabilities out) and builds
Grad-CAM, occlusion, vanilla gradients, gradients x inputs, SmoothGrad and integrated gradients from TensorFlow ops
only: no Python-side state, no numpy, nothing eager-only. Each method traces inside a ``tf.function`` whose batch
dimension is unknown, so ``training.export`` can put it behind an ``explain_<method>`` signature that TF Serving runs
in a graph session. Every parameter is per example (a [B] tensor), as ``glimpse_wire.contract.METHOD_PARAMS`` names
them.

The maths follow tf-explain 0.3.1 (``tf_explain/core``) with these deliberate differences, all documented in
docs/explanations.md and checked by tests/training/test_explain_parity.py:

- Grad-CAM: ``attribution`` is tf-explain's raw cam; ``heatmap`` applies a ReLU before the max-normalisation
  (tf-explain min-max normalises the signed cam for display).
- SmoothGrad: tf-explain averages the gradient of the categorical cross-entropy, i.e. of ``-log p_c``; Glimpse
  returns the gradient of ``+log p_c`` so that, as for every gradient method here, positive means "more of the
  class". The noise is stateless (per-example seed) instead of ``np.random``.
- Integrated gradients: tf-explain 0.3.1 returns the path-averaged gradients without the ``(x - baseline)`` factor;
  Glimpse multiplies by it (the definition in Sundararajan et al., 2017), so attributions sum to about
  ``p_c(x) - p_c(black)``.
- Occlusion generalises tf-explain's grid (stride = patch size) to any stride; with stride = patch size the map is
  identical.

Shapes of ``attribution``: gradcam [B,h,w] (the conv grid); occlusion [B,H,W]; the four gradient methods
[B,H,W,C] (signed, before any channel reduction). ``heatmap`` is always [B,H,W] in [0, 1].

``activations`` is no class attribution: it shows one conv layer's channels, tiled as tf-explain's
ActivationsVisualization (``ExtractActivations`` + ``utils.display.filter_display``) lays them out: channel k at tile
(k // n, k % n) of an n x n grid, n = ceil(sqrt(K)), missing tiles zero, the whole grid min-max normalised. The
deliberate difference: tf-explain tiles the channels of every image of a batch into one grid and normalises them
together; Glimpse makes one grid per image (the contract is per example), so a batch of one is tf-explain's grid.
The layer is chosen per example among ``activation_layers``; outputs are padded to the largest of them (see
``glimpse_wire.contract.ACTIVATIONS_OUTPUTS``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from glimpse_wire.contract import (
    ACTIVATIONS_METHOD,
    ATTRIBUTION_METHODS,
    EXPLAIN_METHODS,
    IN_CLASS_INDEX,
    IN_IMAGES,
    METHOD_PARAMS,
    OUT_ACTIVATION_SHAPE,
    OUT_ACTIVATIONS,
    OUT_ATTRIBUTION,
    OUT_CLASS_INDEX,
    OUT_GRID,
    OUT_GRID_SHAPE,
    OUT_HEATMAP,
    OUT_LAYER,
    OUT_LAYER_NAME,
    OUT_PROBABILITIES,
    OUT_SCORE,
)

__all__ = [
    "GREY_VALUE",
    "ExplainerConfig",
    "GraphExplainer",
    "gradcam_map",
    "gradcam_heatmap",
    "saliency_heatmap",
    "minmax_heatmap",
    "occlusion_geometry",
    "smoothgrad_noise",
    "path_alphas",
    "grid_side",
    "tile_channels",
    "activation_grid",
]

# tf-explain's occlusion patch value (utils/image.py apply_grey_patch); our models take 0-255, so it is mid-grey.
GREY_VALUE = 127.5

_DTYPES = {"int32": tf.int32, "float32": tf.float32, "bool": tf.bool}
# tf-explain's VanillaGradients.get_score_model: if the model ends with one of these, explain its input instead.
_ACTIVATION_LAYERS: tuple[type, ...] = tuple(
    cls
    for cls in (
        getattr(keras.layers, name, None)
        for name in ("Activation", "LeakyReLU", "PReLU", "ReLU", "Softmax", "ThresholdedReLU")
    )
    if cls is not None
)
_TINY = 1e-30
# Chunks of an expanded request in flight at once: the next chunk's forward starts while the previous one
# finishes, which keeps both cores of a small CPU busy at small batch sizes (about 20% faster occlusion on 2 cores).
_PARALLEL_CHUNKS = 2


@dataclass(frozen=True)
class ExplainerConfig:
    """Knobs that bound memory and cost; none of them changes a map.

    chunk_size: images per forward/backward pass when a method expands one image into many (occlusion positions,
        SmoothGrad samples, integrated-gradients steps); the expanded images of the whole batch are packed densely.
        It is fixed when the graph is traced; None picks 64 if a GPU is visible when the explainer is built, else 4
        (on 2 CPU cores MobileNetV2 224 runs fastest per image at batches of about 4, two chunks in flight: larger
        ones fall out of cache; a GPU wants 64 or more). Export on the kind of machine that will serve, or set it.
    max_occlusion_positions: upper bound on patch positions per image (a request over it fails with a clear
        InvalidArgumentError instead of running for minutes).
    heatmap_percentile: gradient-method heatmaps are divided by this percentile of the per-pixel magnitude and
        clipped to [0, 1] (the SmoothGrad paper's display convention), so one hot pixel does not blank the map.
    """

    chunk_size: int | None = None
    max_occlusion_positions: int = 4096
    heatmap_percentile: float = 99.0

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.max_occlusion_positions < 1:
            raise ValueError(f"max_occlusion_positions must be >= 1, got {self.max_occlusion_positions}")
        if not 0.0 < self.heatmap_percentile <= 100.0:
            raise ValueError(f"heatmap_percentile must be in (0, 100], got {self.heatmap_percentile}")


# ----------------------------------------------------------------------------------------------------------------
# Pure maths (tensors in, tensors out), each testable against hand-computed values.


def gradcam_map(activations: tf.Tensor, gradients: tf.Tensor, use_guided_grads: tf.Tensor) -> tf.Tensor:
    """Grad-CAM's weighted sum of feature maps, as tf-explain's ``ponderate_output``, batched and per example.

    activations, gradients: [B,h,w,K]; use_guided_grads: bool [B]. Guided gradients keep a gradient only where both
    it and the activation are positive. Returns the signed cam [B,h,w] (no ReLU).
    """
    guided = tf.cast(activations > 0, gradients.dtype) * tf.cast(gradients > 0, gradients.dtype) * gradients
    grads = tf.where(tf.reshape(tf.cast(use_guided_grads, tf.bool), [-1, 1, 1, 1]), guided, gradients)
    weights = tf.reduce_mean(grads, axis=(1, 2))  # [B,K]
    return tf.einsum("bhwk,bk->bhw", activations, weights)


def gradcam_heatmap(cam: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """ReLU, bilinear upsampling to ``size`` and division by the per-image maximum: [B,h,w] -> [B,H,W] in [0, 1]."""
    up = tf.image.resize(tf.nn.relu(cam)[..., tf.newaxis], size, method="bilinear")[..., 0]
    peak = tf.reduce_max(up, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(up, peak)


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


def smoothgrad_noise(
    image_shape: tuple[int, int, int], seed: tf.Tensor, sample: tf.Tensor, noise: tf.Tensor
) -> tf.Tensor:
    """The noise SmoothGrad adds to sample ``sample`` of an image with ``seed``: N(0, noise^2), shape ``image_shape``,
    from the stateless generator seeded with (seed, sample). Vectorised: seed, sample, noise are [M] -> [M,H,W,C]."""
    seeds = tf.stack([tf.cast(seed, tf.int32), tf.cast(sample, tf.int32)], axis=1)
    unit = tf.map_fn(
        lambda s: tf.random.stateless_normal(image_shape, seed=s, dtype=tf.float32),
        seeds,
        fn_output_signature=tf.TensorSpec(image_shape, tf.float32),
    )
    return unit * tf.reshape(tf.cast(noise, tf.float32), [-1, 1, 1, 1])


def path_alphas(step: tf.Tensor, n_steps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Position of integration step ``step`` (0-based) on the straight path from the black baseline, as the fraction
    (numerator, denominator) = (step, n - 1): tf-explain's grid including both ends. A single step (n = 1) uses the
    image itself (1 / 1). Points are formed as ``x * numerator / denominator`` in that order, which rounds like
    tf-explain's float64 ``x * index / (n_steps - 1)`` for 0-255 integer pixels."""
    step = tf.cast(step, tf.float32)
    n = tf.cast(n_steps, tf.float32)
    single = n <= 1
    return tf.where(single, tf.ones_like(step), step), tf.where(single, tf.ones_like(n), n - 1)


def grid_side(channels: int) -> int:
    """Tiles per side of the channel grid: ceil(sqrt(K)), as tf-explain's ``grid_display`` (exact integer maths)."""
    if channels < 1:
        raise ValueError(f"need at least one channel, got {channels}")
    return math.isqrt(channels - 1) + 1


def tile_channels(activations: tf.Tensor) -> tf.Tensor:
    """[B,h,w,K] -> [B,n*h,n*w]: channel k at tile row k // n, column k % n, n = ceil(sqrt(K)); missing tiles 0.

    tf-explain's ``filter_display`` for one image (``np.rollaxis`` to channels-first, then ``grid_display``).
    """
    height, width, channels = (int(d) for d in activations.shape[1:])
    n = grid_side(channels)
    first = tf.transpose(activations, [0, 3, 1, 2])  # [B,K,h,w]
    padded = tf.pad(first, [[0, 0], [0, n * n - channels], [0, 0], [0, 0]])
    tiles = tf.reshape(padded, [-1, n, n, height, width])  # [B,row,col,h,w]
    return tf.reshape(tf.transpose(tiles, [0, 1, 3, 2, 4]), [-1, n * height, n * width])


def activation_grid(activations: tf.Tensor) -> tf.Tensor:
    """The tiled channels min-max normalised per image over the whole grid, missing tiles included (as tf-explain
    normalises its grid): [B,h,w,K] -> [B,n*h,n*w] in [0, 1]; a constant grid becomes zeros."""
    return minmax_heatmap(tile_channels(tf.cast(activations, tf.float32)))


# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Forward:
    probabilities: tf.Tensor  # [B,C], the model output
    score: tf.Tensor  # [B,C], what tf-explain's VanillaGradients differentiates
    log_probabilities: tf.Tensor  # [B,C], computed stably from the logits where the model exposes them
    activations: tf.Tensor | None  # [B,h,w,K], the Grad-CAM layer


def _softmax_kind(layer: Any) -> str | None:
    """How the last layer turns logits into probabilities: 'input' (a softmax layer), 'dense' (Dense(softmax))."""
    activation = getattr(layer, "activation", None)
    is_softmax = getattr(activation, "__name__", "") == "softmax"
    if isinstance(layer, keras.layers.Softmax) or (isinstance(layer, keras.layers.Activation) and is_softmax):
        return "input"
    if isinstance(layer, keras.layers.Dense) and is_softmax:
        return "dense"
    return None


def _final_layer(model: keras.Model) -> tuple[Any, Any]:
    """The layer that produced the model's output in this model's graph, and its input tensor there."""
    history = model.output._keras_history
    node = history.operation._inbound_nodes[history.node_index]
    inputs = node.input_tensors
    return history.operation, inputs[0] if len(inputs) == 1 else None


def _connected_output(model: keras.Model, layer: Any) -> Any:
    """``layer``'s output on the node that belongs to ``model``'s graph (a layer may have several nodes)."""
    candidates = [t for node in layer._inbound_nodes for t in node.output_tensors]
    for tensor in candidates:
        try:
            keras.Model(model.input, tensor)
        except ValueError:
            continue
        return tensor
    raise ValueError(f"layer {layer.name!r} is not connected to the model's input")


class GraphExplainer:
    """In-graph explanations of one functional Keras classifier.

    ``model``: a functional Keras model, one input [H,W,C] taking float32 pixels 0-255 (preprocessing inside), one
    softmax output [B,C]. ``gradcam_layer``: the top-level layer whose 4-D output Grad-CAM weighs (the last conv
    activation), or None when the model has none (then ``gradcam`` raises ValueError; the other methods work).

    ``activation_layers``: the top-level layers with 4-D outputs whose channels ``activations`` may show, selected
    per example by index; the Grad-CAM layer is always one of them (appended when missing) and is what index -1
    picks. None: just the Grad-CAM layer. Without any, ``activations`` raises ValueError.

    Every method takes ``images`` float32 [B,H,W,C] 0-255, ``class_index`` int32 [B] (-1 = predicted class) and its
    parameters from ``METHOD_PARAMS`` as [B] tensors (a scalar is broadcast), and returns a dict keyed by the
    contract's output aliases (``glimpse_wire.contract.explain_outputs``): heatmap, attribution, class_index, score,
    probabilities for the class-attribution methods; grid, raw activations and their shapes for ``activations``.
    """

    def __init__(
        self,
        model: keras.Model,
        gradcam_layer: str | None,
        config: ExplainerConfig | None = None,
        activation_layers: Sequence[str] | None = None,
    ) -> None:
        self.config = config or ExplainerConfig()
        self.chunk_size = self.config.chunk_size or (64 if tf.config.list_physical_devices("GPU") else 4)
        if isinstance(model, keras.Sequential) or not hasattr(model, "inputs") or model.inputs is None:
            raise ValueError("GraphExplainer needs a functional Keras model: keras.Model(inputs, outputs)")
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                f"GraphExplainer needs one image input and one output, got {len(model.inputs)} inputs and "
                f"{len(model.outputs)} outputs"
            )
        shape = tuple(model.input.shape)
        if len(shape) != 4 or any(d is None for d in shape[1:]):
            raise ValueError(f"model input must be [B,H,W,C] with static H, W, C; got {shape}")
        if len(model.output.shape) != 2:
            raise ValueError(f"model output must be [B,C] class probabilities; got {tuple(model.output.shape)}")
        self.model = model
        self.image_shape: tuple[int, int, int] = (int(shape[1]), int(shape[2]), int(shape[3]))
        self.num_classes = int(model.output.shape[1])
        self.gradcam_layer = gradcam_layer

        # One forward model yields everything a method needs: the output, tf-explain's "score" (the input of a final
        # activation layer, else the output), the logits (for a stable log p_c) and the Grad-CAM activations.
        # The final layer is found through the output's history, not model.layers[-1]: a head layer may have been
        # called on other graphs too (e.g. trained on cached features), and only this model's node counts.
        last, last_input = _final_layer(model)
        outputs = [model.output]
        self._score_index = 0
        self._softmax_kind = _softmax_kind(last)
        self._dense = last if self._softmax_kind == "dense" else None
        self._logit_source: int | None = None
        if isinstance(last, _ACTIVATION_LAYERS) or self._softmax_kind == "dense":
            outputs.append(last_input)
            if isinstance(last, _ACTIVATION_LAYERS):
                self._score_index = len(outputs) - 1
            if self._softmax_kind is not None:
                self._logit_source = len(outputs) - 1
        self._activation_index: int | None = None
        if gradcam_layer is not None:
            try:
                layer = model.get_layer(gradcam_layer)
            except ValueError as e:
                raise ValueError(f"gradcam_layer {gradcam_layer!r} is not a top-level layer of the model") from e
            activations = _connected_output(model, layer)
            if len(activations.shape) != 4:
                raise ValueError(
                    f"gradcam_layer {gradcam_layer!r} has a {len(activations.shape)}-D output; Grad-CAM needs a 4-D "
                    "conv activation"
                )
            outputs.append(activations)
            self._activation_index = len(outputs) - 1
        self._net = keras.Model(model.input, outputs, name=f"{model.name}_explain")

        # activations: one more forward model, the output plus every selectable layer (one pass computes them all)
        names = list(dict.fromkeys(activation_layers or ()))
        if gradcam_layer is not None and gradcam_layer not in names:
            names.append(gradcam_layer)
        layer_outputs = [self._layer_output(model, name) for name in names]
        self.activation_layers: tuple[str, ...] = tuple(names)
        self.activation_shapes: tuple[tuple[int, int, int], ...] = tuple(
            (int(t.shape[1]), int(t.shape[2]), int(t.shape[3])) for t in layer_outputs
        )
        self._default_layer = names.index(gradcam_layer) if gradcam_layer is not None else len(names) - 1
        self._layers_net = (
            keras.Model(model.input, [model.output, *layer_outputs], name=f"{model.name}_activations")
            if names
            else None
        )

    @staticmethod
    def _layer_output(model: keras.Model, name: str) -> Any:
        try:
            layer = model.get_layer(name)
        except ValueError as e:
            raise ValueError(f"activation layer {name!r} is not a top-level layer of the model") from e
        output = _connected_output(model, layer)
        shape = tuple(output.shape)
        if len(shape) != 4 or any(d is None for d in shape[1:]):
            raise ValueError(f"activation layer {name!r} must have a 4-D output with static h, w, K; got {shape}")
        return output

    # ------------------------------------------------------------------------------------------------------------
    # Plumbing

    @property
    def methods(self) -> tuple[str, ...]:
        """The class-attribution methods this model supports (all six, or five without a Grad-CAM layer)."""
        return tuple(m for m in ATTRIBUTION_METHODS if m != "gradcam" or self._activation_index is not None)

    @property
    def signature_methods(self) -> tuple[str, ...]:
        """Every method this model can serve: ``methods`` plus ``activations`` when it has activation layers."""
        return tuple(m for m in EXPLAIN_METHODS if m in self.methods or (m == ACTIVATIONS_METHOD and self._has_layers))

    @property
    def _has_layers(self) -> bool:
        return self._layers_net is not None

    @property
    def grid_shapes(self) -> tuple[tuple[int, int], ...]:
        """(rows, cols) of each activation layer's channel grid."""
        return tuple((grid_side(k) * h, grid_side(k) * w) for h, w, k in self.activation_shapes)

    def _forward(self, images: tf.Tensor) -> _Forward:
        outs = self._net(images, training=False)
        if not isinstance(outs, (list, tuple)):  # a one-output functional model returns the bare tensor
            outs = [outs]
        # float32 throughout, also for a mixed-precision model (its output and activations may be float16)
        outs = [tf.cast(t, tf.float32) for t in outs]
        probabilities = outs[0]
        if self._softmax_kind == "input":
            logits = outs[self._logit_source]
        elif self._softmax_kind == "dense":
            dense = self._dense
            logits = tf.matmul(outs[self._logit_source], tf.cast(dense.kernel, tf.float32))
            if dense.use_bias:
                logits = logits + tf.cast(dense.bias, tf.float32)
        else:
            logits = None
        log_probabilities = (
            tf.nn.log_softmax(logits, axis=-1) if logits is not None else tf.math.log(tf.maximum(probabilities, _TINY))
        )
        activations = outs[self._activation_index] if self._activation_index is not None else None
        return _Forward(probabilities, outs[self._score_index], log_probabilities, activations)

    def _prepare(
        self, method: str, images: Any, class_index: Any, params: Mapping[str, Any]
    ) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor], list[tf.Operation]]:
        images = tf.convert_to_tensor(images, dtype=tf.float32)
        if images.shape.rank != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"{method}: images must be [B,{','.join(map(str, self.image_shape))}], got {images.shape}")
        batch = tf.shape(images)[0]
        checks = []
        class_index, check = self._per_example(method, IN_CLASS_INDEX, class_index, tf.int32, batch)
        checks.append(check)
        checks.append(
            tf.debugging.assert_less(
                class_index,
                self.num_classes,
                message=f"{method}: class_index must be -1 (predicted class) or in [0, {self.num_classes - 1}]",
            )
        )
        checks.append(
            tf.debugging.assert_greater_equal(
                class_index,
                -1,
                message=f"{method}: class_index must be -1 (predicted class) or in [0, {self.num_classes - 1}]",
            )
        )
        expected = {p.name: p for p in METHOD_PARAMS[method]}
        unknown = sorted(set(params) - set(expected))
        missing = sorted(set(expected) - set(params))
        if unknown or missing:
            raise TypeError(f"{method}: unexpected parameters {unknown}, missing parameters {missing}")
        values: dict[str, tf.Tensor] = {}
        for name, spec in expected.items():
            value, check = self._per_example(method, name, params[name], _DTYPES[spec.dtype], batch)
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
        return images, class_index, values, [c for c in checks if c is not None]

    @staticmethod
    def _per_example(method: str, name: str, value: Any, dtype: tf.DType, batch: tf.Tensor) -> tuple[tf.Tensor, Any]:
        value = tf.convert_to_tensor(value)
        if value.dtype != dtype:
            value = tf.cast(value, dtype)
        if value.shape.rank == 0:
            return tf.fill([batch], value), None
        if value.shape.rank not in (None, 1):
            raise ValueError(f"{method}: {name} must be a [B] tensor (one value per image), got shape {value.shape}")
        check = tf.debugging.assert_equal(
            tf.size(value), batch, message=f"{method}: {name} must have one value per image"
        )
        return tf.reshape(value, [-1]), check

    def _result(
        self,
        heatmap: tf.Tensor,
        attribution: tf.Tensor,
        class_index: tf.Tensor,
        probabilities: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        score = tf.gather(probabilities, class_index, batch_dims=1)
        return {
            OUT_HEATMAP: tf.identity(heatmap, name=OUT_HEATMAP),
            OUT_ATTRIBUTION: tf.identity(attribution, name=OUT_ATTRIBUTION),
            OUT_CLASS_INDEX: tf.identity(class_index, name=OUT_CLASS_INDEX),
            OUT_SCORE: tf.identity(score, name=OUT_SCORE),
            OUT_PROBABILITIES: tf.identity(probabilities, name=OUT_PROBABILITIES),
        }

    @staticmethod
    def _target(class_index: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return tf.where(class_index < 0, predicted, class_index)

    def _expanded_sum(
        self,
        total: tf.Tensor,
        batch: tf.Tensor,
        item_fn: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
    ) -> tf.Tensor:
        """Sum ``item_fn`` over items 0..total-1 in chunks of ``chunk_size``, per example.

        ``item_fn(idx [m]) -> (example ids [m], values [m,H,W,C])``; returns [B,H,W,C].
        """
        chunk = self.chunk_size
        n_chunks = (total + chunk - 1) // chunk

        def body(i: tf.Tensor, acc: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            idx = tf.range(i * chunk, tf.minimum((i + 1) * chunk, total))
            ids, values = item_fn(idx)
            return i + 1, acc + tf.math.unsorted_segment_sum(values, ids, batch)

        acc0 = tf.zeros(tf.concat([[batch], self.image_shape], axis=0), tf.float32)
        _, acc = tf.while_loop(
            lambda i, _: i < n_chunks, body, (tf.constant(0), acc0), parallel_iterations=_PARALLEL_CHUNKS
        )
        return acc

    def _expanded_values(self, total: tf.Tensor, item_fn: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
        """Concatenate ``item_fn(idx [m]) -> [m]`` over items 0..total-1, in chunks of ``chunk_size``."""
        chunk = self.chunk_size
        n_chunks = (total + chunk - 1) // chunk
        out0 = tf.TensorArray(tf.float32, size=n_chunks, infer_shape=False, element_shape=tf.TensorShape([None]))

        def body(i: tf.Tensor, out: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
            idx = tf.range(i * chunk, tf.minimum((i + 1) * chunk, total))
            return i + 1, out.write(i, item_fn(idx))

        _, out = tf.while_loop(
            lambda i, _: i < n_chunks, body, (tf.constant(0), out0), parallel_iterations=_PARALLEL_CHUNKS
        )
        return out.concat()

    @staticmethod
    def _expand(counts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Items of a ragged per-example expansion: (total, example id per item, index within its example)."""
        total = tf.reduce_sum(counts)
        starts = tf.cumsum(counts, exclusive=True)
        ids = tf.repeat(tf.range(tf.size(counts)), counts)
        local = tf.range(total) - tf.gather(starts, ids)
        return total, ids, local

    # ------------------------------------------------------------------------------------------------------------
    # The six methods

    def gradcam(self, images: Any, class_index: Any, use_guided_grads: Any) -> dict[str, tf.Tensor]:
        """Grad-CAM of the class probability at the Grad-CAM layer (tf-explain: ``predictions[:, class_index]``).

        attribution: the signed cam [B,h,w] (tf-explain's map before display); heatmap: ReLU, bilinear upsampling,
        divided by its maximum. Cost: one forward and one backward pass (to the Grad-CAM layer) per image.
        """
        if self._activation_index is None:
            raise ValueError("this model has no Grad-CAM layer (no 4-D conv activation); use another method")
        images, class_index, p, checks = self._prepare(
            "gradcam", images, class_index, {"use_guided_grads": use_guided_grads}
        )
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        with tf.GradientTape() as tape:
            fwd = self._forward(images)
            target = self._target(class_index, fwd.probabilities)
            selected = tf.gather(fwd.probabilities, target, batch_dims=1)
        grads = tape.gradient(selected, fwd.activations)
        cam = gradcam_map(fwd.activations, grads, p["use_guided_grads"])
        heatmap = gradcam_heatmap(cam, self.image_shape[:2])
        return self._result(heatmap, cam, target, fwd.probabilities)

    def occlusion(self, images: Any, class_index: Any, patch_size: Any, stride: Any) -> dict[str, tf.Tensor]:
        """Occlusion sensitivity (tf-explain's OcclusionSensitivity, generalised to any stride).

        Each patch position is replaced by grey (127.5); the map at that grid cell is 1 - p_c(occluded image); the
        grid is resized bilinearly to [H,W] (half-pixel centres, as tf-explain's cv2.resize). attribution: that
        [B,H,W] map; heatmap: min-max normalised. Cost: 1 + ceil(H/s) * ceil(W/s) forward passes per image, packed
        into batches of ``chunk_size`` across the whole request.
        """
        images, class_index, p, checks = self._prepare(
            "occlusion", images, class_index, {"patch_size": patch_size, "stride": stride}
        )
        height, width = self.image_shape[:2]
        patch, step, rows, cols = occlusion_geometry((height, width), p["patch_size"], p["stride"])
        counts = rows * cols
        limit = self.config.max_occlusion_positions
        checks.append(
            tf.debugging.assert_less_equal(
                counts,
                limit,
                message=f"occlusion: more than {limit} patch positions per image; use a larger patch size or stride",
            )
        )
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        probabilities = self._forward(images).probabilities
        target = self._target(class_index, probabilities)
        total, ids, local = self._expand(counts)
        tops = (local // tf.gather(cols, ids)) * tf.gather(step, ids)
        lefts = (local % tf.gather(cols, ids)) * tf.gather(step, ids)
        ys = tf.range(height)[tf.newaxis, :]
        xs = tf.range(width)[tf.newaxis, :]

        def occluded_confidence(idx: tf.Tensor) -> tf.Tensor:
            item = tf.gather(ids, idx)
            top = tf.gather(tops, idx)[:, tf.newaxis]
            left = tf.gather(lefts, idx)[:, tf.newaxis]
            size = tf.gather(patch, item)[:, tf.newaxis]
            in_rows = (ys >= top) & (ys < top + size)  # [m,H]
            in_cols = (xs >= left) & (xs < left + size)  # [m,W]
            mask = (in_rows[:, :, tf.newaxis] & in_cols[:, tf.newaxis, :])[..., tf.newaxis]
            occluded = tf.where(mask, tf.constant(GREY_VALUE, tf.float32), tf.gather(images, item))
            probs = self._forward(occluded).probabilities
            return tf.gather(probs, tf.gather(target, item), batch_dims=1)

        confidence = self._expanded_values(total, occluded_confidence)
        starts = tf.cumsum(counts, exclusive=True)

        def to_map(args: tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
            start, n, r, c = args
            grid = 1.0 - tf.reshape(confidence[start : start + n], tf.stack([r, c, 1]))
            return tf.image.resize(grid, (height, width), method="bilinear")[..., 0]

        attribution = tf.map_fn(
            to_map,
            (starts, counts, rows, cols),
            fn_output_signature=tf.TensorSpec((height, width), tf.float32),
        )
        return self._result(minmax_heatmap(attribution), attribution, target, probabilities)

    def _input_gradients(self, images: tf.Tensor, class_index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Gradient of tf-explain's VanillaGradients score for the target class w.r.t. the pixels."""
        with tf.GradientTape() as tape:
            tape.watch(images)
            fwd = self._forward(images)
            target = self._target(class_index, fwd.probabilities)
            selected = tf.gather(fwd.score, target, batch_dims=1)
        return tape.gradient(selected, images), target, fwd.probabilities

    def vanilla_gradients(self, images: Any, class_index: Any) -> dict[str, tf.Tensor]:
        """Saliency: d score_c / d pixels (tf-explain's VanillaGradients: the score is the input of a final activation
        layer if the model ends with one, else the output probability). attribution [B,H,W,C]. Cost: 1 fwd + 1 bwd.
        """
        images, class_index, _, checks = self._prepare("vanilla_gradients", images, class_index, {})
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        grads, target, probabilities = self._input_gradients(images, class_index)
        return self._result(saliency_heatmap(grads, self.config.heatmap_percentile), grads, target, probabilities)

    def gradients_inputs(self, images: Any, class_index: Any) -> dict[str, tf.Tensor]:
        """Gradients x inputs (tf-explain's GradientsInputs): the vanilla gradient times the 0-255 pixels.
        attribution [B,H,W,C]. Cost: 1 forward + 1 backward."""
        images, class_index, _, checks = self._prepare("gradients_inputs", images, class_index, {})
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        grads, target, probabilities = self._input_gradients(images, class_index)
        attribution = grads * images
        return self._result(
            saliency_heatmap(attribution, self.config.heatmap_percentile), attribution, target, probabilities
        )

    def smoothgrad(
        self, images: Any, class_index: Any, num_samples: Any, noise: Any, seed: Any
    ) -> dict[str, tf.Tensor]:
        """SmoothGrad: mean over ``num_samples`` noisy copies (x + N(0, noise^2), stateless, seeded per example) of
        d log p_c / d pixels (tf-explain: the same of -log p_c via categorical cross-entropy).
        attribution [B,H,W,C]. Cost: 1 + num_samples forward, num_samples backward passes per image."""
        images, class_index, p, checks = self._prepare(
            "smoothgrad", images, class_index, {"num_samples": num_samples, "noise": noise, "seed": seed}
        )
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        probabilities = self._forward(images).probabilities
        target = self._target(class_index, probabilities)
        total, ids, local = self._expand(p["num_samples"])

        def noisy_gradients(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            item = tf.gather(ids, idx)
            eps = smoothgrad_noise(
                self.image_shape, tf.gather(p["seed"], item), tf.gather(local, idx), tf.gather(p["noise"], item)
            )
            noisy = tf.gather(images, item) + eps
            with tf.GradientTape() as tape:
                tape.watch(noisy)
                log_p = self._forward(noisy).log_probabilities
                selected = tf.gather(log_p, tf.gather(target, item), batch_dims=1)
            return item, tape.gradient(selected, noisy)

        summed = self._expanded_sum(total, tf.shape(images)[0], noisy_gradients)
        attribution = summed / tf.reshape(tf.cast(p["num_samples"], tf.float32), [-1, 1, 1, 1])
        return self._result(
            saliency_heatmap(attribution, self.config.heatmap_percentile), attribution, target, probabilities
        )

    def integrated_gradients(self, images: Any, class_index: Any, n_steps: Any) -> dict[str, tf.Tensor]:
        """Integrated gradients of the class probability from a black baseline: (x - 0) times the mean gradient at
        x * k / (n_steps - 1), k = 0..n_steps-1 (tf-explain's path; tf-explain omits the (x - baseline) factor).
        attribution [B,H,W,C]. Cost: 1 + n_steps forward, n_steps backward passes per image."""
        images, class_index, p, checks = self._prepare(
            "integrated_gradients", images, class_index, {"n_steps": n_steps}
        )
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        probabilities = self._forward(images).probabilities
        target = self._target(class_index, probabilities)
        n_steps = p["n_steps"]
        total, ids, local = self._expand(n_steps)

        def path_gradients(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            item = tf.gather(ids, idx)
            numerator, denominator = path_alphas(tf.gather(local, idx), tf.gather(n_steps, item))
            shape = [-1, 1, 1, 1]
            point = tf.gather(images, item) * tf.reshape(numerator, shape) / tf.reshape(denominator, shape)
            with tf.GradientTape() as tape:
                tape.watch(point)
                probs = self._forward(point).probabilities
                selected = tf.gather(probs, tf.gather(target, item), batch_dims=1)
            return item, tape.gradient(selected, point)

        summed = self._expanded_sum(total, tf.shape(images)[0], path_gradients)
        mean_gradients = summed / tf.reshape(tf.cast(n_steps, tf.float32), [-1, 1, 1, 1])
        attribution = mean_gradients * images
        return self._result(
            saliency_heatmap(attribution, self.config.heatmap_percentile), attribution, target, probabilities
        )

    def activations(self, images: Any, class_index: Any, layer: Any) -> dict[str, tf.Tensor]:
        """The channels of one activation layer per image: ``layer`` [B] indexes ``activation_layers`` (-1 = the
        Grad-CAM layer). grid: ``activation_grid`` of that layer, zero padded to the largest grid among the layers
        (grid_shape says its own extent); activations: its raw [h,w,K] values flattened row-major, zero padded to the
        largest layer (activation_shape says h, w, K); layer / layer_name: the resolved choice; class_index, score,
        probabilities as for the other methods (the class is only reported: activations do not depend on it).
        Cost: one forward pass per image; every layer is tiled, then each image keeps its own.
        """
        if not self._has_layers:
            raise ValueError("this model has no activation layer (no 4-D conv activation); use another method")
        images, class_index, p, checks = self._prepare(ACTIVATIONS_METHOD, images, class_index, {"layer": layer})
        count = len(self.activation_layers)
        checks.append(
            tf.debugging.assert_less(
                p["layer"],
                count,
                message=f"activations: layer must be -1 (the Grad-CAM layer) or in [0, {count - 1}], an index into "
                "the model card's activation_layers",
            )
        )
        with tf.control_dependencies(checks):  # the layer, too: gathering with a bad index must wait for its check
            images = tf.identity(images)
            layer = tf.identity(p["layer"])
        chosen = tf.where(layer < 0, self._default_layer, layer)
        outs = self._layers_net(images, training=False)
        probabilities = tf.cast(outs[0], tf.float32)
        target = self._target(class_index, probabilities)
        rows = max(h for h, _ in self.grid_shapes)
        cols = max(w for _, w in self.grid_shapes)
        size = max(h * w * k for h, w, k in self.activation_shapes)
        grids, raws = [], []
        for out, (h, w, k) in zip(outs[1:], self.activation_shapes, strict=True):
            values = tf.cast(out, tf.float32)
            grid = activation_grid(values)
            grids.append(tf.pad(grid, [[0, 0], [0, rows - int(grid.shape[1])], [0, cols - int(grid.shape[2])]]))
            raws.append(tf.pad(tf.reshape(values, [-1, h * w * k]), [[0, 0], [0, size - h * w * k]]))
        grid = tf.gather(tf.stack(grids, axis=1), chosen, batch_dims=1)
        raw = tf.gather(tf.stack(raws, axis=1), chosen, batch_dims=1)
        score = tf.gather(probabilities, target, batch_dims=1)
        return {
            OUT_GRID: tf.identity(grid, name=OUT_GRID),
            OUT_GRID_SHAPE: tf.gather(tf.constant(self.grid_shapes, tf.int32), chosen, name=OUT_GRID_SHAPE),
            OUT_ACTIVATIONS: tf.identity(raw, name=OUT_ACTIVATIONS),
            OUT_ACTIVATION_SHAPE: tf.gather(
                tf.constant(self.activation_shapes, tf.int32), chosen, name=OUT_ACTIVATION_SHAPE
            ),
            OUT_LAYER: tf.identity(chosen, name=OUT_LAYER),
            OUT_LAYER_NAME: tf.gather(tf.constant(list(self.activation_layers)), chosen, name=OUT_LAYER_NAME),
            OUT_CLASS_INDEX: tf.identity(target, name=OUT_CLASS_INDEX),
            OUT_SCORE: tf.identity(score, name=OUT_SCORE),
            OUT_PROBABILITIES: tf.identity(probabilities, name=OUT_PROBABILITIES),
        }

    # ------------------------------------------------------------------------------------------------------------
    # Conveniences for callers that do not build their own signatures

    def explain(self, method: str, images: Any, class_index: Any, **params: Any) -> dict[str, tf.Tensor]:
        """Dispatch to ``method`` by name (one of contract.EXPLAIN_METHODS)."""
        if method not in EXPLAIN_METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(EXPLAIN_METHODS)}")
        return getattr(self, method)(images, class_index, **params)

    def input_signature(self, method: str) -> list[tf.TensorSpec]:
        """TensorSpecs (batch dimension unknown) of (images, class_index, *params) in METHOD_PARAMS order."""
        if method not in EXPLAIN_METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(EXPLAIN_METHODS)}")
        specs = [
            tf.TensorSpec([None, *self.image_shape], tf.float32, name=IN_IMAGES),
            tf.TensorSpec([None], tf.int32, name=IN_CLASS_INDEX),
        ]
        specs += [tf.TensorSpec([None], _DTYPES[p.dtype], name=p.name) for p in METHOD_PARAMS[method]]
        return specs

    def function(self, method: str) -> Callable[..., dict[str, tf.Tensor]]:
        """A ``tf.function`` of ``method`` with ``input_signature(method)``: args (images, class_index, *params)."""
        if method not in EXPLAIN_METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(EXPLAIN_METHODS)}")
        names = [p.name for p in METHOD_PARAMS[method]]
        bound = getattr(self, method)

        def call(images: tf.Tensor, class_index: tf.Tensor, *values: tf.Tensor) -> dict[str, tf.Tensor]:
            return bound(images, class_index, **dict(zip(names, values, strict=True)))

        # No autograph: the methods use explicit tf.while_loop / tf.map_fn. (Autograph caches the conversion of
        # `call` per code object; with a stale cache entry a later method's function ran an earlier one's `bound`.)
        return tf.function(call, input_signature=self.input_signature(method), autograph=False)
