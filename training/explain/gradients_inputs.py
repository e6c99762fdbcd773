"""Gradients x inputs (tf-explain's GradientsInputs): the vanilla gradient times the 0-255 pixels.

``attribution`` [B,H,W,C], signed; ``heatmap`` as for vanilla gradients. Cost: one forward and one backward pass.
"""

from __future__ import annotations

import tensorflow as tf

from training.explain.base import ExplainMethod, Inputs, gate, saliency_result
from training.explain.model import ExplainModel
from training.explain.vanilla_gradients import input_gradients

__all__ = ["METHOD", "explain_gradients_inputs"]


def explain_gradients_inputs(model: ExplainModel, inputs: Inputs) -> dict[str, tf.Tensor]:
    """The gradients x inputs map of each image for its target class."""
    (images,) = gate(inputs)
    grads, target, probabilities = input_gradients(model, images, inputs.class_index)
    attribution = grads * images
    return saliency_result(attribution, model.config.heatmap_percentile, target, probabilities)


METHOD = ExplainMethod(
    name="gradients_inputs",
    build=explain_gradients_inputs,
    summary="Gradients x inputs: the vanilla gradient times `x` (0-255)",
)
