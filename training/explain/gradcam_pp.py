"""Grad-CAM++ (Chattopadhay et al., 2018): Grad-CAM with per-location weights, so several instances or a large object
count in full instead of being averaged away.

With ``g = dS_c/dA`` (``S_c`` the class logit, see ``training.explain.cams``), the paper's closed form for an
exponential score gives, per channel ``k`` and location ``(i, j)``,
``alpha = g^2 / (2 g^2 + sum_ab A_k(a, b) g^3)`` (0 where the denominator is 0), the channel weight
``w_k = sum_ij alpha * ReLU(g)`` and the map ``sum_k w_k A_k``. ``layers`` fuses that map over the deepest conv
layers (1 = the Grad-CAM layer, the paper's setting).
"""

from __future__ import annotations

import tensorflow as tf

from training.explain.base import ExplainMethod, Inputs
from training.explain.cams import UNSUPPORTED, explain_fused_cam, has_cam_layers
from training.explain.model import ExplainModel

__all__ = ["METHOD", "gradcam_pp_map", "explain_gradcam_pp"]


def gradcam_pp_map(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++'s map of one layer: activations, gradients [B,h,w,K] -> the signed map [B,h,w] (no ReLU)."""
    g2 = tf.square(gradients)
    g3 = g2 * gradients
    total = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)  # [B,1,1,K]
    denominator = 2.0 * g2 + total * g3
    alpha = tf.where(denominator != 0.0, tf.math.divide_no_nan(g2, denominator), 0.0)
    weights = tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=(1, 2))  # [B,K]
    return tf.einsum("bhwk,bk->bhw", activations, weights)


def explain_gradcam_pp(model: ExplainModel, inputs: Inputs) -> dict[str, tf.Tensor]:
    """Grad-CAM++ of the class logit. Cost: one forward pass and one backward pass to the deepest fused layer."""
    return explain_fused_cam(model, inputs, gradcam_pp_map)


METHOD = ExplainMethod(
    name="gradcam_pp",
    build=explain_gradcam_pp,
    summary="Grad-CAM++ (Chattopadhay et al. 2018): per-location weights of the logit's gradients, fused over the "
    "deepest `layers` conv layers",
    supports=has_cam_layers,
    unsupported=UNSUPPORTED,
)
