"""Keras layers of Glimpse's own, registered so a saved ``.keras`` model that holds them loads again.

Import this module before ``keras.models.load_model`` of such a model (``training.export`` does).
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["ReverseChannels"]


@keras.saving.register_keras_serializable(package="glimpse")
class ReverseChannels(keras.layers.Layer):
    """RGB to BGR (or back): the channel axis reversed, as Caffe-style preprocessing wants.

    A layer rather than a ``Lambda`` so that the model serialises without executing code and so that the incremental
    occlusion engine knows it is pointwise (``glimpse_pointwise``): each output pixel depends on its own input pixel.
    """

    glimpse_pointwise = True

    def call(self, inputs: Any) -> Any:
        return keras.ops.flip(inputs, axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape
