"""LayerCAM (Jiang et al., 2021): per-location positive gradients times activations, fused across conv layers.

Per layer, ``ReLU(sum_k ReLU(g_k) * A_k)`` with ``g = dS_c/dA`` (``S_c`` the class logit, see
``training.explain.cams``): like HiResCAM, but only the locations whose gradient raises the score count. The paper's
point is that this stays reliable at shallow, high-resolution layers, whose maps it fuses with the deep one's: the
last conv activation of a small-input backbone is a coarse grid (5x5 for EfficientNet-Lite0 at 160 px) whose peak
often lands beside a small object. ``layers`` fuses the map over the Grad-CAM layer and the model card's
``activation_layers`` before it (the paper fuses with a maximum after a tanh rescaling of the shallow maps; Glimpse
takes the geometric mean of the max-normalised maps, high only where the layers agree: a shallow layer's stray peak
and the deep layer's coarse blob over the background both fall away; see ``training.explain.cams``).
"""

from __future__ import annotations

import tensorflow as tf

from training.explain.base import ExplainMethod, Inputs
from training.explain.cams import UNSUPPORTED, explain_fused_cam, has_cam_layers
from training.explain.model import ExplainModel

__all__ = ["METHOD", "layercam_map", "explain_layercam"]


def layercam_map(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """LayerCAM's map of one layer: activations, gradients [B,h,w,K] -> ``sum_k ReLU(g) * A`` [B,h,w], signed."""
    return tf.reduce_sum(tf.nn.relu(gradients) * activations, axis=-1)


def explain_layercam(model: ExplainModel, inputs: Inputs) -> dict[str, tf.Tensor]:
    """LayerCAM of the class logit. Cost: one forward pass and one backward pass to the deepest fused layer."""
    return explain_fused_cam(model, inputs, layercam_map)


METHOD = ExplainMethod(
    name="layercam",
    build=explain_layercam,
    summary="LayerCAM (Jiang et al. 2021): positive gradient x activation per location, fused over the deepest "
    "`layers` conv layers",
    supports=has_cam_layers,
    unsupported=UNSUPPORTED,
)
