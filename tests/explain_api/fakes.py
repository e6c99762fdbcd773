"""A fake of the serving-client layer for unit tests of the explain API.

``FakeServing`` has the methods of ``glimpse_wire.client.ServingClient`` that the API uses and answers like a model
server hosting one small model: three classes (red, green, blue), input 32x32. The "model" decodes the image bytes
(PNG, as the API sends them), resizes them with padding to its input size and scores each class by the mean of its
colour channel over the top-left quadrant of the input (softmax of mean/16). Its "explanation" heatmap is that
channel's intensity over the whole input, scaled to [0, 1]. Its two "activation layers" are the input pixels
(``pixels``, [h,w,3]) and their 2x2 average (``pooled``, [h/2,w/2,3], the "Grad-CAM layer"): ``explain_activations``
tiles the three channels into a 2x2 grid scaled by the pixel range 0-255, padded to the larger layer. Requests are
checked the way the real client and server check them (``build_explain_inputs`` of the real client, TF Serving's
NotFound/InvalidArgument messages), and every call is recorded in ``calls``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from explain_api.occlusion import adaptive_evaluations, occlusion_geometry
from glimpse_wire import contract as c
from glimpse_wire.client import (
    ClassifyResult,
    ModelMetadata,
    ModelRef,
    PredictResult,
    SignatureInfo,
    TensorSpec,
    VersionStatus,
    build_explain_inputs,
)
from glimpse_wire.errors import FailedPrecondition, InvalidArgument, NotFound
from rendering.images import pad_box

LABELS = ("red", "green", "blue")
ACTIVATION_LAYERS = ("pixels", "pooled")


@dataclass
class Call:
    rpc: str
    model: str
    signature: str
    batch: int
    version: int | None
    label: str | None


@dataclass
class FakeServing:
    name: str = "tiny"
    versions: tuple[int, ...] = (1,)
    version_labels: dict[str, int] = field(default_factory=lambda: {"stable": 1})
    labels: tuple[str, ...] = LABELS
    input_size: tuple[int, int] = (32, 32)
    methods: tuple[str, ...] = c.EXPLAIN_METHODS
    with_classify: bool = True
    with_image_bytes: bool = True
    with_pixels: bool = True
    state: str = "AVAILABLE"
    calls: list[Call] = field(default_factory=list)
    # Raised by the next calls (one per call) before anything else, e.g. Unavailable("connection refused").
    failures: list[Exception] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- the "model" -----------------------------------------------------------------------------------------------

    def pixels(self, blob: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(blob)) as im:
            rgb = im.convert("RGB")
        h, w = self.input_size
        box = pad_box(rgb.height, rgb.width, h, w)  # tf.image.resize_with_pad's geometry
        out = np.zeros((h, w, 3), dtype=np.float32)
        resized = rgb.resize((box.width, box.height), Image.Resampling.BILINEAR)
        out[box.top : box.top + box.height, box.left : box.left + box.width] = np.asarray(resized)
        return out

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        h, w = self.input_size
        region = pixels[:, : h // 2, : w // 2, :]
        logits = region.mean(axis=(1, 2)) / 16.0
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    # -- bookkeeping -------------------------------------------------------------------------------------------------

    def _enter(self, rpc: str, model: str, signature: str, batch: int, version: int | None, label: str | None) -> int:
        with self._lock:
            self.calls.append(Call(rpc, model, signature, batch, version, label))
            if self.failures:
                raise self.failures.pop(0)
        if model != self.name:
            spec = f"Specific({model}, {version})" if version is not None else f"Latest({model})"
            raise NotFound(f"Servable not found for request: {spec}")
        if label is not None:
            if label not in self.version_labels:
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
            return self.version_labels[label]
        if version is not None:
            if version not in self.versions:
                raise NotFound(f"Servable not found for request: Specific({model}, {version})")
            return version
        return max(self.versions)

    def calls_of(self, rpc: str) -> list[Call]:
        return [call for call in self.calls if call.rpc == rpc]

    # -- the client API ----------------------------------------------------------------------------------------------

    def _signatures(self) -> dict[str, SignatureInfo]:
        h, w = self.input_size
        n = len(self.labels)
        outs = {
            c.OUT_PROBABILITIES: TensorSpec("DT_FLOAT", (None, n)),
            c.OUT_CLASS_INDEX: TensorSpec("DT_INT32", (None,)),
            c.OUT_LABEL: TensorSpec("DT_STRING", (None,)),
        }
        sigs: dict[str, SignatureInfo] = {}
        if self.with_image_bytes:
            sigs[c.SIG_DEFAULT] = SignatureInfo(
                c.PREDICT_METHOD_NAME, {c.IN_IMAGE_BYTES: TensorSpec("DT_STRING", (None,))}, dict(outs)
            )
        if self.with_pixels:
            sigs[c.SIG_PIXELS] = SignatureInfo(
                c.PREDICT_METHOD_NAME, {c.IN_IMAGES: TensorSpec("DT_FLOAT", (None, h, w, 3))}, dict(outs)
            )
        if self.with_classify:
            sigs[c.SIG_CLASSIFY] = SignatureInfo(
                c.CLASSIFY_METHOD_NAME,
                {c.IN_EXAMPLES: TensorSpec("DT_STRING", (None,))},
                {c.OUT_CLASSES: TensorSpec("DT_STRING", (None, n)), c.OUT_SCORES: TensorSpec("DT_FLOAT", (None, n))},
            )
        for method in self.methods:
            outputs = {
                c.OUT_HEATMAP: TensorSpec("DT_FLOAT", (None, h, w)),
                c.OUT_ATTRIBUTION: TensorSpec("DT_FLOAT", (None, h, w)),
                c.OUT_CLASS_INDEX: TensorSpec("DT_INT32", (None,)),
                c.OUT_SCORE: TensorSpec("DT_FLOAT", (None,)),
                c.OUT_PROBABILITIES: TensorSpec("DT_FLOAT", (None, n)),
            }
            if method == "occlusion":
                outputs[c.OUT_EVALUATED_POSITIONS] = TensorSpec("DT_INT32", (None,))
                outputs[c.OUT_OCCLUSION_ENGINE] = TensorSpec("DT_INT32", (None,))
            if method == c.ACTIVATIONS_METHOD:
                outputs = {
                    c.OUT_GRID: TensorSpec("DT_FLOAT", (None, 2 * h, 2 * w)),
                    c.OUT_GRID_SHAPE: TensorSpec("DT_INT32", (None, 2)),
                    c.OUT_ACTIVATIONS: TensorSpec("DT_FLOAT", (None, h * w * 3)),
                    c.OUT_ACTIVATION_SHAPE: TensorSpec("DT_INT32", (None, 3)),
                    c.OUT_LAYER: TensorSpec("DT_INT32", (None,)),
                    c.OUT_LAYER_NAME: TensorSpec("DT_STRING", (None,)),
                    c.OUT_CLASS_INDEX: TensorSpec("DT_INT32", (None,)),
                    c.OUT_SCORE: TensorSpec("DT_FLOAT", (None,)),
                    c.OUT_PROBABILITIES: TensorSpec("DT_FLOAT", (None, n)),
                }
            inputs = {
                c.IN_IMAGE_BYTES: TensorSpec("DT_STRING", (None,)),
                c.IN_CLASS_INDEX: TensorSpec("DT_INT32", (None,)),
            }
            for p in c.METHOD_PARAMS[method]:
                inputs[p.name] = TensorSpec({"bool": "DT_BOOL", "int32": "DT_INT32"}.get(p.dtype, "DT_FLOAT"), (None,))
            sigs[c.explain_signature(method)] = SignatureInfo(c.PREDICT_METHOD_NAME, inputs, outputs)
        return sigs

    def metadata(self, model: str, *, version=None, label=None, timeout_s=None) -> ModelMetadata:
        v = self._enter("GetModelMetadata", model, "", 0, version, label)
        return ModelMetadata(name=model, version=v, signatures=self._signatures())

    def status(self, model: str, *, version=None, label=None, timeout_s=None) -> list[VersionStatus]:
        v = self._enter("GetModelStatus", model, "", 0, version, label)
        chosen = self.versions if version is None and label is None else (v,)
        return [VersionStatus(version=x, state=self.state) for x in sorted(chosen)]

    def health(self, service: str = "", *, timeout_s=None) -> str:
        with self._lock:
            self.calls.append(Call("Check", service, "", 0, None, None))
            if self.failures:
                raise self.failures.pop(0)
        return "SERVING" if self.state == "AVAILABLE" else "NOT_SERVING"

    def classify(
        self,
        model: str,
        examples: Sequence[Any],
        *,
        signature=c.SIG_CLASSIFY,
        version=None,
        label=None,
        context=None,
        timeout_s=None,
    ) -> ClassifyResult:
        v = self._enter("Classify", model, signature or "", len(examples), version, label)
        if not self.with_classify or signature != c.SIG_CLASSIFY:
            raise FailedPrecondition(f'Serving signature key "{signature}" not found.')
        pixels = np.stack([self.pixels(ex[c.EXAMPLE_IMAGE_KEY]) for ex in examples])
        probs = self.probabilities(pixels)
        results = [[(name, float(p)) for name, p in zip(self.labels, row, strict=True)] for row in probs]
        return ClassifyResult(ModelRef(model, v, signature), results)

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        signature=None,
        version=None,
        label=None,
        output_filter=None,
        timeout_s=None,
    ) -> PredictResult:
        signature = signature or c.SIG_DEFAULT
        first = next(iter(inputs.values()))
        v = self._enter("Predict", model, signature, len(first), version, label)
        sigs = self._signatures()
        if signature not in sigs:
            raise FailedPrecondition(f'Serving signature key "{signature}" not found.')
        expected = set(sigs[signature].inputs)
        if set(inputs) != expected:
            raise InvalidArgument(f"input size does not match signature: {sorted(inputs)} != {sorted(expected)}")
        if c.IN_IMAGES in inputs:
            pixels = np.asarray(inputs[c.IN_IMAGES], dtype=np.float32)
            if pixels.shape[1:] != (*self.input_size, 3):
                raise InvalidArgument(f"images must be [B, {self.input_size[0]}, {self.input_size[1]}, 3]")
        else:
            try:
                pixels = np.stack([self.pixels(bytes(b)) for b in inputs[c.IN_IMAGE_BYTES]])
            except OSError as e:
                raise InvalidArgument(f"Invalid image: {e}") from e
        probs = self.probabilities(pixels)
        outputs: dict[str, np.ndarray] = {
            c.OUT_PROBABILITIES: probs,
            c.OUT_CLASS_INDEX: probs.argmax(axis=1).astype(np.int32),
            c.OUT_LABEL: np.array([self.labels[i].encode() for i in probs.argmax(axis=1)], dtype=object),
        }
        method = c.method_of_signature(signature)
        if method is not None:
            requested = np.asarray(inputs[c.IN_CLASS_INDEX]).astype(int)
            target = np.where(requested < 0, probs.argmax(axis=1), requested)
            if (target >= len(self.labels)).any():
                raise InvalidArgument("class_index out of range")
            heat = np.stack([pixels[i, :, :, t] / 255.0 for i, t in enumerate(target)]).astype(np.float32)
            if method == c.ACTIVATIONS_METHOD:
                outputs = self._activations(pixels, np.asarray(inputs["layer"]).astype(int))
                outputs.update(
                    {
                        c.OUT_CLASS_INDEX: target.astype(np.int32),
                        c.OUT_SCORE: probs[np.arange(len(target)), target],
                        c.OUT_PROBABILITIES: probs,
                    }
                )
            else:
                outputs = {
                    c.OUT_HEATMAP: heat,
                    c.OUT_ATTRIBUTION: heat * 2.0,
                    c.OUT_CLASS_INDEX: target.astype(np.int32),
                    c.OUT_SCORE: probs[np.arange(len(target)), target],
                    c.OUT_PROBABILITIES: probs,
                }
                if method == "occlusion":
                    outputs.update(self._occlusion_facts(inputs, pixels.shape[1:3], len(target)))
        if output_filter:
            missing = [a for a in output_filter if a not in outputs]
            if missing:
                raise InvalidArgument(f"output tensor alias not found in signature: {missing[0]}")
            outputs = {a: outputs[a] for a in output_filter}
        return PredictResult(ModelRef(model, v, signature), outputs)

    @staticmethod
    def _occlusion_facts(inputs: Mapping[str, Any], size: tuple[int, int], batch: int) -> dict[str, np.ndarray]:
        """The graph's occlusion outputs for the request's first image: positions evaluated (all of the grid, or
        adaptive's count) and the engine (naive for mode naive, else incremental)."""

        def first(name: str) -> int:
            return int(np.asarray(inputs.get(name, [0])).reshape(-1)[0])

        grid = occlusion_geometry(size[0], size[1], first("patch_size"), first("stride"))
        mode = c.OCCLUSION_MODES[first("mode")]
        evaluated = adaptive_evaluations(grid) if mode == "adaptive" else grid.positions
        engine = c.OCCLUSION_ENGINES.index("naive" if mode == "naive" else "incremental")
        return {
            c.OUT_EVALUATED_POSITIONS: np.full(batch, evaluated, np.int32),
            c.OUT_OCCLUSION_ENGINE: np.full(batch, engine, np.int32),
        }

    def _activations(self, pixels: np.ndarray, layers: np.ndarray) -> dict[str, np.ndarray]:
        h, w = self.input_size
        if ((layers < -1) | (layers >= len(ACTIVATION_LAYERS))).any():
            raise InvalidArgument("activations: layer must be -1 (the Grad-CAM layer) or in [0, 1]")
        chosen = np.where(layers < 0, 1, layers)
        grid = np.zeros((len(pixels), 2 * h, 2 * w), np.float32)
        raw = np.zeros((len(pixels), h * w * 3), np.float32)
        shapes = []
        for i, layer in enumerate(chosen):
            acts = pixels[i] if layer == 0 else pixels[i].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
            ah, aw, _ = acts.shape
            for k in range(3):  # channel k at tile (k // 2, k % 2); tile (1, 1) stays zero
                top, left = (k // 2) * ah, (k % 2) * aw
                grid[i, top : top + ah, left : left + aw] = acts[..., k] / 255.0
            raw[i, : acts.size] = acts.reshape(-1)
            shapes.append(acts.shape)
        return {
            c.OUT_GRID: grid,
            c.OUT_GRID_SHAPE: np.array([[2 * s[0], 2 * s[1]] for s in shapes], np.int32),
            c.OUT_ACTIVATIONS: raw,
            c.OUT_ACTIVATION_SHAPE: np.array(shapes, np.int32),
            c.OUT_LAYER: chosen.astype(np.int32),
            c.OUT_LAYER_NAME: np.array([ACTIVATION_LAYERS[j].encode() for j in chosen], dtype=object),
        }

    def explain(
        self,
        model: str,
        method: str,
        images: Sequence[bytes],
        *,
        class_index=None,
        params=None,
        version=None,
        label=None,
        timeout_s=None,
    ) -> PredictResult:
        inputs = build_explain_inputs(method, images, class_index=class_index, params=params)
        return self.predict(
            model, inputs, signature=c.explain_signature(method), version=version, label=label, timeout_s=timeout_s
        )

    def close(self) -> None:
        pass
