"""The model side of the in-graph explanations: what a classifier must look like, and its one forward pass.

``ExplainModel`` checks a functional Keras classifier once (float32 pixels 0-255 in, softmax probabilities out), finds
what the methods differentiate (tf-explain's "score", the logits for a stable ``log p_c``, the Grad-CAM activations)
and builds the forward models that yield all of them in one pass. Every method module takes an ``ExplainModel``; none
of them looks at Keras layers itself. ``ExplainerConfig`` holds the knobs that bound memory and cost.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from training.explain.calibrate import Calibration, fastest_batch

__all__ = ["ExplainerConfig", "ExplainModel", "Forward"]

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
# One calibration per model: every explainer of it (the exporter's, a callback's per method) reuses it.
_CALIBRATIONS: weakref.WeakKeyDictionary[Any, Calibration] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ExplainerConfig:
    """Knobs that bound memory and cost; none of them changes a map.

    chunk_size: images per forward/backward pass when a method expands one image into many (occlusion positions,
        SmoothGrad samples, integrated-gradients steps); the expanded images of the whole batch are packed densely.
        It is fixed when the graph is traced. None measures it when the explainer is built: the batch size at which
        this model's forward pass is fastest per image on this machine (``training.explain.calibrate``; once per
        model, a few seconds for MobileNetV2 224). The fastest size depends on the model and the device (4 on one
        2-core CPU, 32 on another; a GPU gains from larger ones), so export on the kind of machine that will serve,
        or set it.
    max_occlusion_positions: upper bound on patch positions per image (a request over it fails with a clear
        InvalidArgumentError instead of running for minutes).
    heatmap_percentile: gradient-method heatmaps are divided by this percentile of the per-pixel magnitude and
        clipped to [0, 1] (the SmoothGrad paper's display convention), so one hot pixel does not blank the map.
    occlusion_engine: how occlusion's exact mode computes the occluded copies: "auto" measures the incremental
        engine against whole forward passes for this model on this machine when the signature is traced and takes
        the faster (``training.explain.occlusion.occlusion_engine``); "incremental" or "naive" fix it (the map is
        the same; "incremental" raises ValueError for a model whose layers it cannot run).
    """

    chunk_size: int | None = None
    max_occlusion_positions: int = 4096
    heatmap_percentile: float = 99.0
    occlusion_engine: str = "auto"

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.max_occlusion_positions < 1:
            raise ValueError(f"max_occlusion_positions must be >= 1, got {self.max_occlusion_positions}")
        if not 0.0 < self.heatmap_percentile <= 100.0:
            raise ValueError(f"heatmap_percentile must be in (0, 100], got {self.heatmap_percentile}")
        if self.occlusion_engine not in ("auto", "incremental", "naive"):
            raise ValueError(f"occlusion_engine must be auto, incremental or naive, got {self.occlusion_engine!r}")


@dataclass(frozen=True)
class Forward:
    """One forward pass, float32 throughout."""

    probabilities: tf.Tensor  # [B,C], the model output
    score: tf.Tensor  # [B,C], what tf-explain's VanillaGradients differentiates
    log_probabilities: tf.Tensor  # [B,C], computed stably from the logits where the model exposes them
    activations: tf.Tensor | None  # [B,h,w,K], the Grad-CAM layer
    logits: tf.Tensor | None = None  # [B,C], the softmax's input where the model exposes it


class ExplainModel:
    """A functional Keras classifier, checked and prepared for the in-graph methods.

    ``model``: a functional Keras model, one input [H,W,C] taking float32 pixels 0-255 (preprocessing inside), one
    softmax output [B,C]. ``gradcam_layer``: the top-level layer whose 4-D output Grad-CAM weighs (the last conv
    activation), or None when the model has none. ``activation_layers``: the top-level layers with 4-D outputs whose
    channels ``activations`` may show, selected per example by index; the Grad-CAM layer is always one of them
    (appended when missing) and is what index -1 picks (``default_layer``). None: just the Grad-CAM layer.
    Raises ValueError for a model or layer that does not fit.

    ``chunk_size``: the images per pass of the expanding methods, as the config gives it or as measured;
    ``calibration``: that measurement (None when the config fixed the size), which the exporter records.
    """

    def __init__(
        self,
        model: keras.Model,
        gradcam_layer: str | None,
        config: ExplainerConfig | None = None,
        activation_layers: Sequence[str] | None = None,
    ) -> None:
        self.config = config or ExplainerConfig()
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
        layer_outputs = [_layer_output(model, name) for name in names]
        self.activation_layers: tuple[str, ...] = tuple(names)
        self.activation_shapes: tuple[tuple[int, int, int], ...] = tuple(
            (int(t.shape[1]), int(t.shape[2]), int(t.shape[3])) for t in layer_outputs
        )
        self.default_layer = names.index(gradcam_layer) if gradcam_layer is not None else len(names) - 1
        self._layers_net = (
            keras.Model(model.input, [model.output, *layer_outputs], name=f"{model.name}_activations")
            if names
            else None
        )
        # the CAM methods: the output, the logits' source and every activation layer, in one pass
        self._cam_net = (
            keras.Model(model.input, [*outputs[: self._activation_index], *layer_outputs], name=f"{model.name}_cams")
            if names and self._activation_index is not None
            else None
        )
        # measured last, once the model has passed every check
        self.calibration: Calibration | None
        self.chunk_size: int
        if self.config.chunk_size is None:
            self.calibration = _calibrated(model, self.image_shape)
            self.chunk_size = self.calibration.chunk_size
        else:
            self.calibration = None
            self.chunk_size = self.config.chunk_size

    @property
    def has_gradcam_layer(self) -> bool:
        """Whether the model has a Grad-CAM layer (``forward`` then returns its activations)."""
        return self._activation_index is not None

    @property
    def has_activation_layers(self) -> bool:
        """Whether any layer's channels can be shown (``layer_outputs`` works)."""
        return self._layers_net is not None

    def forward(self, images: tf.Tensor) -> Forward:
        """The model on ``images`` [B,H,W,C]: probabilities, score, log-probabilities and Grad-CAM activations."""
        outs = self._net(images, training=False)
        if not isinstance(outs, (list, tuple)):  # a one-output functional model returns the bare tensor
            outs = [outs]
        # float32 throughout, also for a mixed-precision model (its output and activations may be float16)
        return self._forward_of([tf.cast(t, tf.float32) for t in outs])

    def cam_forward(self, images: tf.Tensor) -> tuple[Forward, list[tf.Tensor]]:
        """One pass for the CAM methods: the :class:`Forward` of ``images`` (its ``activations`` are the Grad-CAM
        layer's) and every activation layer's output (float32), in ``activation_layers`` order, the Grad-CAM layer
        included. Raises ValueError when the model has no Grad-CAM layer."""
        if self._cam_net is None:
            raise ValueError("this model has no Grad-CAM layer (no 4-D conv activation); use another method")
        outs = [tf.cast(t, tf.float32) for t in self._cam_net(images, training=False)]
        layers = outs[self._activation_index :]
        head = outs[: self._activation_index]
        grad_layer = layers[self.activation_layers.index(self.gradcam_layer)]
        return self._forward_of([*head, grad_layer]), layers

    def _forward_of(self, outs: list[tf.Tensor]) -> Forward:
        """The :class:`Forward` of ``self._net``'s outputs (float32)."""
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
        return Forward(probabilities, outs[self._score_index], log_probabilities, activations, logits)

    def layer_outputs(self, images: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """One pass for ``activations``: the probabilities [B,C] (float32) and each activation layer's raw output, in
        ``activation_layers`` order. Raises ValueError when the model has no activation layer."""
        if self._layers_net is None:
            raise ValueError("this model has no activation layer (no 4-D conv activation); use another method")
        outs = self._layers_net(images, training=False)
        return tf.cast(outs[0], tf.float32), list(outs[1:])


def _calibrated(model: keras.Model, image_shape: tuple[int, int, int]) -> Calibration:
    """``model``'s fastest forward batch size here, measured on first use (:func:`fastest_batch`)."""
    calibration = _CALIBRATIONS.get(model)
    if calibration is None:
        calibration = _CALIBRATIONS[model] = fastest_batch(model, image_shape)
    return calibration


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


def _layer_output(model: keras.Model, name: str) -> Any:
    """The 4-D output of the top-level layer ``name`` with static h, w, K, in ``model``'s graph."""
    try:
        layer = model.get_layer(name)
    except ValueError as e:
        raise ValueError(f"activation layer {name!r} is not a top-level layer of the model") from e
    output = _connected_output(model, layer)
    shape = tuple(output.shape)
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ValueError(f"activation layer {name!r} must have a 4-D output with static h, w, K; got {shape}")
    return output
