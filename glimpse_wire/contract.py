"""The model contract (v1): signature names, tensor aliases and method parameters.

This module is the single place that names them. ``training`` writes models that follow it, ``serving`` runs them,
``explain_api`` and ``whatif`` call them. It imports nothing beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONTRACT_VERSION",
    "SERVE_TAG",
    "SIG_DEFAULT",
    "SIG_PIXELS",
    "SIG_CLASSIFY",
    "SIG_EXPLAIN_PREFIX",
    "CLASSIFY_METHOD_NAME",
    "PREDICT_METHOD_NAME",
    "EXPLAIN_METHODS",
    "IN_IMAGE_BYTES",
    "IN_IMAGES",
    "IN_CLASS_INDEX",
    "IN_EXAMPLES",
    "OUT_PROBABILITIES",
    "OUT_CLASS_INDEX",
    "OUT_LABEL",
    "OUT_HEATMAP",
    "OUT_ATTRIBUTION",
    "OUT_SCORE",
    "OUT_CLASSES",
    "OUT_SCORES",
    "EXAMPLE_IMAGE_KEY",
    "EXAMPLE_LABEL_KEY",
    "EXAMPLE_LABEL_NAME_KEY",
    "LABELS_ASSET",
    "MODEL_CARD_ASSET",
    "WARMUP_ASSET",
    "MethodParam",
    "METHOD_PARAMS",
    "explain_signature",
    "method_of_signature",
]

CONTRACT_VERSION = 1

SERVE_TAG = "serve"

SIG_DEFAULT = "serving_default"
SIG_PIXELS = "predict_pixels"
SIG_CLASSIFY = "classification"
SIG_EXPLAIN_PREFIX = "explain_"

CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"

EXPLAIN_METHODS: tuple[str, ...] = (
    "gradcam",
    "occlusion",
    "vanilla_gradients",
    "gradients_inputs",
    "smoothgrad",
    "integrated_gradients",
)

# Inputs
IN_IMAGE_BYTES = "image_bytes"  # string [B], encoded JPEG/PNG/GIF/BMP
IN_IMAGES = "images"  # float32 [B,H,W,3], pixel values 0-255 at the model's input size
IN_CLASS_INDEX = "class_index"  # int32 [B], -1 = predicted class
IN_EXAMPLES = "inputs"  # string [B], serialized tf.Example (classification signature)

# Outputs
OUT_PROBABILITIES = "probabilities"  # float32 [B,C]
OUT_CLASS_INDEX = "class_index"  # int32 [B] (predict) / the explained class (explain)
OUT_LABEL = "label"  # string [B]
OUT_HEATMAP = "heatmap"  # float32 [B,H,W] in [0,1] at model input size
OUT_ATTRIBUTION = "attribution"  # float32, the raw map before display normalisation
OUT_SCORE = "score"  # float32 [B], probability of the explained class
OUT_CLASSES = "classes"  # string [B,C] (classification signature)
OUT_SCORES = "scores"  # float32 [B,C] (classification signature)

# tf.Example features (classification signature and the exported examples TFRecord)
EXAMPLE_IMAGE_KEY = "image/encoded"
EXAMPLE_LABEL_KEY = "label"
EXAMPLE_LABEL_NAME_KEY = "label_name"

# Files inside a version directory
LABELS_ASSET = "assets/labels.txt"
MODEL_CARD_ASSET = "assets.extra/model_card.json"
WARMUP_ASSET = "assets.extra/tf_serving_warmup_requests"


@dataclass(frozen=True)
class MethodParam:
    """One per-example parameter of an explanation signature: a [B] tensor input."""

    name: str
    dtype: str  # "int32" | "float32" | "bool"
    default: int | float | bool
    help: str
    minimum: float | None = None
    maximum: float | None = None


METHOD_PARAMS: dict[str, tuple[MethodParam, ...]] = {
    "gradcam": (
        MethodParam("use_guided_grads", "bool", True, "Guided gradients (tf-explain's default)."),
    ),
    "occlusion": (
        MethodParam("patch_size", "int32", 0, "Side of the grey square in input pixels; 0 = input size / 8.", 0, 4096),
        MethodParam("stride", "int32", 0, "Step between patches in input pixels; 0 = patch size.", 0, 4096),
    ),
    "vanilla_gradients": (),
    "gradients_inputs": (),
    "smoothgrad": (
        MethodParam("num_samples", "int32", 5, "Noisy copies averaged (tf-explain's default 5).", 1, 256),
        MethodParam(
            "noise", "float32", 1.0, "Std-dev of the Gaussian noise in pixel units (tf-explain: 1.0).", 0.0, 255.0
        ),
        MethodParam("seed", "int32", 0, "Seed of the stateless noise, for reproducible maps.", 0, 2**31 - 1),
    ),
    "integrated_gradients": (
        MethodParam("n_steps", "int32", 10, "Interpolation steps from a black baseline (tf-explain: 10).", 1, 512),
    ),
}


def explain_signature(method: str) -> str:
    """Signature key of an explanation method, e.g. ``explain_gradcam``."""
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(EXPLAIN_METHODS)}")
    return SIG_EXPLAIN_PREFIX + method


def method_of_signature(signature_name: str) -> str | None:
    """The explanation method a signature key serves, or None for non-explanation signatures."""
    if signature_name.startswith(SIG_EXPLAIN_PREFIX):
        method = signature_name[len(SIG_EXPLAIN_PREFIX) :]
        return method if method in EXPLAIN_METHODS else None
    return None
