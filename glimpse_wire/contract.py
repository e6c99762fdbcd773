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
    "ATTRIBUTION_METHODS",
    "CAM_METHODS",
    "DEFAULT_EXPLAIN_METHOD",
    "ACTIVATIONS_METHOD",
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
    "OUT_GRID",
    "OUT_GRID_SHAPE",
    "OUT_ACTIVATIONS",
    "OUT_ACTIVATION_SHAPE",
    "OUT_LAYER",
    "OUT_LAYER_NAME",
    "ATTRIBUTION_OUTPUTS",
    "ACTIVATIONS_OUTPUTS",
    "EXAMPLE_IMAGE_KEY",
    "EXAMPLE_LABEL_KEY",
    "EXAMPLE_LABEL_NAME_KEY",
    "LABELS_ASSET",
    "MODEL_CARD_ASSET",
    "WARMUP_ASSET",
    "MethodParam",
    "METHOD_PARAMS",
    "OCCLUSION_MODES",
    "OCCLUSION_ENGINES",
    "OCCLUSION_OUTPUTS",
    "OUT_EVALUATED_POSITIONS",
    "OUT_OCCLUSION_ENGINE",
    "ADAPTIVE_COARSE_STEP",
    "ADAPTIVE_REFINE_FRACTION",
    "explain_outputs",
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

# Class-attribution methods: a map of where the evidence for one class is (outputs ATTRIBUTION_OUTPUTS).
ATTRIBUTION_METHODS: tuple[str, ...] = (
    "gradcam",
    "occlusion",
    "vanilla_gradients",
    "gradients_inputs",
    "smoothgrad",
    "integrated_gradients",
    "gradcam_pp",
    "hirescam",
    "layercam",
)
# The class-activation-map methods: they weigh the model's conv activations, so a model without a Grad-CAM layer
# (no 4-D conv activation) is exported without them.
CAM_METHODS: tuple[str, ...] = ("gradcam", "gradcam_pp", "hirescam", "layercam")
# The method the explain API and the web page use when a request names none: chosen by the localization benchmark
# of the default `glimpse train` model (docs/explanations.md, "Which method is the default").
DEFAULT_EXPLAIN_METHOD = "layercam"
# The activation maps of one conv layer, as a tiled grid and as raw channels (outputs ACTIVATIONS_OUTPUTS).
ACTIVATIONS_METHOD = "activations"
# Every method with an explain_<method> signature.
EXPLAIN_METHODS: tuple[str, ...] = (*ATTRIBUTION_METHODS, ACTIVATIONS_METHOD)

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
# explain_activations: every example may pick another layer, so the per-layer shapes are padded to the largest
# exported layer's and the true extent is returned alongside.
OUT_GRID = "grid"  # float32 [B,Hg,Wg] in [0,1], the tiled channels top-left, zero padding right and below
OUT_GRID_SHAPE = "grid_shape"  # int32 [B,2], (rows, cols) of the grid's own extent
OUT_ACTIVATIONS = "activations"  # float32 [B,N], the raw [h,w,K] channels in row-major order, zero padded
OUT_ACTIVATION_SHAPE = "activation_shape"  # int32 [B,3], (h, w, K) of the chosen layer
OUT_LAYER = "layer"  # int32 [B], the chosen layer's index in the model card's activation_layers
OUT_LAYER_NAME = "layer_name"  # string [B], the chosen layer's name
# explain_occlusion: how each image's map was computed
OUT_EVALUATED_POSITIONS = "evaluated_positions"  # int32 [B], grid positions whose occluded copy was run
OUT_OCCLUSION_ENGINE = "occlusion_engine"  # int32 [B], index into OCCLUSION_ENGINES

ATTRIBUTION_OUTPUTS: tuple[str, ...] = (
    OUT_HEATMAP,
    OUT_ATTRIBUTION,
    OUT_CLASS_INDEX,
    OUT_SCORE,
    OUT_PROBABILITIES,
)
ACTIVATIONS_OUTPUTS: tuple[str, ...] = (
    OUT_GRID,
    OUT_GRID_SHAPE,
    OUT_ACTIVATIONS,
    OUT_ACTIVATION_SHAPE,
    OUT_LAYER,
    OUT_LAYER_NAME,
    OUT_CLASS_INDEX,
    OUT_SCORE,
    OUT_PROBABILITIES,
)

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
    """One per-example parameter of an explanation signature: a [B] tensor input.

    ``choices``: for an int32 parameter that picks one of a few named behaviours, their names, the value being the
    index (so the tensor stays an int and clients can speak in names); empty for a plain number.
    """

    name: str
    dtype: str  # "int32" | "float32" | "bool"
    default: int | float | bool
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


