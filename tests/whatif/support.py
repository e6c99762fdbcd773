"""Test support: a fake of the one layer whatif talks to (``ServingClient``), and exporter-shaped directories."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glimpse_wire.client import ClassifyResult, ModelMetadata, ModelRef, SignatureInfo, TensorSpec
from glimpse_wire.contract import (
    CLASSIFY_METHOD_NAME,
    IN_EXAMPLES,
    IN_IMAGE_BYTES,
    OUT_CLASS_INDEX,
    OUT_CLASSES,
    OUT_LABEL,
    OUT_PROBABILITIES,
    OUT_SCORES,
    PREDICT_METHOD_NAME,
    SIG_CLASSIFY,
    SIG_DEFAULT,
)
from glimpse_wire.errors import NotFound


def contract_signatures() -> dict[str, SignatureInfo]:
    """The contract's classification and serving_default signatures, as GetModelMetadata describes them."""
    return {
        SIG_CLASSIFY: SignatureInfo(
            CLASSIFY_METHOD_NAME,
            inputs={IN_EXAMPLES: TensorSpec("DT_STRING", (None,), "inputs:0")},
            outputs={OUT_CLASSES: TensorSpec("DT_STRING", (None, None), "c:0"),
                     OUT_SCORES: TensorSpec("DT_FLOAT", (None, None), "s:0")},
        ),
        SIG_DEFAULT: SignatureInfo(
            PREDICT_METHOD_NAME,
            inputs={IN_IMAGE_BYTES: TensorSpec("DT_STRING", (None,), "b:0")},
            outputs={OUT_PROBABILITIES: TensorSpec("DT_FLOAT", (None, None), "p:0"),
                     OUT_CLASS_INDEX: TensorSpec("DT_INT32", (None,), "i:0"),
                     OUT_LABEL: TensorSpec("DT_STRING", (None,), "l:0")},
        ),
    }


@dataclass
class FakeModel:
    labels: list[str]
    versions: tuple[int, ...] = (1,)
    signatures: dict[str, SignatureInfo] = field(default_factory=contract_signatures)
    # scores per example index (cycled); default: one-hot on example index modulo the class count
    scores: list[list[float]] | None = None


@dataclass
class FakeServing:
    """Models by name; records every call as (method, model, version, batch size or None)."""

    models: dict[str, FakeModel]
    calls: list[tuple[str, str, int | None, int | None]] = field(default_factory=list)
    closed: int = 0

    def __call__(self, address: str) -> FakeServing:  # the client factory
        return self

    def _model(self, name: str, version: int | None) -> tuple[FakeModel, int]:
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"Servable not found for request: Latest({name})")
        if version is not None and version not in model.versions:
            raise NotFound(f"Servable not found for request: Specific({name}, {version})")
        return model, version if version is not None else max(model.versions)

    def metadata(self, model: str, *, version: int | None = None, **_: Any) -> ModelMetadata:
        self.calls.append(("metadata", model, version, None))
        found, served = self._model(model, version)
        return ModelMetadata(model, served, dict(found.signatures))

    def classify(self, model: str, examples: Sequence[bytes], *, signature: str | None = SIG_CLASSIFY,
                 version: int | None = None, **_: Any) -> ClassifyResult:
        self.calls.append(("classify", model, version, len(examples)))
        found, served = self._model(model, version)
        results = []
        for i in range(len(examples)):
            if found.scores is None:
                row = [1.0 if c == i % len(found.labels) else 0.0 for c in range(len(found.labels))]
            else:
                row = found.scores[i % len(found.scores)]
            results.append(list(zip(found.labels, row, strict=True)))
        return ClassifyResult(ModelRef(model, served, signature or ""), results)

    def close(self) -> None:
        self.closed += 1


def write_layout(root: Path, name: str, labels: Sequence[str] | None, versions: Sequence[int],
                 examples: Sequence[dict[str, Any]]) -> Path:
    """``root/name/<version>/assets/labels.txt`` (when ``labels``) and ``root/name/examples/test.tfrecord`` of
    ``examples`` (feature mappings), the way the exporter lays them out; returns the TFRecord path."""
    from glimpse_wire.contract import LABELS_ASSET
    from glimpse_wire.examples import make_example, write_tfrecord

    base = root / name
    for version in versions:
        asset = base / str(version) / LABELS_ASSET
        asset.parent.mkdir(parents=True, exist_ok=True)
        if labels is not None:
            asset.write_text("".join(f"{label}\n" for label in labels))
    path = base / "examples" / "test.tfrecord"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tfrecord(path, [make_example(features) for features in examples])
    return path


def image_example(label: int, name: str, *, aspect: float = 1.0, brightness: float = 0.5, size: int = 64) -> dict:
    """Features like the exporter's (the image bytes are a stand-in: nothing here decodes them)."""
    return {"image/encoded": b"\x89PNG stand-in", "label": label, "label_name": name, "aspect_ratio": aspect,
            "brightness": brightness, "width": size, "height": max(1, round(size / aspect))}
