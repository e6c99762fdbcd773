"""Grad-CAM (tf-explain's GradCAM): where the Grad-CAM layer's channels, weighted by the class's gradient, light up.

The weights of the channels ``A_k`` of the Grad-CAM layer (the last conv activation) are the spatial means of
``dp_c / dA_k``; the cam is ``sum_k w_k A_k``. Guided gradients (tf-explain's default) keep a gradient only where both
it and the activation are positive. The target is the class probability, as tf-explain (the paper uses the logit).
``attribution`` is tf-explain's raw cam [B,h,w] on the conv grid; the deliberate difference is the ``heatmap``: a ReLU
before the upsampling and the division by the maximum (tf-explain min-max normalises the signed cam for display).
"""

from __future__ import annotations

import tensorflow as tf

from training.explain.base import ExplainMethod, Inputs, attribution_result, gate, target_class
from training.explain.model import ExplainModel

__all__ = ["METHOD", "gradcam_map", "gradcam_heatmap", "explain_gradcam"]


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


def explain_gradcam(model: ExplainModel, inputs: Inputs) -> dict[str, tf.Tensor]:
    """Grad-CAM of the class probability at the Grad-CAM layer. Cost: one forward and one backward pass (to the
    Grad-CAM layer) per image."""
    (images,) = gate(inputs)
    with tf.GradientTape() as tape:
        fwd = model.forward(images)
        target = target_class(inputs.class_index, fwd.probabilities)
        selected = tf.gather(fwd.probabilities, target, batch_dims=1)
    grads = tape.gradient(selected, fwd.activations)
    cam = gradcam_map(fwd.activations, grads, inputs.params["use_guided_grads"])
    heatmap = gradcam_heatmap(cam, model.image_shape[:2])
    return attribution_result(heatmap, cam, target, fwd.probabilities)


def _has_gradcam_layer(model: ExplainModel) -> bool:
    return model.has_gradcam_layer


METHOD = ExplainMethod(
    name="gradcam",
    build=explain_gradcam,
    summary="Grad-CAM at the model card's `gradcam_layer` (the last 4-D conv activation)",
    supports=_has_gradcam_layer,
    unsupported="this model has no Grad-CAM layer (no 4-D conv activation); use another method",
)