# How explain_occlusion ran each image's occluded copies (OUT_OCCLUSION_ENGINE), by index: one whole forward pass per
# copy, or the incremental engine (the image's activations once, then per layer only what the patch changes).
OCCLUSION_ENGINES: tuple[str, ...] = ("naive", "incremental")
OCCLUSION_OUTPUTS: tuple[str, ...] = (*ATTRIBUTION_OUTPUTS, OUT_EVALUATED_POSITIONS, OUT_OCCLUSION_ENGINE)

# Occlusion's ``mode`` values, by index: the exact map (computed incrementally in the graph where the model's layers
# allow it), the exact map with one whole forward pass per occluded copy, or the adaptive approximation below.
OCCLUSION_MODES: tuple[str, ...] = ("exact", "naive", "adaptive")
# Adaptive occlusion, identical in the graph and in the explain API's black-box path: evaluate the cells of every
# ADAPTIVE_COARSE_STEP-th row and column of the grid, interpolate the others (linearly, separably: along the columns
# of each coarse row, then along the rows; constant past the last coarse index), then evaluate the
# ceil(ADAPTIVE_REFINE_FRACTION * U) not-yet-evaluated cells with the highest estimate (U of them; ties row-major).
ADAPTIVE_COARSE_STEP = 2
ADAPTIVE_REFINE_FRACTION = 0.25

_FUSED_LAYERS_HELP = (
    "Conv layers fused, deepest first: 1 = the Grad-CAM layer alone, n = the model card's last n activation_layers "
    "(all of them when it has fewer)."
)

METHOD_PARAMS: dict[str, tuple[MethodParam, ...]] = {
    "gradcam": (
        MethodParam("use_guided_grads", "bool", True, "Guided gradients (tf-explain's default)."),
    ),
    "occlusion": (
        MethodParam("patch_size", "int32", 0, "Side of the grey square in input pixels; 0 = input size / 8.", 0, 4096),
        MethodParam("stride", "int32", 0, "Step between patches in input pixels; 0 = patch size.", 0, 4096),
        MethodParam(
            "mode",
            "int32",
            0,
            "exact: the exact map (computed incrementally in the graph where the model's layers allow); naive: the "
            "same map, one whole forward pass per occluded copy; adaptive: an approximation that evaluates every "
            "other row and column, interpolates the rest and evaluates the quarter of it estimated highest.",
            0,
            len(OCCLUSION_MODES) - 1,
            OCCLUSION_MODES,
        ),
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
    "gradcam_pp": (
        MethodParam("layers", "int32", 1, _FUSED_LAYERS_HELP, 1, 255),
    ),
    "hirescam": (
        MethodParam("layers", "int32", 1, _FUSED_LAYERS_HELP, 1, 255),
    ),
    "layercam": (
        MethodParam("layers", "int32", 3, _FUSED_LAYERS_HELP, 1, 255),
    ),
    ACTIVATIONS_METHOD: (
        MethodParam(
            "layer",
            "int32",
            -1,
            "Layer to show: -1 = the Grad-CAM layer, else an index into the model card's activation_layers.",
            -1,
            255,
        ),
    ),
}


def explain_signature(method: str) -> str:
    """Signature key of an explanation method, e.g. ``explain_gradcam``."""
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(EXPLAIN_METHODS)}")
    return SIG_EXPLAIN_PREFIX + method


def explain_outputs(method: str) -> tuple[str, ...]:
    """Output aliases of ``explain_<method>``: ACTIVATIONS_OUTPUTS for activations, OCCLUSION_OUTPUTS for
    occlusion, else ATTRIBUTION_OUTPUTS."""
    explain_signature(method)  # ValueError for an unknown method
    if method == ACTIVATIONS_METHOD:
        return ACTIVATIONS_OUTPUTS
    return OCCLUSION_OUTPUTS if method == "occlusion" else ATTRIBUTION_OUTPUTS


def method_of_signature(signature_name: str) -> str | None:
    """The explanation method a signature key serves, or None for non-explanation signatures."""
    if signature_name.startswith(SIG_EXPLAIN_PREFIX):
        method = signature_name[len(SIG_EXPLAIN_PREFIX) :]
        return method if method in EXPLAIN_METHODS else None
    return None
