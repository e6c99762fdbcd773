"""Domain functions of the explain API: model discovery, predictions, explanations, the black-box occlusion fallback.

Nothing here knows HTTP: requests that cannot be served raise the domain errors of ``explain_api.exceptions`` (and
``rendering.errors`` for pictures), which the HTTP layer maps to statuses in one table. Everything that talks to the
model server goes through a ``glimpse_wire.client.ServingClient`` (or anything with the same methods); a model is
addressed by ``glimpse_wire.client.ModelRef``.

Model facts a remote client cannot read from the model card are taken from the server: the input size from the
``predict_pixels`` signature's ``images`` input ([-1, H, W, 3]), the label list from the ``classification``
signature (its ``classes`` output lists every label in class order), the explanation methods from the signature
names, and which contract parameters an older export's signatures lack from their inputs. They are cached per
(model, version, label) for a short time.
"""

from __future__ import annotations

import io
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from explain_api.exceptions import BadModelOutput, InvalidParameter, TooMuchWork, UnknownMethod, UnsupportedModel
from explain_api.occlusion import (
    OcclusionGrid,
    adaptive_evaluations,
    adaptive_occlusion,
    occluded_copies,
    occlusion_geometry,
    occlusion_map,
)
from glimpse_wire import contract as c
from glimpse_wire.booleans import parse_bool
from glimpse_wire.client import ModelRef, build_explain_inputs
from glimpse_wire.errors import ServingError
from rendering.images import DecodedImage, resize_with_pad, serving_png
from rendering.render import normalize

__all__ = [
    "ActivationMaps",
    "BLACKBOX_PARAMS",
    "ExplainOutcome",
    "ExplainSpec",
    "ImageExplanation",
    "ImagePrediction",
    "ModelCatalog",
    "ModelInfo",
    "ModelRef",
    "PixelSignature",
    "PredictOutcome",
    "Prediction",
    "ServingClientLike",
    "build_model_info",
    "check_activation_layer",
    "count_activation_layers",
    "explain_images",
    "parse_version_label",
    "predict_images",
    "resolve_target",
    "top_k_predictions",
    "validate_method",
    "validate_params",
]


class ServingClientLike(Protocol):
    """The part of ``glimpse_wire.client.ServingClient`` this module uses."""

    def predict(self, model: str, inputs: Mapping[str, Any], **kwargs: Any) -> Any: ...
    def explain(self, model: str, method: str, images: Sequence[bytes], **kwargs: Any) -> Any: ...
    def classify(self, model: str, examples: Sequence[Any], **kwargs: Any) -> Any: ...
    def metadata(self, model: str, **kwargs: Any) -> Any: ...
    def status(self, model: str, **kwargs: Any) -> Any: ...


# Parameters of the black-box occlusion only (models without explain_* signatures may want other pixel scaling).
BLACKBOX_PARAMS: tuple[c.MethodParam, ...] = (
    c.MethodParam(
        "input_scale", "float32", 1.0, "Black-box only: model input = pixels * input_scale + input_offset.", -1e6, 1e6
    ),
    c.MethodParam("input_offset", "float32", 0.0, "Black-box only: added after input_scale.", -1e6, 1e6),
)
_MAX_LISTED_LABELS = 50
_LABEL_RE = re.compile(r"^[A-Za-z0-9_]+$")


# ---------------------------------------------------------------------------------------------------------- models


# What a request without ``method`` gets, in order of preference (ModelInfo.default_method).
_DEFAULT_METHOD_ORDER: tuple[str, ...] = (c.DEFAULT_EXPLAIN_METHOD, "gradcam", "occlusion")

@dataclass(frozen=True)
class PixelSignature:
    """A signature that takes float pixels [B,H,W,3] and returns class probabilities [B,C]."""

    name: str
    input: str
    output: str


@dataclass(frozen=True)
class ModelInfo:
    """What the API knows about one served model version."""

    name: str
    version: int | None
    signatures: tuple[str, ...]
    methods: tuple[str, ...]  # explanation methods with an explain_* signature
    input_size: tuple[int, int] | None  # (height, width)
    labels: tuple[str, ...]  # empty when the model publishes none
    num_classes: int | None
    has_image_bytes: bool  # serving_default takes encoded images
    pixel_signature: PixelSignature | None
    # Per method, the contract parameters its explain_<method> signature has no input for: an export older than the
    # parameter (e.g. occlusion's mode). Such a parameter can only take its default, which the graph then implies.
    absent_params: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def fallback_methods(self) -> tuple[str, ...]:
        """Methods answered by the black-box path (only occlusion, only without its own signature)."""
        if "occlusion" not in self.methods and self.pixel_signature is not None and self.input_size is not None:
            return ("occlusion",)
        return ()

    @property
    def available_methods(self) -> tuple[str, ...]:
        have = set(self.methods) | set(self.fallback_methods)
        return tuple(m for m in c.EXPLAIN_METHODS if m in have)

    @property
    def default_method(self) -> str | None:
        """The method a request without ``method`` gets: the contract's default where this version exports it (older
        exports and plain TF Serving models may not), else Grad-CAM, else occlusion; None if it answers none."""
        available = self.available_methods
        return next((m for m in _DEFAULT_METHOD_ORDER if m in available), available[0] if available else None)

    def label_of(self, index: int) -> str:
        if 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class_{index}"


