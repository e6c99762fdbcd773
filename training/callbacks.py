"""Explanations while training: Grad-CAM, occlusion and activation images of fixed validation images in TensorBoard.

``glimpse train --explain-every N`` calls ``explanation_callbacks``: the first K images of the validation split are
taken once before ``fit`` and, every N epochs, explained for their true class and written into the run's
TensorBoard directory (Images tab) under ``explain/<method>/<class>``, at ``step = epoch`` (0-based, as Keras'
TensorBoard callback logs its epoch scalars). Images of one class share one grid, because tf-explain's callbacks
explain one class index per callback.

Who draws each picture (``engine``):

- ``tf-explain``: tf-explain 0.3.1's own ``GradCAMCallback``, ``OcclusionSensitivityCallback`` and
  ``ActivationsVisualizationCallback``, unchanged. Under Keras 3 they need three things from us: the Grad-CAM layer
  by name (their automatic choice reads ``layer.output_shape``, gone in Keras 3), ``uint8`` images (their overlay
  multiplies float images by 255, which wraps 0-255 pixels around) and silence for a Keras warning that
  ``GradCAM`` triggers on every call (it builds ``Model([model.inputs], ...)``); the model's ``predict`` progress
  bars inside the callbacks are switched off too.
- ``glimpse``: Glimpse's in-graph methods (``training.explain.GraphExplainer``, the code behind the served
  ``explain_gradcam`` / ``explain_occlusion`` / ``explain_activations`` signatures), drawn with tf-explain's own
  display functions (``heatmap_display``, ``grid_display``), so the picture is the same; activations are tiled per
  image (tf-explain pools the channels of all images into one grid). With ``engine="auto"`` each tf-explain method is
  tried once on one image before training; where it fails (e.g. a pretrained backbone fed grey images: the
  backbone's layers are called twice and tf-explain builds its sub-models from the wrong call), the in-graph method
  draws that picture instead.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from glimpse_wire.contract import METHOD_PARAMS, OUT_ATTRIBUTION, OUT_GRID, OUT_GRID_SHAPE

__all__ = [
    "CALLBACK_METHODS",
    "ENGINES",
    "SUMMARY_TAGS",
    "ExplainCallbackConfig",
    "ExplanationCallback",
    "GraphExplanationCallback",
    "explanation_callbacks",
    "fixed_validation_images",
]

CALLBACK_METHODS = ("gradcam", "occlusion", "activations")
ENGINES = ("auto", "tf-explain", "glimpse")
# tf-explain's image summary tags; the in-graph engine writes the same ones.
SUMMARY_TAGS = {
    "gradcam": "Grad CAM",
    "occlusion": "Occlusion Sensitivity",
    "activations": "Activations Visualization",
}
# Keras 3 warns on every call of tf-explain's GradCAM (a list of inputs wrapped in another list); harmless.
_GRADCAM_INPUTS_WARNING = r"The structure of `inputs` doesn't match the expected structure"


@dataclass(frozen=True)
class ExplainCallbackConfig:
    """What to explain while training.

    every: explain after every ``every`` epochs (epochs ``every``, ``2 * every``, ...).
    num_images: how many validation images (the first ones of the split).
    methods: any of ``CALLBACK_METHODS``.
    engine: ``auto`` (tf-explain's callbacks where they run on the model, else Glimpse's in-graph methods),
        ``tf-explain`` (only tf-explain's; its errors propagate) or ``glimpse`` (only the in-graph methods).
    patch_size: occlusion patch side in pixels; None: the image side // 8 (an 8x8 grid).
    use_guided_grads: Grad-CAM's guided gradients (tf-explain's default).
    """

    every: int = 1
    num_images: int = 6
    methods: tuple[str, ...] = CALLBACK_METHODS
    engine: str = "auto"
    patch_size: int | None = None
    use_guided_grads: bool = True

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"explain every must be at least 1 epoch, got {self.every}")
        if self.num_images < 1:
            raise ValueError(f"--explain-images must be at least 1, got {self.num_images}")
        unknown = [m for m in self.methods if m not in CALLBACK_METHODS]
        if unknown or not self.methods:
            raise ValueError(f"explanation methods must be some of {', '.join(CALLBACK_METHODS)}, got {self.methods}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown explanation engine {self.engine!r}; expected one of {', '.join(ENGINES)}")
        if self.patch_size is not None and self.patch_size < 1:
            raise ValueError(f"occlusion patch size must be at least 1, got {self.patch_size}")


def fixed_validation_images(validation: Any, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` (image, label) pairs of ``validation``: a dataset of batches or of single examples, or an
    (images, labels) pair of arrays. Images come back as ``uint8`` [K,H,W,C] (pixels 0-255 rounded), labels int."""
    if count < 1:
        raise ValueError(f"need at least 1 image, got {count}")
    if isinstance(validation, (tuple, list)):
        images, labels = (np.asarray(a) for a in validation)
    else:
        # The whole split is read (and kept only up to ``count``): a partly read ``cache()`` is thrown away with a
        # warning, while a full pass fills it for fit's first validation pass.
        images_list, labels_list, taken = [], [], 0
        for x, y in validation:
            if taken >= count:
                continue
            x, y = np.asarray(x), np.asarray(y)
            if x.ndim == 3:  # unbatched examples
                x, y = x[np.newaxis], y[np.newaxis]
            images_list.append(x[: count - taken])
            labels_list.append(y[: count - taken])
            taken += len(images_list[-1])
        if not taken:
            raise ValueError("the validation split is empty: no images to explain")
        images, labels = np.concatenate(images_list), np.concatenate(labels_list)
    images, labels = images[:count], labels[:count].astype(np.int64).reshape(-1)
    if images.ndim != 4 or len(images) != len(labels) or not len(images):
        raise ValueError(f"expected images [K,H,W,C] and labels [K], got {images.shape} and {labels.shape}")
    if images.dtype != np.uint8:
        images = np.clip(np.rint(images.astype(np.float32)), 0, 255).astype(np.uint8)
    return images, labels


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Around a tf-explain call: no progress bars from its ``model.predict``, no Keras warning about GradCAM's nested
    inputs list, no TensorFlow retracing notice (its activation and Grad-CAM sub-models are rebuilt on every call),
    and a flat map (max == min) drawn as flat instead of warning about 0/0 in its normalisation."""
    interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    tf_logger = tf.get_logger()
    level = tf_logger.level
    tf_logger.setLevel(max(level, logging.ERROR))
    try:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.filterwarnings("ignore", message=_GRADCAM_INPUTS_WARNING, category=UserWarning)
            yield
    finally:
        tf_logger.setLevel(level)
        if interactive:
            keras.config.enable_interactive_logging()


def _patch_size(images: np.ndarray, config: ExplainCallbackConfig) -> int:
    return config.patch_size or max(1, min(images.shape[1], images.shape[2]) // 8)


class GraphExplanationCallback(keras.callbacks.Callback):
    """Grad-CAM, occlusion or activations of fixed images by Glimpse's in-graph methods, drawn like tf-explain's
    callbacks.

    The same constructor shape as tf-explain's callbacks (``validation_data`` = (uint8 images, labels),
    ``class_index``, ``output_dir``) and the same picture: tf-explain's ``heatmap_display`` of the raw map (the
    signed Grad-CAM cam, the occlusion map ``1 - p``) over the image, tiled with its ``grid_display``; for
    activations, each image's channel grid (``explain_activations``' ``grid``, min-max normalised per image as
    tf-explain does for its grid) as grey levels, the images tiled with ``grid_display``. It writes into
    ``output_dir`` itself (tf-explain adds a time-stamped sub-directory).
    """

    def __init__(self, method: str, validation_data: tuple[np.ndarray, np.ndarray], class_index: int,
                 output_dir: str | Path, *, gradcam_layer: str | None = None, patch_size: int = 0,
                 use_guided_grads: bool = True, shared: dict[str, Any] | None = None) -> None:
        super().__init__()
        if method not in CALLBACK_METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(CALLBACK_METHODS)}")
        if method != "occlusion" and not gradcam_layer:
            raise ValueError(f"{method} needs the name of the model's last conv layer (gradcam_layer)")
        self.method = method
        self.validation_data = validation_data
        self.class_index = int(class_index)
        self.gradcam_layer = gradcam_layer
        self.method_params = {
            "gradcam": {"use_guided_grads": bool(use_guided_grads)},
            "occlusion": {"patch_size": int(patch_size), "stride": 0, "mode": 0},  # 0: the exact map
            "activations": {"layer": -1},  # the Grad-CAM layer, as tf-explain's callback is given here
        }[method]
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.file_writer = tf.summary.create_file_writer(str(self.output_dir))
        # The traced explain function, shared by the callbacks of one model (one trace per method, not per class).
        self._shared = shared if shared is not None else {}

    def explain(self) -> np.ndarray:
        """The picture for the model as it is now: uint8 [H', W', 3] (activations: [H', W', 1])."""
        from tf_explain.utils.display import grid_display, heatmap_display

        from training.explain import GraphExplainer

        key = f"{self.method}:{self.gradcam_layer}"
        if self._shared.get(key, (None,))[0] is not self.model:  # traced once; the variables carry the training
            explainer = GraphExplainer(self.model, self.gradcam_layer if self.method != "occlusion" else None)
            self._shared[key] = (self.model, explainer.function(self.method))
        function = self._shared[key][1]
        images, _ = self.validation_data
        n = len(images)
        params = [np.full(n, self.method_params[p.name], dtype=p.dtype) for p in METHOD_PARAMS[self.method]]
        out = function(tf.constant(images, tf.float32), tf.fill([n], self.class_index), *params)
        if self.method == "activations":
            rows, cols = (int(d) for d in out[OUT_GRID_SHAPE].numpy()[0])
            grids = np.rint(out[OUT_GRID].numpy()[:, :rows, :cols, np.newaxis] * 255).astype(np.uint8)
            return grid_display(grids)
        maps = out[OUT_ATTRIBUTION].numpy()
        with np.errstate(divide="ignore", invalid="ignore"):  # a flat map is drawn flat, as tf-explain does
            pictures = np.array([heatmap_display(m, image) for m, image in zip(maps, images, strict=True)])
        return grid_display(pictures)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        grid = self.explain()
        with self.file_writer.as_default():
            tf.summary.image(SUMMARY_TAGS[self.method], grid[np.newaxis], step=epoch)
        self.file_writer.flush()


class ExplanationCallback(keras.callbacks.Callback):
    """Runs ``inner`` (a tf-explain callback or a ``GraphExplanationCallback``) after every ``every`` epochs.

    ``method``, ``engine`` (``tf-explain`` or ``glimpse``), ``class_name`` and ``output_dir`` say what it writes.
    """

    def __init__(self, inner: Any, *, every: int, method: str, engine: str, class_name: str, output_dir: Path) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.inner = inner
        self.every = every
        self.method = method
        self.engine = engine
        self.class_name = class_name
        self.output_dir = output_dir

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params: Any) -> None:
        super().set_params(params)
        self.inner.set_params(params)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if (epoch + 1) % self.every:
            return
        with _quiet():
            self.inner.on_epoch_end(epoch, logs)
        writer = getattr(self.inner, "file_writer", None)
        if writer is not None:
            writer.flush()  # visible in TensorBoard now, not when the process ends


def _tf_explain_error(method: str, model: Any, images: np.ndarray, labels: np.ndarray, gradcam_layer: str | None,
                      ) -> str | None:
    """Run tf-explain's core method once on one image; None if it works, else why not."""
    from tf_explain.core.activations import ExtractActivations
    from tf_explain.core.grad_cam import GradCAM
    from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity

    data = (images[:1], labels[:1])
    try:
        with _quiet():
            if method == "gradcam":
                GradCAM().explain(data, model, int(labels[0]), layer_name=gradcam_layer)
            elif method == "occlusion":  # one patch over the whole image: one forward pass
                OcclusionSensitivity().explain(data, model, int(labels[0]), max(images.shape[1:3]))
            else:
                ExtractActivations().explain(data, model, [gradcam_layer])
    except Exception as e:  # any failure means: use Glimpse's method instead
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
    return None


