"""HiResCAM (Draelos and Carin, 2020): the gradient times the activation at every location, summed over channels.

Grad-CAM averages each channel's gradient over the whole grid before weighting, which can move the map away from
where the evidence is; HiResCAM keeps the gradient where it is: ``sum_k g_k * A_k`` with ``g = dS_c/dA`` (``S_c`` the
class logit, see ``training.explain.cams``). For a model that ends in global average pooling and one dense layer it is
exactly each location's contribution to the logit. ``layers`` fuses the map over the deepest conv layers (1 = the
Grad-CAM layer, the paper's setting).
"""

from __future__ import annotations

import tensorflow as tf

from training.explain.base import ExplainMethod, Inputs
from training.explain.cams import UNSUPPORTED, explain_fused_cam, has_cam_layers
from training.explain.model import ExplainModel

__all__ = ["METHOD", "hirescam_map", "explain_hirescam"]


def hirescam_map(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """HiResCAM's map of one layer: activations, gradients [B,h,w,K] -> ``sum_k g * A`` [B,h,w], signed."""
    return tf.reduce_sum(gradients * activations, axis=-1)


def explain_hirescam(model: ExplainModel, inputs: Inputs) -> dict[str, tf.Tensor]:
    """HiResCAM of the class logit. Cost: one forward pass and one backward pass to the deepest fused layer."""
    return explain_fused_cam(model, inputs, hirescam_map)


METHOD = ExplainMethod(
    name="hirescam",
    build=explain_hirescam,
    summary="HiResCAM (Draelos and Carin 2020): gradient x activation per location, fused over the deepest "
    "`layers` conv layers",
    supports=has_cam_layers,
    unsupported=UNSUPPORTED,
)
