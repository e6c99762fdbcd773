"""Offline validation of custom resources (Kubeflow's TFJob, KServe's InferenceService) against the OpenAPI v3 schema
of their CRD, kept as a fixture (tests/deploy/fixtures/README.md says where each comes from).

The API server prunes unknown fields of a custom resource, and ``kubectl apply`` (server-side field validation,
Strict by default) refuses them; here every object schema that lists its properties, and neither allows more nor
preserves unknown fields, gets ``additionalProperties: false``, so a misspelt field fails the test as it fails the
apply.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCHEMAS: dict[tuple[str, str], str] = {
    ("kubeflow.org/v1", "TFJob"): "kubeflow.org_tfjobs.v1.openapi.json.gz",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.v1beta1.openapi.json.gz",
}

__all__ = ["FIXTURES", "SCHEMAS", "crd_errors", "schema_of", "strict"]


def strict(schema: Any) -> Any:
    """A copy of ``schema`` in which objects with listed properties take no other field."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k not in ("enum", "default", "example", "required") else v for k, v in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema and not schema.get(
        "x-kubernetes-preserve-unknown-fields"
    ):
        out["additionalProperties"] = False
    return out


@cache
def schema_of(api_version: str, kind: str) -> dict[str, Any]:
    """The strict schema of a custom resource kind (KeyError for a kind without a fixture)."""
    path = FIXTURES / SCHEMAS[(api_version, kind)]
    return strict(json.loads(gzip.decompress(path.read_bytes())))


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of ``obj`` as 'path: message' (empty when it validates)."""
    schema = schema_of(obj["apiVersion"], obj["kind"])
    validator = jsonschema.Draft4Validator(schema)
    return sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)
    )