def _tensor_specs(sig: Any, attr: str) -> Mapping[str, Any]:
    return getattr(sig, attr, None) or {}


def _shape(spec: Any) -> tuple[int | None, ...] | None:
    shape = getattr(spec, "shape", None)
    if shape is None:
        return None
    return tuple(None if (d is None or int(d) < 0) else int(d) for d in shape)


def _is_float(spec: Any) -> bool:
    return str(getattr(spec, "dtype", "")).upper() in ("DT_FLOAT", "FLOAT", "FLOAT32")


def _find_pixel_signature(signatures: Mapping[str, Any]) -> tuple[PixelSignature | None, tuple[int, int] | None]:
    order = [c.SIG_PIXELS, c.SIG_DEFAULT] + sorted(k for k in signatures if k not in (c.SIG_PIXELS, c.SIG_DEFAULT))
    for key in order:
        sig = signatures.get(key)
        if sig is None or c.method_of_signature(key) is not None:
            continue
        inputs, outputs = _tensor_specs(sig, "inputs"), _tensor_specs(sig, "outputs")
        if len(inputs) != 1:
            continue
        ((alias, spec),) = inputs.items()
        shape = _shape(spec)
        if not _is_float(spec) or shape is None or len(shape) != 4 or shape[3] != 3:
            continue
        if shape[1] is None or shape[2] is None:
            continue
        out = c.OUT_PROBABILITIES if c.OUT_PROBABILITIES in outputs else None
        if out is None:
            floats = [k for k, s in outputs.items() if _is_float(s) and len(_shape(s) or ()) == 2]
            out = floats[0] if len(floats) == 1 else None
        if out is None:
            continue
        return PixelSignature(name=key, input=alias, output=out), (shape[1], shape[2])
    return None, None


def _num_classes(signatures: Mapping[str, Any]) -> int | None:
    for key in (c.SIG_DEFAULT, c.SIG_PIXELS, *sorted(signatures)):
        sig = signatures.get(key)
        if sig is None:
            continue
        spec = _tensor_specs(sig, "outputs").get(c.OUT_PROBABILITIES)
        shape = _shape(spec) if spec is not None else None
        if shape and len(shape) == 2 and shape[1]:
            return shape[1]
    return None


def _probe_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


