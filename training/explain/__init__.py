"""The in-graph explanation methods: one module per method, behind a registry, with ``GraphExplainer`` in front.

Every method is built from TensorFlow ops only: no Python-side state, no numpy, nothing eager-only. Each traces inside
a ``tf.function`` whose batch dimension is unknown, so ``training.export`` can put it behind an ``explain_<method>``
signature that TF Serving runs in a graph session. Every parameter is per example (a [B] tensor), as
``glimpse_wire.contract.METHOD_PARAMS`` names them.

Layout:

- ``model.py``: the classifier checked once and its forward pass (``ExplainModel``, ``ExplainerConfig``).
- ``base.py``: what the methods share: the registry record (``ExplainMethod``), per-example inputs and their checks
  (``prepare``), batch expansion, heatmap normalisation, the result dict.
- one module per method, named as the contract names it: ``gradcam.py``, ``occlusion.py``, ``vanilla_gradients.py``,
  ``gradients_inputs.py``, ``smoothgrad.py``, ``integrated_gradients.py``, ``gradcam_pp.py``, ``hirescam.py``,
  ``layercam.py``, ``activations.py``; each defines ``METHOD``.
- ``cams.py``: what Grad-CAM++, HiResCAM and LayerCAM share (the logit they differentiate, the fusion of their maps
  over the deepest conv layers, per example).
- ``incremental.py``: exact incremental occlusion (each occluded copy recomputes only the windows its patch
  changes), which ``occlusion.py``'s exact mode uses where the model's layers allow and it was measured faster.
- ``calibrate.py``: the chunk size of the expanding methods, measured per model on this machine.
- ``registry.py``: contract name -> ``ExplainMethod``, read by the exporter, the benchmarks and the docs table.
- ``explainer.py``: ``GraphExplainer``, the facade that callers use.

Adding a method: a new module ``<method>.py`` defining ``METHOD = ExplainMethod(name="<method>", build=..., ...)``,
plus the method's name and parameters in ``glimpse_wire.contract`` (``ATTRIBUTION_METHODS`` and ``METHOD_PARAMS``).

The maths follow tf-explain 0.3.1 (``tf_explain/core``) with these deliberate differences, all documented in
docs/explanations.md and checked by tests/training/test_explain_parity.py:

- Grad-CAM: ``attribution`` is tf-explain's raw cam; ``heatmap`` applies a ReLU before the max-normalisation
  (tf-explain min-max normalises the signed cam for display).
- SmoothGrad: tf-explain averages the gradient of the categorical cross-entropy, i.e. of ``-log p_c``; Glimpse
  returns the gradient of ``+log p_c`` so that, as for every gradient method here, positive means "more of the
  class". The noise is stateless (per-example seed) instead of ``np.random``.
- Integrated gradients: tf-explain 0.3.1 returns the path-averaged gradients without the ``(x - baseline)`` factor;
  Glimpse multiplies by it (the definition in Sundararajan et al., 2017), so attributions sum to about
  ``p_c(x) - p_c(black)``.
- Occlusion generalises tf-explain's grid (stride = patch size) to any stride; with stride = patch size the map is
  identical (in the exact and naive modes; the adaptive mode approximates it).
- Activations: one grid per image instead of one grid for the whole batch.

Grad-CAM++, HiResCAM and LayerCAM are not in tf-explain; they follow their papers (docs/explanations.md).

Shapes of ``attribution``: gradcam [B,h,w] (the conv grid); gradcam_pp, hirescam, layercam [B,H,W] (the fused map);
occlusion [B,H,W]; the four gradient methods
[B,H,W,C] (signed, before any channel reduction). ``heatmap`` is always [B,H,W] in [0, 1].
"""

from __future__ import annotations

from training.explain.activations import activation_grid, grid_side, tile_channels
from training.explain.base import ExplainMethod, Inputs, minmax_heatmap, saliency_heatmap
from training.explain.explainer import GraphExplainer
from training.explain.gradcam import gradcam_heatmap, gradcam_map
from training.explain.integrated_gradients import path_alphas
from training.explain.model import ExplainerConfig, ExplainModel
from training.explain.occlusion import GREY_VALUE, occlusion_geometry
from training.explain.registry import REGISTRY, attribution_methods, get_method, parameter_table, registered_methods
from training.explain.smoothgrad import smoothgrad_noise

__all__ = [
    "GREY_VALUE",
    "REGISTRY",
    "ExplainMethod",
    "ExplainModel",
    "ExplainerConfig",
    "GraphExplainer",
    "Inputs",
    "activation_grid",
    "attribution_methods",
    "get_method",
    "gradcam_heatmap",
    "gradcam_map",
    "grid_side",
    "minmax_heatmap",
    "occlusion_geometry",
    "parameter_table",
    "path_alphas",
    "registered_methods",
    "saliency_heatmap",
    "smoothgrad_noise",
    "tile_channels",
]