def _tf_explain_callback(method: str, data: tuple[np.ndarray, np.ndarray], class_index: int, output_dir: Path,
                         gradcam_layer: str | None, config: ExplainCallbackConfig) -> Any:
    from tf_explain.callbacks.activations_visualization import ActivationsVisualizationCallback
    from tf_explain.callbacks.grad_cam import GradCAMCallback
    from tf_explain.callbacks.occlusion_sensitivity import OcclusionSensitivityCallback

    if method == "gradcam":
        return GradCAMCallback(data, class_index, layer_name=gradcam_layer, output_dir=output_dir,
                               use_guided_grads=config.use_guided_grads)
    if method == "occlusion":
        return OcclusionSensitivityCallback(data, class_index, _patch_size(data[0], config), output_dir=output_dir)
    return ActivationsVisualizationCallback(data, [gradcam_layer], output_dir=output_dir)


def _run_name(class_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", class_name).strip("._") or "class"


def explanation_callbacks(model: Any, *, gradcam_layer: str | None, validation: Any, class_names: Sequence[str],
                          log_dir: str | Path, config: ExplainCallbackConfig | None = None,
                          verbose: bool = True) -> list[ExplanationCallback]:
    """Keras callbacks that write explanations of fixed validation images to TensorBoard while ``model`` trains.

    ``validation``: the validation split (a dataset of (images, labels) batches, or an (images, labels) pair of
    arrays); its first ``config.num_images`` examples are taken now, once. ``gradcam_layer``: the model's Grad-CAM
    layer (``ModelInfo.gradcam_layer``); without one, Grad-CAM and activations are skipped. ``log_dir``: where the
    runs go (``<log_dir>/<method>/<class>``). One callback per method and class among the images; ``verbose``
    prints which engine draws each method.
    """
    config = config or ExplainCallbackConfig()
    images, labels = fixed_validation_images(validation, config.num_images)
    shape = tuple(model.input.shape[1:])
    if tuple(images.shape[1:]) != shape:
        raise ValueError(f"validation images are {tuple(images.shape[1:])} but the model takes {shape}")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ValueError(f"labels must be class indices below {len(class_names)}, got {sorted(set(labels.tolist()))}")
    log_dir = Path(log_dir)

    plan: dict[str, str] = {}
    notes: list[str] = []
    for method in config.methods:
        if method != "occlusion" and not gradcam_layer:
            notes.append(f"{method}: skipped (the model has no Grad-CAM layer)")
            continue
        if config.engine == "glimpse":
            plan[method] = "glimpse"
            continue
        error = _tf_explain_error(method, model, images, labels, gradcam_layer) if config.engine == "auto" else None
        plan[method] = "tf-explain" if error is None else "glimpse"
        if error is not None:
            notes.append(f"{method}: tf-explain fails on this model ({error}); Glimpse's in-graph method draws it")

    callbacks: list[ExplanationCallback] = []
    shared: dict[str, Any] = {}
    for class_index in sorted(set(labels.tolist())):
        data = (images[labels == class_index], labels[labels == class_index])
        class_name = str(class_names[class_index])
        for method, engine in plan.items():
            output_dir = log_dir / method / _run_name(class_name)
            if engine == "tf-explain":
                inner = _tf_explain_callback(method, data, class_index, output_dir, gradcam_layer, config)
            else:
                inner = GraphExplanationCallback(method, data, class_index, output_dir, gradcam_layer=gradcam_layer,
                                                 patch_size=_patch_size(images, config),
                                                 use_guided_grads=config.use_guided_grads, shared=shared)
            callbacks.append(ExplanationCallback(inner, every=config.every, method=method, engine=engine,
                                                 class_name=class_name, output_dir=output_dir))
    if verbose:
        drawn = ", ".join(f"{m} by {e}" for m, e in plan.items()) or "nothing"
        every = "epoch" if config.every == 1 else f"{config.every} epochs"
        print(f"[glimpse] explanations every {every} of {len(images)} validation images into {log_dir}: {drawn}"
              + "".join(f"\n[glimpse]   {n}" for n in notes), flush=True)
    return callbacks
