"""What the class-activation-map methods beyond tf-explain's Grad-CAM share: the target score and the fusion of CAMs
computed at several conv layers.

``gradcam_pp``, ``hirescam`` and ``layercam`` differ only in how one layer's activations ``A`` [B,h,w,K] and the
gradients ``g = dS_c/dA`` become a map [B,h,w] (a ``LayerCam`` function). Everything else is here:

- the score ``S_c`` is the class logit (the softmax's input) where the model exposes it, else ``log p_c``: the
  papers differentiate the pre-softmax score, and Grad-CAM++'s weights assume it (they are not scale-invariant);
- ``layers`` (per example, the contract's parameter) picks the conv layers: the Grad-CAM layer and the model card's
  ``activation_layers`` before it, deepest first (1 = the Grad-CAM layer alone, as in the papers). Each layer's map
  gets a ReLU, a bilinear upsampling to the input size and a division by its own maximum; the fused map is the
  geometric mean of those (``FUSION_FLOOR`` keeps the logarithm finite), so every layer weighs the same whatever the
  scale of its activations, and a location is high only where every layer agrees: the deep layer says which object,
  the shallow ones where its pixels are. The arithmetic mean, used before, let the deep layer's 5x5 blob spread mass
  over the background; on the default export's natural-background composites it put 0.17 of the map's mass in the
  object's box against 0.36 for the geometric mean, with the same pointing game (docs/explanations.md);
- one forward pass computes every layer, and the backward pass reaches only as deep as the batch's largest
  ``layers`` asks (a ``tf.switch_case`` on it): a request for the Grad-CAM layer alone costs what Grad-CAM costs.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from training.explain.base import Inputs, attribution_result, gate, target_class
from training.explain.model import ExplainModel, Forward

__all__ = [
    "FUSION_FLOOR",
    "UNSUPPORTED",
    "LayerCam",
    "class_score",
    "deepest_first",
    "explain_fused_cam",
    "fused_cam",
    "has_cam_layers",
    "layer_weights",
    "normalised_up",
]

# one layer's activations [B,h,w,K] and the score's gradients there -> the layer's signed map [B,h,w]
LayerCam = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
# A layer's normalised map is floored here before the logarithm of the geometric mean: a pixel that one layer gives 0
# fuses to about 1e-4 of the peak (three layers), and a layer that is 0 everywhere scales the whole map by a constant
# that the heatmap's normalisation removes, leaving the other layers' fusion.
FUSION_FLOOR = 1e-12


def class_score(fwd: Forward, target: tf.Tensor) -> tf.Tensor:
    """The differentiated score of class ``target`` [B]: the logit where the model exposes it, else ``log p_c``."""
    scores = fwd.logits if fwd.logits is not None else fwd.log_probabilities
    return tf.gather(scores, target, batch_dims=1)


def deepest_first(model: ExplainModel) -> list[int]:
    """Indices into ``model.activation_layers``, deepest first: the Grad-CAM layer, then the others from the last."""
    default = model.activation_layers.index(model.gradcam_layer)
    return [default, *(i for i in reversed(range(len(model.activation_layers))) if i != default)]


def layer_weights(layers: tf.Tensor, available: int) -> tf.Tensor:
    """Per example, the weight of each of the ``available`` layers (deepest first) in the fused map: 1/n for the
    first n = min(layers, available), 0 after. layers: int32 [B] (>= 1). Returns float32 [B, available]."""
    n = tf.clip_by_value(layers, 1, available)
    used = tf.cast(tf.range(available)[tf.newaxis, :] < n[:, tf.newaxis], tf.float32)
    return used / tf.cast(n, tf.float32)[:, tf.newaxis]


def normalised_up(cam: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """ReLU, bilinear upsampling to ``size``, division by the per-image maximum: [B,h,w] -> [B,H,W] in [0, 1]."""
    up = tf.image.resize(tf.nn.relu(cam)[..., tf.newaxis], size, method="bilinear")[..., 0]
    return tf.math.divide_no_nan(up, tf.reduce_max(up, axis=(1, 2), keepdims=True))


def fused_cam(model: ExplainModel, inputs: Inputs, layer_cam: LayerCam) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The fused map [B,H,W] (in [0, 1]: the geometric mean of the layers' normalised maps), the probabilities [B,C]
    and the explained class [B] of a CAM method whose per-layer map is ``layer_cam``, over the ``layers`` deepest conv
    layers of each example."""
    (images,) = gate(inputs)
    order = deepest_first(model)
    available = len(order)
    weights = layer_weights(inputs.params["layers"], available)  # [B, available]
    size = model.image_shape[:2]

    # persistent: every branch is traced, and each asks the tape for its own gradients (only one branch runs)
    with tf.GradientTape(persistent=True) as tape:
        fwd, outputs = model.cam_forward(images)
        target = target_class(inputs.class_index, fwd.probabilities)
        score = class_score(fwd, target)

    def branch(depth: int) -> Callable[[], tf.Tensor]:
        def run() -> tf.Tensor:
            sources = [outputs[i] for i in order[:depth]]
            grads = tape.gradient(score, sources)
            log_fused = tf.zeros(tf.concat([tf.shape(images)[:1], size], axis=0), tf.float32)
            for j, (activations, gradients) in enumerate(zip(sources, grads, strict=True)):
                up = normalised_up(layer_cam(activations, gradients), size)
                log_fused += weights[:, j, tf.newaxis, tf.newaxis] * tf.math.log(tf.maximum(up, FUSION_FLOOR))
            return tf.exp(log_fused)

        return run

    # One forward pass; the backward pass goes only as deep as the deepest layer any example asks for (an empty
    # batch, whose maximum is of nothing, takes the last branch).
    deepest = tf.minimum(tf.reduce_max(tf.clip_by_value(inputs.params["layers"], 1, available)), available) - 1
    fused = tf.switch_case(deepest, [branch(d) for d in range(1, available + 1)])
    return fused, fwd.probabilities, target


def explain_fused_cam(model: ExplainModel, inputs: Inputs, layer_cam: LayerCam) -> dict[str, tf.Tensor]:
    """The contract's outputs of a CAM method: ``attribution`` is the fused map [B,H,W] at the input size (each layer
    already ReLU'd and max-normalised), ``heatmap`` that map divided by its maximum."""
    fused, probabilities, target = fused_cam(model, inputs, layer_cam)
    heatmap = tf.math.divide_no_nan(fused, tf.reduce_max(fused, axis=(1, 2), keepdims=True))
    return attribution_result(heatmap, fused, target, probabilities)


def has_cam_layers(model: ExplainModel) -> bool:
    """Whether the model has a Grad-CAM layer (then it has activation layers too)."""
    return model.has_gradcam_layer


UNSUPPORTED = "this model has no Grad-CAM layer (no 4-D conv activation); use another method"