def build_model_info(client: ServingClientLike, ref: ModelRef, *, timeout_s: float | None = None) -> ModelInfo:
    """Ask the server what ``ref`` is: GetModelMetadata, plus one Classify call for the label list."""
    md = client.metadata(ref.name, version=ref.version, label=ref.label, timeout_s=timeout_s)
    signatures: Mapping[str, Any] = dict(md.signatures or {})
    version = getattr(md, "version", None)
    version = int(version) if version not in (None, "") else ref.version
    methods = tuple(m for m in c.EXPLAIN_METHODS if c.explain_signature(m) in signatures)
    absent: dict[str, tuple[str, ...]] = {}
    for m in methods:
        inputs = _tensor_specs(signatures[c.explain_signature(m)], "inputs")
        lacking = tuple(p.name for p in c.METHOD_PARAMS[m] if p.name not in inputs)
        if lacking:
            absent[m] = lacking
    pixel, input_size = _find_pixel_signature(signatures)
    if input_size is None:
        for m in methods:
            shape = _shape(_tensor_specs(signatures[c.explain_signature(m)], "outputs").get(c.OUT_HEATMAP))
            if shape and len(shape) == 3 and shape[1] and shape[2]:
                input_size = (shape[1], shape[2])
                break
    default = signatures.get(c.SIG_DEFAULT)
    has_bytes = default is not None and c.IN_IMAGE_BYTES in _tensor_specs(default, "inputs")
    labels: tuple[str, ...] = ()
    if c.SIG_CLASSIFY in signatures:
        try:
            result = client.classify(
                ref.name,
                [{c.EXAMPLE_IMAGE_KEY: _probe_png()}],
                signature=c.SIG_CLASSIFY,
                version=version,
                label=None if version is not None else ref.label,
                timeout_s=timeout_s,
            )
            labels = tuple(_text(cls) for cls, _ in result.results[0])
        except ServingError as e:
            if e.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise
            labels = ()  # a model without a usable classify signature: labels stay class_<i>
    num_classes = _num_classes(signatures) or (len(labels) or None)
    if num_classes is not None and len(labels) != num_classes:
        labels = ()  # not one label per class: do not guess which is which
    return ModelInfo(
        name=ref.name,
        version=version,
        signatures=tuple(sorted(signatures)),
        methods=methods,
        input_size=input_size,
        labels=labels,
        num_classes=num_classes,
        has_image_bytes=has_bytes,
        pixel_signature=pixel,
        absent_params=absent,
    )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class ModelCatalog:
    """``ModelInfo`` per ``ModelRef``, reused for ``ttl_s`` seconds (thread-safe)."""

    def __init__(
        self,
        client: ServingClientLike,
        *,
        ttl_s: float = 30.0,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[ModelRef, tuple[float, ModelInfo]] = {}
        self._layer_counts: dict[tuple[str, int | None], int] = {}

    def get(self, ref: ModelRef) -> ModelInfo:
        now = self._clock()
        with self._lock:
            hit = self._entries.get(ref)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        info = build_model_info(self._client, ref, timeout_s=self._timeout_s)
        with self._lock:
            self._entries[ref] = (now, info)
        return info

    def activation_layer_count(self, info: ModelInfo, ref: ModelRef) -> int:
        """How many layers ``explain_activations`` of this version can show (its model card's activation_layers),
        learned once per version from the signature itself (``count_activation_layers``) and kept: a version's
        graph never changes."""
        key = (info.name, info.version)
        with self._lock:
            known = self._layer_counts.get(key)
        if known is None or info.version is None:
            known = count_activation_layers(self._client, info, ref, timeout_s=self._timeout_s)
            with self._lock:
                self._layer_counts[key] = known
        return known

    def invalidate(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._entries.clear()
            else:
                for ref in [r for r in self._entries if r.name == name]:
                    del self._entries[ref]


_MAX_LAYER = int(next(p.maximum or 255 for p in c.METHOD_PARAMS[c.ACTIVATIONS_METHOD] if p.name == "layer"))


def count_activation_layers(
    client: ServingClientLike, info: ModelInfo, ref: ModelRef, *, timeout_s: float | None = None
) -> int:
    """The number of layers the model's ``explain_activations`` can show. A remote client cannot read the model
    card, so the signature is asked: an 8x8 grey probe with ``layer=k`` succeeds exactly when k < the count (the
    graph refuses larger indices with INVALID_ARGUMENT). Galloping then bisecting: about 2 log2(count) + 2 tiny
    calls, made once per version."""

    def accepts(layer: int) -> bool:
        try:
            client.explain(
                ref.name,
                c.ACTIVATIONS_METHOD,
                [_probe_png()],
                class_index=[-1],
                params={"layer": layer},
                timeout_s=timeout_s,
                **_pinned(info, ref),
            )
        except ServingError as e:
            if e.code in ("INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION"):
                return False
            raise
        return True

    if not accepts(0):
        return 0
    good, bad = 0, None  # accepts(good) is True; accepts(bad) is False
    step = 1
    while bad is None:
        candidate = min(good + step, _MAX_LAYER)
        if accepts(candidate):
            good = candidate
            if candidate >= _MAX_LAYER:
                return good + 1
            step *= 2
        else:
            bad = candidate
    while bad - good > 1:
        middle = (good + bad) // 2
        if accepts(middle):
            good = middle
        else:
            bad = middle
    return good + 1


def check_activation_layer(layer: int, count: int) -> None:
    """``InvalidParameter`` in plain words when ``layer`` is not -1 or an index below ``count``."""
    if layer == -1 or 0 <= layer < count:
        return
    if count <= 0:
        raise InvalidParameter(
            f"layer {layer} does not exist: this model shows only its Grad-CAM layer; use layer=-1 (the default)"
        )
    which = "layer 0" if count == 1 else f"layers 0 to {count - 1}"
    raise InvalidParameter(
        f"layer {layer} does not exist: this model has {count} activation layer{'s' if count != 1 else ''} "
        f"({which}, in the order of its model card's activation_layers); layer must be -1 (the Grad-CAM layer) "
        f"or in [0, {count - 1}]"
    )


# ----------------------------------------------------------------------------------------------------- validation


def parse_version_label(label: str | None) -> str | None:
    """A version label as given, if it follows TF Serving's rule [a-zA-Z0-9_]+; ``InvalidParameter`` otherwise."""
    if label is not None and not _LABEL_RE.match(label):
        raise InvalidParameter(f"invalid version label {label!r}: use letters, digits and underscores")
    return label


def validate_method(method: Any) -> str | None:
    """A known explanation method name (None: the model's default, resolved per model), else ``UnknownMethod``."""
    if method is None:
        return None
    if not isinstance(method, str) or method not in c.EXPLAIN_METHODS:
        raise UnknownMethod(f"unknown method {method!r}; allowed: {', '.join(c.EXPLAIN_METHODS)}")
    return method


def _choice(param: c.MethodParam, value: Any) -> int:
    """A parameter with named choices: a choice's name (any case) or its index (an integer or its text) as the
    index; ``InvalidParameter`` listing the names otherwise."""
    if isinstance(value, str) and value.strip().lower() in param.choices:
        return param.choices.index(value.strip().lower())
    index: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        index = value
    elif isinstance(value, float) and value.is_integer():
        index = int(value)
    elif isinstance(value, str):
        try:
            index = int(value.strip())
        except ValueError:
            pass
    if index is not None and 0 <= index < len(param.choices):
        return index
    numbers = f"0 to {len(param.choices) - 1}"
    raise InvalidParameter(
        f"parameter {param.name} must be one of {', '.join(param.choices)} (or their numbers {numbers}), got {value!r}"
    )


def _coerce(param: c.MethodParam, value: Any) -> int | float | bool:
    name = param.name
    if param.choices:
        return _choice(param, value)
    if param.dtype == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            try:
                return parse_bool(value)
            except ValueError:
                pass
        raise InvalidParameter(f"parameter {name} must be a boolean (true/false), got {value!r}")
    try:
        if isinstance(value, bool):
            raise ValueError
        if param.dtype == "int32":
            number: int | float
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                number = int(value)
            else:
                number = int(str(value).strip())
        else:
            number = float(str(value).strip()) if isinstance(value, str) else float(value)
            if not math.isfinite(number):
                raise ValueError
    except (TypeError, ValueError, OverflowError):
        kind = "an integer" if param.dtype == "int32" else "a number"
        raise InvalidParameter(f"parameter {name} must be {kind}, got {value!r}") from None
    if (param.minimum is not None and number < param.minimum) or (param.maximum is not None and number > param.maximum):
        raise InvalidParameter(f"parameter {name}={number} is out of range [{param.minimum}, {param.maximum}]")
    return number


def validate_params(method: str, raw: Mapping[str, Any] | None, *, blackbox: bool = False) -> dict[str, Any]:
    """Check names, types and ranges of a method's parameters and fill the defaults; ``InvalidParameter`` lists what
    is allowed. Values are as the signature takes them: a parameter with named choices as its index
    (``_shown_params`` names them again for the answer)."""
    allowed = list(c.METHOD_PARAMS[method]) + (list(BLACKBOX_PARAMS) if blackbox and method == "occlusion" else [])
    by_name = {p.name: p for p in allowed}
    raw = dict(raw or {})
    unknown = sorted(k for k in raw if k not in by_name)
    if unknown:
        listed = ", ".join(by_name) or "none"
        raise InvalidParameter(f"unknown parameter(s) {', '.join(unknown)} for method {method}; allowed: {listed}")
    return {p.name: (_coerce(p, raw[p.name]) if p.name in raw else p.default) for p in allowed}


def _shown_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as an answer shows them: a parameter with named choices by its name, the others as they are."""
    named = {p.name: p.choices for p in c.METHOD_PARAMS[method] if p.choices}
    return {k: named[k][int(v)] if k in named else v for k, v in params.items()}


def _absent_params(info: ModelInfo, method: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The parameters to leave out of the call to ``explain_<method>``: those its export has no input for (older
    than the parameter), each at its default. ``InvalidParameter`` when such a parameter asks for something else,
    which that export cannot do."""
    absent = info.absent_params.get(method, ())
    specs = {p.name: p for p in c.METHOD_PARAMS[method]}
    for name in absent:
        spec = specs[name]
        if params[name] != spec.default:
            asked = _shown_params(method, {name: params[name]})[name]
            default = _shown_params(method, {name: spec.default})[name]
            raise InvalidParameter(
                f"{name}={asked}: this export of {info.name} (version {info.version}) predates the {method} "
                f"parameter {name} (its {c.explain_signature(method)} signature has no {name} input); re-export the "
                f"model with `glimpse export`, or use {name}={default}"
            )
    return absent


def _label_list(labels: Sequence[str]) -> str:
    shown = ", ".join(labels[:_MAX_LISTED_LABELS])
    more = len(labels) - _MAX_LISTED_LABELS
    return shown + (f" ... and {more} more (GET /v1/models/<name> lists all)" if more > 0 else "")


def resolve_target(info: ModelInfo, class_index: Any = None, label: Any = None) -> int:
    """The class to explain: an index, a label's index, or -1 for each image's predicted class."""
    if class_index is not None and label is not None:
        raise InvalidParameter("give the target as class_index or as label, not both")
    if label is not None:
        if not info.labels:
            raise InvalidParameter(f"model {info.name} publishes no label list; give the target as class_index")
        if not isinstance(label, str) or label not in info.labels:
            raise InvalidParameter(f"unknown label {label!r}; allowed: {_label_list(info.labels)}")
        return info.labels.index(label)
    if class_index is None:
        return -1
    try:
        if isinstance(class_index, bool) or (isinstance(class_index, float) and not class_index.is_integer()):
            raise ValueError
        index = int(class_index) if not isinstance(class_index, str) else int(class_index.strip())
    except (TypeError, ValueError, OverflowError):
        raise InvalidParameter(f"class_index must be an integer, got {class_index!r}") from None
    upper = (info.num_classes - 1) if info.num_classes else None
    if index < -1 or (upper is not None and index > upper):
        bound = f"[0, {upper}]" if upper is not None else ">= 0"
        raise InvalidParameter(f"class_index {index} is out of range; allowed: {bound}, or -1 for the predicted class")
    return index


# ---------------------------------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Prediction:
    class_index: int
    label: str
    score: float


@dataclass(frozen=True)
class ImagePrediction:
    predictions: tuple[Prediction, ...]  # top-k, best first
    probabilities: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class PredictOutcome:
    name: str
    version: int | None
    images: tuple[ImagePrediction, ...]


def top_k_predictions(probabilities: np.ndarray, k: int, info: ModelInfo) -> tuple[Prediction, ...]:
    """The k best classes of one probability row, best first (ties by lower index)."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    k = max(1, min(int(k), p.size))
    order = np.argsort(-p, kind="stable")[:k]
    return tuple(Prediction(int(i), info.label_of(int(i)), float(p[i])) for i in order)


def _chunks(sizes: Sequence[int], budget: int, *, overhead: int = 1024) -> list[slice]:
    """Consecutive index ranges whose sizes (plus overhead each) stay within budget; at least one item each."""
    out, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        cost = size + overhead
        if i > start and total + cost > budget:
            out.append(slice(start, i))
            start, total = i, 0
        total += cost
    if start < len(sizes):
        out.append(slice(start, len(sizes)))
    return out


def _output(
    result: Any, alias: str, batch: int, tail: tuple[int, ...] | None, *, dtype: Any = np.float32
) -> np.ndarray:
    """One output of a Predict result as [batch, *tail] (tail None = as returned); ``BadModelOutput`` when it is not
    that."""
    try:
        value = np.asarray(result.outputs[alias], dtype=dtype)
        if value.ndim == 0 or value.shape[0] != batch:
            raise ValueError(f"batch {value.shape[:1]} for {batch} inputs")
        return value if tail is None else value.reshape(batch, *tail)
    except (KeyError, ValueError, TypeError) as e:
        raise BadModelOutput(f"model server returned an unusable {alias!r} output: {e}") from e


def _result_version(result: Any, fallback: int | None) -> int | None:
    version = getattr(getattr(result, "model", None), "version", None)
    return int(version) if version not in (None, "") else fallback


def _pinned(info: ModelInfo, ref: ModelRef) -> dict[str, Any]:
    """Address the version the metadata came from, so that every call of one request hits the same version."""
    if info.version is not None:
        return {"version": info.version, "label": None}
    return ref.selector()


def _pixels_probabilities(
    client: ServingClientLike,
    info: ModelInfo,
    ref: ModelRef,
    count: int,
    batch: Callable[[slice], np.ndarray],
    *,
    budget: int,
    timeout_s: float | None,
) -> tuple[np.ndarray, Any]:
    """Probabilities [count, C] of ``count`` pixel inputs, ``batch(part)`` building the float [n,H,W,3] inputs of each
    Predict call (so that a large batch never exists at once); calls are cut to the message budget."""
    sig = info.pixel_signature
    assert sig is not None and info.input_size is not None
    per_image = info.input_size[0] * info.input_size[1] * 3 * 4
    rows, last = [], None
    for part in _chunks([per_image] * count, budget):
        pixels = batch(part)
        last = client.predict(
            ref.name,
            {sig.input: np.ascontiguousarray(pixels, dtype=np.float32)},
            signature=sig.name,
            output_filter=[sig.output],
            timeout_s=timeout_s,
            **_pinned(info, ref),
        )
        rows.append(_output(last, sig.output, len(pixels), (-1,)))
    return np.concatenate(rows, axis=0), last


def predict_images(
    client: ServingClientLike,
    catalog: ModelCatalog,
    ref: ModelRef,
    images: Sequence[DecodedImage],
    *,
    top_k: int,
    budget: int,
    timeout_s: float | None = None,
    size_factor: float = 2.0,
) -> PredictOutcome:
    """Top-k classes of each image, in as few Predict calls as the message budget allows (usually one)."""
    info = catalog.get(ref)
    if info.has_image_bytes:
        blobs = [serving_png(im, info.input_size, factor=size_factor) for im in images]
        rows, result = [], None
        for part in _chunks([len(b) for b in blobs], budget):
            result = client.predict(
                ref.name,
                {c.IN_IMAGE_BYTES: blobs[part]},
                signature=c.SIG_DEFAULT,
                output_filter=[c.OUT_PROBABILITIES],
                timeout_s=timeout_s,
                **_pinned(info, ref),
            )
            rows.append(_output(result, c.OUT_PROBABILITIES, len(blobs[part]), (-1,)))
        probabilities = np.concatenate(rows, axis=0)
    elif info.pixel_signature is not None and info.input_size is not None:
        h, w = info.input_size
        pixels = np.stack([resize_with_pad(im.rgb, h, w) for im in images])
        probabilities, result = _pixels_probabilities(
            client, info, ref, len(pixels), pixels.__getitem__, budget=budget, timeout_s=timeout_s
        )
    else:
        raise UnsupportedModel(
            f"model {ref.name} has neither a {c.SIG_DEFAULT} signature taking {c.IN_IMAGE_BYTES} "
            f"nor a float-pixels signature; it cannot be called with images",
        )
    return PredictOutcome(
        name=ref.name,
        version=_result_version(result, info.version),
        images=tuple(ImagePrediction(top_k_predictions(p, top_k, info), p) for p in probabilities),
    )


# --------------------------------------------------------------------------------------------------- explanations


@dataclass(frozen=True)
class ExplainSpec:
    """What to explain, as the request said it (validated against the model in ``explain_images``)."""

    method: str | None = None  # None: the model's default_method
    params: Mapping[str, Any] = field(default_factory=dict)
    class_index: Any = None
    label: Any = None


@dataclass(frozen=True)
class ActivationMaps:
    """One image's activations of one layer (``explain_activations``), cropped to the layer's own extent."""

    layer: int  # index into the model card's activation_layers
    layer_name: str
    grid: np.ndarray = field(repr=False)  # [rows, cols] in [0,1]: the channels tiled as tf-explain lays them out
    channels: np.ndarray = field(repr=False)  # [h, w, K] float32, the raw layer output


@dataclass(frozen=True)
class ImageExplanation:
    class_index: int
    label: str
    score: float
    predictions: tuple[Prediction, ...]
    heatmap: np.ndarray | None = field(default=None, repr=False)  # [H,W] in [0,1] at the model's input size
    activations: ActivationMaps | None = field(default=None, repr=False)  # method "activations" (no heatmap)
    # The raw map before normalisation, where the API computed it itself (black-box occlusion); None for signatures.
    attribution: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ExplainOutcome:
    name: str
    version: int | None
    method: str
    params: dict[str, Any]
    via: str  # "signature" (explain_<method> in the graph) or "blackbox" (occlusion through Predict calls)
    images: tuple[ImageExplanation, ...]


def explain_images(
    client: ServingClientLike,
    catalog: ModelCatalog,
    ref: ModelRef,
    images: Sequence[DecodedImage],
    spec: ExplainSpec,
    *,
    top_k: int,
    budget: int,
    timeout_s: float | None = None,
    size_factor: float = 2.0,
    max_patches: int = 1024,
) -> ExplainOutcome:
    """Explain each image with ``spec.method``: in one batched explain_<method> call, or black-box occlusion."""
    method = validate_method(spec.method)
    info = catalog.get(ref)
    if method is None:
        method = info.default_method
        if method is None:
            raise UnsupportedModel(f"model {ref.name} (version {info.version}) answers no explanation method")
    if method in info.methods:
        params = validate_params(method, spec.params)
        target = resolve_target(info, spec.class_index, spec.label)
        absent = _absent_params(info, method, params)
        if method == c.ACTIVATIONS_METHOD and int(params["layer"]) != -1:
            check_activation_layer(int(params["layer"]), catalog.activation_layer_count(info, ref))
        return _explain_in_graph(
            client,
            info,
            ref,
            images,
            method,
            params,
            target,
            absent=absent,
            top_k=top_k,
            budget=budget,
            timeout_s=timeout_s,
            size_factor=size_factor,
        )
    if method in info.fallback_methods:
        params = validate_params(method, spec.params, blackbox=True)
        target = resolve_target(info, spec.class_index, spec.label)
        return _explain_blackbox(
            client,
            info,
            ref,
            images,
            params,
            target,
            top_k=top_k,
            budget=budget,
            timeout_s=timeout_s,
            max_patches=max_patches,
        )
    available = ", ".join(info.available_methods) or "none"
    raise UnsupportedModel(
        f"model {ref.name} (version {info.version}) has no {c.explain_signature(method)} signature, and {method} "
        f"needs the model's gradients, which only an in-graph signature can compute. Re-export the model with "
        f"`glimpse export` to add all explanation signatures. Available here: {available}"
    )


def _explain_in_graph(
    client: ServingClientLike,
    info: ModelInfo,
    ref: ModelRef,
    images: Sequence[DecodedImage],
    method: str,
    params: dict[str, Any],
    target: int,
    *,
    absent: tuple[str, ...],
    top_k: int,
    budget: int,
    timeout_s: float | None,
    size_factor: float,
) -> ExplainOutcome:
    """``explain_<method>`` in batches cut to the budget; the parameters in ``absent`` (which the export has no input
    for) are left out of the call."""
    blobs = [serving_png(im, info.input_size, factor=size_factor) for im in images]
    # alias -> (shape after the batch dimension, None = as returned; dtype); the method's own outputs first
    wanted: dict[str, tuple[tuple[int, ...] | None, Any]]
    if method == c.ACTIVATIONS_METHOD:
        wanted = {
            c.OUT_GRID: (None, np.float32),
            c.OUT_GRID_SHAPE: ((2,), np.int64),
            c.OUT_ACTIVATIONS: (None, np.float32),
            c.OUT_ACTIVATION_SHAPE: ((3,), np.int64),
            c.OUT_LAYER: ((), np.int64),
            c.OUT_LAYER_NAME: ((), object),
        }
    else:
        wanted = {c.OUT_HEATMAP: (None, np.float32)}
    wanted.update(
        {
            c.OUT_CLASS_INDEX: ((), np.int64),
            c.OUT_SCORE: ((), np.float32),
            c.OUT_PROBABILITIES: ((-1,), np.float32),
        }
    )
    parts: dict[str, list[np.ndarray]] = {alias: [] for alias in wanted}
    result = None
    for part in _chunks([len(b) for b in blobs], budget):
        n = len(blobs[part])
        if absent:
            inputs = build_explain_inputs(method, blobs[part], class_index=[target] * n, params=params)
            result = client.predict(
                ref.name,
                {alias: value for alias, value in inputs.items() if alias not in absent},
                signature=c.explain_signature(method),
                timeout_s=timeout_s,
                **_pinned(info, ref),
            )
        else:
            result = client.explain(
                ref.name,
                method,
                blobs[part],
                class_index=[target] * n,
                params=params,
                timeout_s=timeout_s,
                **_pinned(info, ref),
            )
        for alias, (tail, dtype) in wanted.items():
            parts[alias].append(_output(result, alias, n, tail, dtype=dtype))
    out = {alias: np.concatenate(chunks) for alias, chunks in parts.items()}
    if method == c.ACTIVATIONS_METHOD:
        extras: list[dict[str, Any]] = [{"activations": a} for a in _activation_maps(out)]
    else:
        heatmap = out[c.OUT_HEATMAP]
        if heatmap.ndim != 3:
            raise BadModelOutput(f"model server returned a heatmap of shape {heatmap.shape}; expected [B, H, W]")
        extras = [{"heatmap": np.clip(np.nan_to_num(hm), 0.0, 1.0)} for hm in heatmap]
    items = [
        ImageExplanation(int(idx), info.label_of(int(idx)), float(score), top_k_predictions(p, top_k, info), **extra)
        for idx, score, p, extra in zip(
            out[c.OUT_CLASS_INDEX], out[c.OUT_SCORE], out[c.OUT_PROBABILITIES], extras, strict=True
        )
    ]
    shown = _shown_params(method, params)
    if method == "occlusion":
        shown.update(_occlusion_facts(result, info, params, len(items)))
    return ExplainOutcome(ref.name, _result_version(result, info.version), method, shown, "signature", tuple(items))


def _occlusion_facts(result: Any, info: ModelInfo, params: Mapping[str, Any], batch: int) -> dict[str, Any]:
    """How the graph computed the (last batch's) occlusion maps: the engine and the positions evaluated of the grid.
    Every image of a request has the same mode and grid, so the first image speaks for all; an export older than
    these outputs says nothing."""
    facts: dict[str, Any] = {}
    if info.input_size is not None:
        height, width = info.input_size
        facts["grid_positions"] = occlusion_geometry(
            height, width, int(params["patch_size"]), int(params["stride"])
        ).positions
    outputs = getattr(result, "outputs", {})
    if c.OUT_EVALUATED_POSITIONS in outputs:
        facts["evaluated_positions"] = int(_output(result, c.OUT_EVALUATED_POSITIONS, batch, (), dtype=np.int64)[0])
    if c.OUT_OCCLUSION_ENGINE in outputs:
        index = int(_output(result, c.OUT_OCCLUSION_ENGINE, batch, (), dtype=np.int64)[0])
        if not 0 <= index < len(c.OCCLUSION_ENGINES):
            known = len(c.OCCLUSION_ENGINES) - 1
            raise BadModelOutput(f"model server returned occlusion engine {index}; expected 0-{known}")
        facts["engine"] = c.OCCLUSION_ENGINES[index]
    return facts


def _activation_maps(out: Mapping[str, np.ndarray]) -> list[ActivationMaps]:
    """Each image's grid and raw channels, cropped from the padded outputs to the sizes the server reported."""
    grids, raw = out[c.OUT_GRID], out[c.OUT_ACTIVATIONS]
    if grids.ndim != 3 or raw.ndim != 2:
        raise BadModelOutput(
            f"model server returned a grid of shape {grids.shape} and activations of shape {raw.shape}; expected "
            "[B, rows, cols] and [B, N]"
        )
    maps = []
    for grid, (rows, cols), values, (h, w, k), layer, name in zip(
        grids,
        out[c.OUT_GRID_SHAPE],
        raw,
        out[c.OUT_ACTIVATION_SHAPE],
        out[c.OUT_LAYER],
        out[c.OUT_LAYER_NAME],
        strict=True,
    ):
        size = int(h) * int(w) * int(k)
        if not (0 < rows <= grid.shape[0] and 0 < cols <= grid.shape[1] and min(h, w, k) > 0 and size <= values.size):
            raise BadModelOutput(
                f"model server returned inconsistent activation shapes: grid {grid.shape} of extent {(rows, cols)}, "
                f"{values.size} values for a {(h, w, k)} layer"
            )
        maps.append(
            ActivationMaps(
                layer=int(layer),
                layer_name=_text(name),
                grid=np.clip(np.nan_to_num(grid[:rows, :cols]), 0.0, 1.0),
                channels=values[:size].reshape(int(h), int(w), int(k)),
            )
        )
    return maps


# ------------------------------------------------------------------------------------------ black-box occlusion


def _explain_blackbox(
    client: ServingClientLike,
    info: ModelInfo,
    ref: ModelRef,
    images: Sequence[DecodedImage],
    params: dict[str, Any],
    target: int,
    *,
    top_k: int,
    budget: int,
    timeout_s: float | None,
    max_patches: int,
) -> ExplainOutcome:
    """Occlusion through Predict calls on the pixels signature: the map of the in-graph signature (see
    ``explain_api.occlusion``), batched to the budget. Modes exact and naive are the same here (the API cannot reuse
    the model's layers between copies, so every copy is a whole forward pass either way): 1 + rows x cols passes per
    image. Mode adaptive makes two rounds of calls per image, the image and the coarse cells, then the cells to
    refine. The answer's parameters add how many grid positions were evaluated, of how many."""
    assert info.input_size is not None
    h, w = info.input_size
    grid = occlusion_geometry(h, w, int(params["patch_size"]), int(params["stride"]))
    mode = c.OCCLUSION_MODES[int(params["mode"])]
    evaluated = adaptive_evaluations(grid) if mode == "adaptive" else grid.positions
    if evaluated > max_patches:
        raise TooMuchWork(
            f"patch_size={grid.patch} and stride={grid.stride} give {evaluated} occluded copies per image "
            f"(mode={mode}); the limit is {max_patches}: use a larger stride or patch_size"
        )
    items, result = [], None
    for im in images:
        occluder = _Occluder(
            client, info, ref, resize_with_pad(im.rgb, h, w), grid, params, target, budget=budget, timeout_s=timeout_s
        )
        if mode == "adaptive":
            adaptive = adaptive_occlusion(grid, lambda cells, o=occluder: o.scores([grid.position(x) for x in cells]))
            attribution = adaptive.attribution()
        else:
            attribution = occlusion_map(occluder.scores(range(grid.positions)), grid)
        assert occluder.image_probabilities is not None and occluder.class_index is not None
        cls, base_probs, result = occluder.class_index, occluder.image_probabilities, occluder.result
        items.append(
            ImageExplanation(
                cls,
                info.label_of(cls),
                float(base_probs[cls]),
                top_k_predictions(base_probs, top_k, info),
                normalize(attribution),
                attribution=attribution,
            )
        )
    used = {
        **_shown_params("occlusion", params),
        "patch_size": grid.patch,
        "stride": grid.stride,
        "evaluated_positions": evaluated,
        "grid_positions": grid.positions,
    }
    return ExplainOutcome(ref.name, _result_version(result, info.version), "occlusion", used, "blackbox", tuple(items))


class _Occluder:
    """Predict calls for the occluded copies of one image (float pixels [H,W,3] at the model's input size), scored for
    the ``target`` class (-1: the image's predicted class). The first call's batches also carry the image itself,
    whose probabilities fix that class."""

    def __init__(
        self,
        client: ServingClientLike,
        info: ModelInfo,
        ref: ModelRef,
        pixels: np.ndarray,
        grid: OcclusionGrid,
        params: Mapping[str, Any],
        target: int,
        *,
        budget: int,
        timeout_s: float | None,
    ) -> None:
        self._client, self._info, self._ref = client, info, ref
        self._pixels, self._grid, self._target = pixels, grid, target
        self._scale, self._offset = float(params["input_scale"]), float(params["input_offset"])
        self._budget, self._timeout_s = budget, timeout_s
        self.image_probabilities: np.ndarray | None = None
        self.class_index: int | None = None
        self.result: Any = None

    def scores(self, positions: Sequence[int]) -> np.ndarray:
        """p_c of the copies occluded at the grid ``positions`` (row-major indices), in order."""
        lead = 1 if self.image_probabilities is None else 0  # index 0: the image itself, on the first call only

        def batch(part: slice) -> np.ndarray:
            first = max(part.start - lead, 0)
            copies = occluded_copies(self._pixels, self._grid, positions[first : part.stop - lead])
            pixels = np.concatenate([self._pixels[np.newaxis], copies]) if part.start < lead else copies
            return pixels * self._scale + self._offset if (self._scale, self._offset) != (1.0, 0.0) else pixels

        probs, self.result = _pixels_probabilities(
            self._client,
            self._info,
            self._ref,
            lead + len(positions),
            batch,
            budget=self._budget,
            timeout_s=self._timeout_s,
        )
        if lead:
            self.image_probabilities = probs[0]
            cls = int(np.argmax(probs[0])) if self._target < 0 else self._target
            if cls >= probs[0].size:
                raise InvalidParameter(f"class_index {cls} is out of range; the model has {probs[0].size} classes")
            self.class_index = cls
        assert self.class_index is not None
        return probs[lead:, self.class_index]
