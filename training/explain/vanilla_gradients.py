"""Vanilla gradients, i.e. saliency (tf-explain's VanillaGradients): d score_c / d pixels.

The score is tf-explain's choice: the input of the final activation layer if the model ends with one (the logits),
else the output probability. ``attribution`` is the signed gradient [B,H,W,C]; ``heatmap`` is ``saliency_heatmap``
(sum of |.| over channels, divided by a high percentile, clipped). Cost: one forward and one backward pass per image.
``input_gradients`` is shared with gradients x inputs.
"""

from __future__ import annotations

import tensorflow as tf

from training.explain.base import ExplainMethod, Inputs, attribution_result, gate, saliency_heatmap, target_class
from training.explain.model import ExplainModel

__all__ = ["METHOD", "input_gradients", "explain_vanilla_gradients"]


def input_gradients(
    model: ExplainModel, images: tf.Tensor, class_index: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Gradient of tf-explain's VanillaGradients score for the target class w.r.t. the pixels: (gradients
    [B,H,W,C], target class [B], probabilities [B,C])."""
    with tf.GradientTape() as tape:
        tape.watch(images)
        fwd = model.forward(images)
        target = target_class(class_index, fwd.probabilities)
        selected = tf.gather(fwd.score, target, batch_dims=1)
    return tape.gradient(selected, images), target, fwd.probabilities


def explain_vanilla_gradients(model: ExplainModel, inputs: Inputs) -> dict[str, tf.Tensor]:
    """The saliency map of each image for its target class."""
    (images,) = gate(inputs)
    grads, target, probabilities = input_gradients(model, images, inputs.class_index)
    return attribution_result(saliency_heatmap(grads, model.config.heatmap_percentile), grads, target, probabilities)


METHOD = ExplainMethod(
    name="vanilla_gradients",
    build=explain_vanilla_gradients,
    summary="Saliency: `d score_c / dx` (the logits if the model ends in an activation layer, else `p_c`)",
)
