"""``GraphExplainer``: one model, every registered method, by name; what the exporter and the studies call.

It checks the model once (:class:`~training.explain.model.ExplainModel`) and dispatches each request through the
registry: prepare the inputs from the contract's parameters, refuse a method the model cannot serve, build the
method's graph. ``function(method)`` is the ``tf.function`` the exporter puts behind ``explain_<method>``. Each
registered method is also reachable as an attribute taking its parameters positionally, e.g.
``explainer.smoothgrad(images, class_index, num_samples, noise, seed)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from glimpse_wire.contract import IN_CLASS_INDEX, IN_IMAGES
from training.explain.activations import grid_shapes
from training.explain.base import param_dtype, prepare
from training.explain.calibrate import Calibration
from training.explain.model import ExplainerConfig, ExplainModel
from training.explain.occlusion import EngineChoice, occlusion_engine
from training.explain.registry import REGISTRY, attribution_methods, get_method

__all__ = ["GraphExplainer"]


class GraphExplainer:
    """In-graph explanations of one functional Keras classifier.

    ``model``: a functional Keras model, one input [H,W,C] taking float32 pixels 0-255 (preprocessing inside), one
    softmax output [B,C]. ``gradcam_layer``: the top-level layer whose 4-D output Grad-CAM weighs (the last conv
    activation), or None when the model has none (then ``gradcam`` raises ValueError; the other methods work).

    ``activation_layers``: the top-level layers with 4-D outputs whose channels ``activations`` may show, selected
    per example by index; the Grad-CAM layer is always one of them (appended when missing) and is what index -1
    picks. None: just the Grad-CAM layer. Without any, ``activations`` raises ValueError.

    Every method takes ``images`` float32 [B,H,W,C] 0-255, ``class_index`` int32 [B] (-1 = predicted class) and its
    parameters from ``METHOD_PARAMS`` as [B] tensors (a scalar is broadcast), and returns a dict keyed by the
    contract's output aliases (``glimpse_wire.contract.explain_outputs``): heatmap, attribution, class_index, score,
    probabilities for the class-attribution methods; grid, raw activations and their shapes for ``activations``.
    """

    def __init__(
        self,
        model: keras.Model,
        gradcam_layer: str | None,
        config: ExplainerConfig | None = None,
        activation_layers: Sequence[str] | None = None,
    ) -> None:
        self._model = ExplainModel(model, gradcam_layer, config, activation_layers)

    # The checked model's facts, for callers (the exporter writes them into the model card)

    @property
    def model(self) -> keras.Model:
        """The Keras classifier explained."""
        return self._model.model

    @property
    def config(self) -> ExplainerConfig:
        return self._model.config

    @property
    def chunk_size(self) -> int:
        """Images per forward/backward pass of the expanding methods (``ExplainerConfig.chunk_size``, resolved)."""
        return self._model.chunk_size

    @property
    def calibration(self) -> Calibration | None:
        """How ``chunk_size`` was measured on this machine, or None when the config fixed it."""
        return self._model.calibration

    @property
    def occlusion_engine(self) -> EngineChoice:
        """How occlusion's exact mode computes the occluded copies for this model here, and why (measured on first
        use unless ``ExplainerConfig.occlusion_engine`` fixes it)."""
        return occlusion_engine(self._model)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the model input."""
        return self._model.image_shape

    @property
    def num_classes(self) -> int:
        return self._model.num_classes

    @property
    def gradcam_layer(self) -> str | None:
        return self._model.gradcam_layer

    @property
    def activation_layers(self) -> tuple[str, ...]:
        """The layers ``activations`` may show, in index order (the Grad-CAM layer included)."""
        return self._model.activation_layers

    @property
    def activation_shapes(self) -> tuple[tuple[int, int, int], ...]:
        """(h, w, K) of each activation layer."""
        return self._model.activation_shapes

    @property
    def grid_shapes(self) -> tuple[tuple[int, int], ...]:
        """(rows, cols) of each activation layer's channel grid."""
        return grid_shapes(self._model)

    @property
    def methods(self) -> tuple[str, ...]:
        """The class-attribution methods this model supports (all six, or five without a Grad-CAM layer)."""
        return tuple(name for name in attribution_methods() if REGISTRY[name].supports(self._model))

    @property
    def signature_methods(self) -> tuple[str, ...]:
        """Every method this model can serve: ``methods`` plus ``activations`` when it has activation layers."""
        return tuple(name for name, method in REGISTRY.items() if method.supports(self._model))

    # ------------------------------------------------------------------------------------------------------------

    def explain(self, method: str, images: Any, class_index: Any, **params: Any) -> dict[str, tf.Tensor]:
        """Run ``method`` (one of contract.EXPLAIN_METHODS) with its parameters given by name."""
        spec = get_method(method)
        if not spec.supports(self._model):
            raise ValueError(spec.unsupported)
        return spec.build(self._model, prepare(self._model, method, images, class_index, params))

    def input_signature(self, method: str) -> list[tf.TensorSpec]:
        """TensorSpecs (batch dimension unknown) of (images, class_index, *params) in METHOD_PARAMS order."""
        spec = get_method(method)
        return [
            tf.TensorSpec([None, *self.image_shape], tf.float32, name=IN_IMAGES),
            tf.TensorSpec([None], tf.int32, name=IN_CLASS_INDEX),
            *(tf.TensorSpec([None], param_dtype(p), name=p.name) for p in spec.params),
        ]

    def function(self, method: str) -> Callable[..., dict[str, tf.Tensor]]:
        """A ``tf.function`` of ``method`` with ``input_signature(method)``: args (images, class_index, *params)."""
        names = [p.name for p in get_method(method).params]

        def call(images: tf.Tensor, class_index: tf.Tensor, *values: tf.Tensor) -> dict[str, tf.Tensor]:
            return self.explain(method, images, class_index, **dict(zip(names, values, strict=True)))

        # No autograph: the methods use explicit tf.while_loop / tf.map_fn. (Autograph caches the conversion of
        # `call` per code object; with a stale cache entry a later method's function ran an earlier one's method.)
        return tf.function(call, input_signature=self.input_signature(method), autograph=False)

    def __getattr__(self, name: str) -> Callable[..., dict[str, tf.Tensor]]:
        """``explainer.<method>(images, class_index, *params, **params)`` for every registered method."""
        if name.startswith("_") or name not in REGISTRY:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        names = [p.name for p in REGISTRY[name].params]

        def run(images: Any, class_index: Any, *args: Any, **kwargs: Any) -> dict[str, tf.Tensor]:
            if len(args) > len(names):
                raise TypeError(f"{name}: takes {len(names)} parameters ({', '.join(names)}), got {len(args)}")
            return self.explain(name, images, class_index, **dict(zip(names, args, strict=False)), **kwargs)

        run.__name__ = name
        run.__doc__ = REGISTRY[name].build.__doc__
        return run

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *REGISTRY})
