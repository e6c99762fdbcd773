"""Integrated gradients of the class probability from a black baseline (tf-explain's IntegratedGradients path).

``x * mean_k dp_c/dx (x * k / (n - 1))``, ``k = 0..n-1``: tf-explain's grid, both ends included; ``n = 1`` uses the
image itself (tf-explain divides by zero there). The deliberate difference: tf-explain 0.3.1 returns the
path-averaged gradients without the ``(x - baseline)`` factor; Glimpse multiplies by it (the definition in
Sundararajan et al., 2017), so attributions sum to about ``p_c(x) - p_c(black)``. ``attribution`` [B,H,W,C], signed.
Cost: 1 + ``n_steps`` forward, ``n_steps`` backward passes per image.
"""

from __future__ import annotations

import tensorflow as tf

from training.explain.base import (
    ExplainMethod,
    Inputs,
    expand,
    expanded_sum,
    gate,
    saliency_result,
    target_class,
)
from training.explain.model import ExplainModel

__all__ = ["METHOD", "path_alphas", "explain_integrated_gradients"]


def path_alphas(step: tf.Tensor, n_steps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Position of integration step ``step`` (0-based) on the straight path from the black baseline, as the fraction
    (numerator, denominator) = (step, n - 1): tf-explain's grid including both ends. A single step (n = 1) uses the
    image itself (1 / 1). Points are formed as ``x * numerator / denominator`` in that order, which rounds like
    tf-explain's float64 ``x * index / (n_steps - 1)`` for 0-255 integer pixels."""
    step = tf.cast(step, tf.float32)
    n = tf.cast(n_steps, tf.float32)
    single = n <= 1
    return tf.where(single, tf.ones_like(step), step), tf.where(single, tf.ones_like(n), n - 1)


def explain_integrated_gradients(model: ExplainModel, inputs: Inputs) -> dict[str, tf.Tensor]:
    """The integrated-gradients map of each image for its target class."""
    (images,) = gate(inputs)
    probabilities = model.forward(images).probabilities
    target = target_class(inputs.class_index, probabilities)
    n_steps = inputs.params["n_steps"]
    total, ids, local = expand(n_steps)

    def path_gradients(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        item = tf.gather(ids, idx)
        numerator, denominator = path_alphas(tf.gather(local, idx), tf.gather(n_steps, item))
        shape = [-1, 1, 1, 1]
        point = tf.gather(images, item) * tf.reshape(numerator, shape) / tf.reshape(denominator, shape)
        with tf.GradientTape() as tape:
            tape.watch(point)
            probs = model.forward(point).probabilities
            selected = tf.gather(probs, tf.gather(target, item), batch_dims=1)
        return item, tape.gradient(selected, point)

    summed = expanded_sum(model, total, tf.shape(images)[0], path_gradients)
    mean_gradients = summed / tf.reshape(tf.cast(n_steps, tf.float32), [-1, 1, 1, 1])
    attribution = mean_gradients * images
    return saliency_result(attribution, model.config.heatmap_percentile, target, probabilities)


METHOD = ExplainMethod(
    name="integrated_gradients",
    build=explain_integrated_gradients,
    summary="Integrated gradients from a black baseline: `x` times the mean `dp_c / dx` along the path",
)
