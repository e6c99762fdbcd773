"""The OpenAPI document is valid and the app honours it: schemathesis generates requests for every operation
(in-process WSGI, bounded) and checks that no answer is a 5xx and every answer matches the documented statuses,
content types and schemas. ``make fuzz-api`` runs the same checks long: GLIMPSE_FUZZ_EXAMPLES examples per operation
(default 10), the number of cases run printed at the end."""

from __future__ import annotations

import base64
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from explain_api.app import create_app
from explain_api.config import ApiConfig
from explain_api.openapi import build_openapi
from tests.explain_api.fakes import FakeServing
from tests.rendering.conftest import solid

_APP = create_app(ApiConfig(default_model="tiny", models=("tiny",)), FakeServing())
schema = schemathesis.openapi.from_wsgi("/openapi.json", _APP)
_EXAMPLES = int(os.environ.get("GLIMPSE_FUZZ_EXAMPLES", "10"))
_CASES = {"run": 0}


def teardown_module() -> None:
    if _CASES["run"]:
        print(f"\nschemathesis: {_CASES['run']} cases, every check passed on each")


def test_security_appears_only_with_keys() -> None:
    doc = build_openapi(ApiConfig(api_keys=("k",)))
    assert doc["openapi"] == "3.0.3"
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["paths"]["/v1/models/{name}:explain"]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]
    assert "security" not in build_openapi(ApiConfig())["paths"]["/v1/models"]["get"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.mark.parametrize(
    ("method", "path", "template", "kwargs", "status"),
    [
        ("GET", "/healthz", "/healthz", {}, 200),
        ("GET", "/readyz", "/readyz", {}, 200),
        ("GET", "/v1/models", "/v1/models", {}, 200),
        ("GET", "/v1/models/tiny", "/v1/models/{name}", {}, 200),
        ("GET", "/v1/models/nope", "/v1/models/{name}", {}, 404),
        ("GET", "/v1/models/tiny/versions/1", "/v1/models/{name}/versions/{version}", {}, 200),
        ("GET", "/v1/models/tiny/labels/stable", "/v1/models/{name}/labels/{label}", {}, 200),
        (
            "POST",
            "/v1/models/tiny:predict",
            "/v1/models/{name}:predict",
            {"json": {"images": [{"b64": _b64(solid((9, 9, 200)))}] * 2}},
            200,
        ),
        (
            "POST",
            "/v1/models/tiny:explain",
            "/v1/models/{name}:explain",
            {"json": {"image": {"b64": _b64(solid((9, 9, 200)))}, "method": "occlusion", "heatmap_size": [4, 2]}},
            200,
        ),
        (
            "POST",
            "/v1/models/tiny:explain",
            "/v1/models/{name}:explain",
            {"json": {"image": {"b64": _b64(solid((9, 9, 200)))}, "method": "activations", "params": {"layer": 0}}},
            200,
        ),
        (
            "POST",
            "/v1/models/tiny:explain?method=activations&format=png",
            "/v1/models/{name}:explain",
            {"data": solid((1, 2, 3)), "content_type": "image/png"},
            200,
        ),
        (
            "POST",
            "/v1/models/tiny/versions/1:explain?format=grid",
            "/v1/models/{name}/versions/{version}:explain",
            {"data": solid((1, 2, 3)), "content_type": "image/png"},
            200,
        ),
        (
            "POST",
            "/v1/models/tiny:explain?method=lime",
            "/v1/models/{name}:explain",
            {"data": solid((1, 2, 3)), "content_type": "image/png"},
            400,
        ),
        (
            "POST",
            "/v1/models/tiny/labels/stable:predict",
            "/v1/models/{name}/labels/{label}:predict",
            {"data": b"x", "content_type": "text/plain"},
            415,
        ),
    ],
)
def test_real_responses_match_their_schemas(method, path, template, kwargs, status) -> None:
    """Successful answers (which random generation rarely reaches) validated against the document."""
    response = _APP.test_client().open(path, method=method, **kwargs)
    assert response.status_code == status
    schema[template][method].validate_response(response)


@pytest.mark.slow
@pytest.mark.serial  # one node id for every operation's test: pytest-xdist would run only one of them
@schema.parametrize()
@settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_app_conforms_to_its_openapi(case) -> None:
    case.call_and_validate(
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    )
    _CASES["run"] += 1
