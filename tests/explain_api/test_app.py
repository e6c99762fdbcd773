"""Every route of the app through Flask's test client, on the fake serving client: inputs in all three forms,
bad inputs (never a 500), error mapping, auth, CORS, metrics."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from glimpse_wire import contract as c
from glimpse_wire.errors import DeadlineExceeded, Internal, InvalidArgument, NotFound, Unavailable
from rendering.images import pad_box
from tests.explain_api.fakes import FakeServing
from tests.rendering.conftest import encode, solid

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def multipart(*images: bytes, **fields: object) -> dict:
    data: dict = {k: str(v) for k, v in fields.items()}
    data["image"] = [(io.BytesIO(img), f"img{i}.png") for i, img in enumerate(images)]
    return {"data": data, "content_type": "multipart/form-data"}


def error_of(response) -> dict:
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


# ------------------------------------------------------------------------------------------------- simple routes


def test_healthz(client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def test_readyz_ready_and_not(client, fake: FakeServing) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200 and r.get_json()["ready"] is True and r.get_json()["versions"] == [1]
    fake.state = "LOADING"
    r = client.get("/readyz")
    assert (
        r.status_code == 503
        and r.get_json()["ready"] is False
        and "no AVAILABLE version" in r.get_json()["error"]["message"]
    )
    fake.failures.append(Unavailable("failed to connect to all addresses"))
    r = client.get("/readyz")
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.get_json()["error"]["code"] == "UNAVAILABLE"


def test_readyz_without_default_model_checks_server_health(make_app, fake: FakeServing) -> None:
    client = make_app(default_model=None).test_client()
    assert client.get("/readyz").status_code == 200
    fake.state = "LOADING"
    assert client.get("/readyz").status_code == 503


def test_index_page_and_static_assets(client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    r.close()
    assert "/static/app.js" in html and "/static/style.css" in html
    for asset, mimetype in (("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
        r = client.get(asset)
        assert r.status_code == 200 and r.mimetype == mimetype
        r.close()


def test_openapi_lists_every_route(app, client) -> None:
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.0")
    documented = set(doc["paths"])
    for rule in app.url_map.iter_rules():
        if rule.endpoint.rpartition(".")[2] == "static":
            continue
        path = rule.rule.replace("<segment:", "<").replace("<int:version>", "{version}")
        path = path.replace("<", "{").replace(">", "}")
        assert path in documented, path


def test_list_models(make_app, fake: FakeServing) -> None:
    client = make_app(models=("tiny", "other")).test_client()
    body = client.get("/v1/models").get_json()
    assert body["default_model"] == "tiny"
    assert body["models"][0] == {"name": "tiny", "default": True, "versions": [{"version": 1, "state": "AVAILABLE"}]}
    assert body["models"][1]["name"] == "other" and body["models"][1]["error"]["code"] == "NOT_FOUND"
    fake.failures.append(Unavailable("down"))
    r = client.get("/v1/models")
    assert r.status_code == 503 and r.headers["Retry-After"]


def test_model_detail(client) -> None:
    body = client.get("/v1/models/tiny").get_json()
    assert body["name"] == "tiny" and body["version"] == 1
    assert body["labels"] == ["red", "green", "blue"] and body["num_classes"] == 3
    assert body["methods"] == list(c.EXPLAIN_METHODS) and body["blackbox_methods"] == []
    assert body["default_method"] == c.DEFAULT_EXPLAIN_METHOD
    assert body["input"] == {"height": 32, "width": 32}
    assert body["versions"] == [{"version": 1, "state": "AVAILABLE"}]
    assert client.get("/v1/models/tiny/versions/1").status_code == 200
    assert client.get("/v1/models/tiny/labels/stable").get_json()["version"] == 1


def test_model_detail_of_a_blackbox_model(make_app) -> None:
    client = make_app(FakeServing(methods=())).test_client()
    body = client.get("/v1/models/tiny").get_json()
    assert body["methods"] == ["occlusion"] and body["blackbox_methods"] == ["occlusion"]
    assert body["default_method"] == "occlusion"


def test_unknown_model_version_label(client) -> None:
    r = client.get("/v1/models/nope")
    assert r.status_code == 404 and error_of(r) == {
        "code": "NOT_FOUND",
        "message": "Servable not found for request: Latest(nope)",
    }
    r = client.get("/v1/models/tiny/versions/7")
    assert r.status_code == 404 and "Specific(tiny, 7)" in error_of(r)["message"]
    r = client.get("/v1/models/tiny/labels/canary")
    assert r.status_code == 400 and "Unrecognized servable version label: canary" in error_of(r)["message"]
    r = client.get("/v1/models/tiny/labels/bad-label")
    assert r.status_code == 400 and "invalid version label" in error_of(r)["message"]
    r = client.get(f"/v1/models/tiny/versions/{2**70}")
    assert r.status_code == 400
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and error_of(r)["code"] == "NOT_FOUND"
    r = client.post("/v1/models/tiny")
    assert r.status_code == 405 and "GET" in r.headers["Allow"]


# -------------------------------------------------------------------------------------------------------- predict


def test_predict_multipart_raw_and_json(client, fake: FakeServing) -> None:
    r = client.post("/v1/models/tiny:predict", **multipart(solid(RED)))
    assert r.status_code == 200
    body = r.get_json()
    assert body["model"] == {"name": "tiny", "version": 1}
    top = body["results"][0]["predictions"]
    assert [p["label"] for p in top] == ["red", "green", "blue"] and top[0]["class_index"] == 0
    assert top[0]["score"] > 0.99

    r = client.post("/v1/models/tiny:predict?top_k=1", data=solid(GREEN, fmt="JPEG"), content_type="image/jpeg")
    assert [p["label"] for p in r.get_json()["results"][0]["predictions"]] == ["green"]

    r = client.post(
        "/v1/models/tiny:predict", json={"images": [{"b64": b64(solid(BLUE))}, {"b64": b64(solid(RED))}], "top_k": 2}
    )
    results = r.get_json()["results"]
    assert [res["predictions"][0]["label"] for res in results] == ["blue", "red"]
    assert all(len(res["predictions"]) == 2 for res in results)
    assert [call.batch for call in fake.calls_of("Predict")] == [1, 1, 2]  # several images, one call


def test_predict_on_version_and_label_paths(client, fake: FakeServing) -> None:
    assert client.post("/v1/models/tiny/versions/1:predict", **multipart(solid(RED))).status_code == 200
    assert client.post("/v1/models/tiny/labels/stable:predict", **multipart(solid(RED))).status_code == 200
    assert client.post("/v1/models/tiny/versions/3:predict", **multipart(solid(RED))).status_code == 404


def test_predict_refuses_explain_fields(client) -> None:
    r = client.post("/v1/models/tiny:predict", **multipart(solid(RED), method="gradcam"))
    assert r.status_code == 400 and "unknown field 'method'" in error_of(r)["message"]
    r = client.post("/v1/models/tiny:predict", json={"image": {"b64": b64(solid(RED))}, "method": "gradcam"})
    assert r.status_code == 400


# -------------------------------------------------------------------------------------------------------- explain


def test_explain_json_response_shape(client, chelsea_png: bytes) -> None:
    r = client.post(
        "/v1/models/tiny:explain",
        json={
            "image": {"b64": b64(chelsea_png)},
            "method": "integrated_gradients",
            "params": {"n_steps": 4},
            "target": {"label": "green"},
        },
    )
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["model"] == {"name": "tiny", "version": 1} and body["method"] == "integrated_gradients"
    assert body["params"] == {"n_steps": 4} and body["via"] == "signature"
    (result,) = body["results"]
    assert result["target"]["class_index"] == 1 and result["target"]["label"] == "green"
    assert len(result["predictions"]) == 3
    heat = np.array(result["heatmap"]["values"])
    assert result["heatmap"]["shape"] == [32, 32] == list(heat.shape) and 0 <= heat.min() and heat.max() <= 1
    box = pad_box(300, 451, 32, 32)
    assert result["heatmap"]["content_box"] == {
        "top": box.top,
        "left": box.left,
        "height": box.height,
        "width": box.width,
    }
    overlay = Image.open(io.BytesIO(base64.b64decode(result["overlay_jpeg"])))
    assert overlay.format == "JPEG" and overlay.size == (451, 300)  # the original's size, not the model's
    assert result["image"] == {"width": 451, "height": 300, "format": "PNG"}


@pytest.mark.parametrize("method", c.ATTRIBUTION_METHODS)
def test_every_method_through_multipart(client, fake: FakeServing, method: str) -> None:
    r = client.post("/v1/models/tiny:explain", **multipart(solid(BLUE), method=method, heatmap_size=8))
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["method"] == method
    facts = {"grid_positions", "evaluated_positions", "engine"} if method == "occlusion" else set()
    assert set(body["params"]) == {p.name for p in c.METHOD_PARAMS[method]} | facts
    if method == "occlusion":
        assert body["params"]["engine"] == "incremental" and body["params"]["evaluated_positions"] == 64
    assert body["results"][0]["heatmap"]["shape"] == [8, 8]
    assert fake.calls_of("Predict")[-1].signature == c.explain_signature(method)


def test_activations_json_has_the_grid_and_the_raw_channels(client, fake: FakeServing) -> None:
    r = client.post("/v1/models/tiny:explain", **multipart(solid(BLUE, (40, 40)), method="activations", layer=0))
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["method"] == "activations" and body["params"] == {"layer": 0}
    assert fake.calls_of("Predict")[-1].signature == c.explain_signature(c.ACTIVATIONS_METHOD)
    (result,) = body["results"]
    assert set(result) == {"target", "predictions", "activations", "grid_png", "image"}
    acts = result["activations"]
    assert acts["layer"] == 0 and acts["layer_name"] == "pixels"
    channels = np.frombuffer(base64.b64decode(acts["channels"]["b64"]), "<f4").reshape(acts["channels"]["shape"])
    assert acts["channels"]["shape"] == [32, 32, 3] and acts["channels"]["dtype"] == "float32"
    np.testing.assert_allclose(channels, np.broadcast_to([0.0, 0.0, 255.0], (32, 32, 3)), atol=1.0)
    grid = np.frombuffer(base64.b64decode(acts["grid"]["b64"]), "<f4").reshape(acts["grid"]["shape"])
    assert acts["grid"]["shape"] == [64, 64] and acts["grid"]["tiles"] == [2, 2]
    np.testing.assert_allclose(grid[32:, :32], 1.0, atol=1 / 255)  # channel 2 (blue) at tile (1, 0)
    assert not grid[:32].any()
    picture = Image.open(io.BytesIO(base64.b64decode(result["grid_png"])))
    assert picture.format == "PNG" and picture.size == (256, 256)  # 64 px grid, enlarged 4x
    assert result["target"]["label"] == "blue"


def test_activations_png_is_the_grid(client) -> None:
    r = client.post("/v1/models/tiny:explain?format=png", **multipart(solid(GREEN), method="activations"))
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.headers["X-Glimpse-Method"] == "activations"
    assert r.headers["X-Glimpse-Layer"] == "1" and r.headers["X-Glimpse-Layer-Name"] == "pooled"
    grid = np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB"))
    assert grid.shape == (256, 256, 3)  # the pooled layer's 32 px grid, enlarged 8x
    assert not np.array_equal(grid[:128, 128:], grid[128:, 128:])  # green channel tile vs the empty fourth tile
    r = client.post(
        "/v1/models/tiny:explain", **multipart(solid(GREEN, (60, 40)), method="activations", format="grid")
    )
    sheet = Image.open(io.BytesIO(r.data))
    assert r.status_code == 200 and sheet.size == (384 + 4 + 256, 256)  # original at the grid's height | grid


def test_activations_bad_layer_is_a_400(client) -> None:
    r = client.post("/v1/models/tiny:explain", **multipart(solid(RED), method="activations", layer=7))
    assert r.status_code == 400 and "layer must be -1" in error_of(r)["message"]
    r = client.post("/v1/models/tiny:explain", **multipart(solid(RED), method="activations", layer="top"))
    assert r.status_code == 400 and "layer must be an integer" in error_of(r)["message"]


def test_explain_batch_is_one_grpc_call(client, fake: FakeServing) -> None:
    images = [solid(RED), solid(GREEN), solid(BLUE), solid(RED, (10, 90))]
    r = client.post("/v1/models/tiny:explain", **multipart(*images, method="gradcam"))
    assert r.status_code == 200
    assert [res["target"]["label"] for res in r.get_json()["results"]] == ["red", "green", "blue", "red"]
    explains = [call for call in fake.calls_of("Predict") if call.signature.startswith("explain_")]
    assert len(explains) == 1 and explains[0].batch == 4


def test_explain_params_from_form_fields_and_query(client, fake: FakeServing) -> None:
    r = client.post("/v1/models/tiny:explain?method=occlusion&stride=4", **multipart(solid(RED), patch_size=8))
    assert r.status_code == 200
    assert r.get_json()["params"] == {
        "patch_size": 8,
        "stride": 4,
        "mode": "exact",
        "grid_positions": 64,  # the fake model's 32x32 input, a stride of 4
        "evaluated_positions": 64,
        "engine": "incremental",
    }
    r = client.post(
        "/v1/models/tiny:explain", **multipart(solid(RED), method="smoothgrad", params=json.dumps({"num_samples": 2}))
    )
    assert r.get_json()["params"]["num_samples"] == 2


def test_accept_png_returns_the_overlay(client, chelsea_jpeg: bytes) -> None:
    r = client.post(
        "/v1/models/tiny:explain?method=gradcam",
        data=chelsea_jpeg,
        content_type="image/jpeg",
        headers={"Accept": "image/png"},
    )
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert Image.open(io.BytesIO(r.data)).size == (451, 300)
    assert r.headers["X-Glimpse-Method"] == "gradcam" and r.headers["X-Glimpse-Version"] == "1"


def test_format_grid_returns_three_panels(client, chelsea_jpeg: bytes) -> None:
    r = client.post("/v1/models/tiny:explain?format=grid", data=chelsea_jpeg, content_type="image/jpeg")
    assert r.status_code == 200 and r.mimetype == "image/png"
    grid = Image.open(io.BytesIO(r.data))
    assert grid.size == (3 * 451 + 2 * 4, 300)
    r = client.post(
        "/v1/models/tiny:explain?format=json",
        data=chelsea_jpeg,
        content_type="image/jpeg",
        headers={"Accept": "image/png"},
    )
    assert r.mimetype == "application/json"


def test_overlay_follows_the_heatmap(client) -> None:
    """Left half red, right half blue, explained for 'red': the fake's heatmap is the red channel, so the overlay
    must be hot on the left and cold on the right, at the upload's own size."""
    rgb = np.zeros((40, 120, 3), dtype=np.uint8)
    rgb[:, :60] = RED
    rgb[:, 60:] = BLUE
    r = client.post(
        "/v1/models/tiny:explain?label=red&colormap=jet&format=png", data=encode(rgb), content_type="image/png"
    )
    overlay = np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB")).astype(int)
    assert overlay.shape == (40, 120, 3)
    from rendering.render import colormap_lut

    hot = np.clip(np.array(RED) * 0.7 + colormap_lut("jet")[255], 0, 255)
    cold = np.clip(np.array(BLUE) * 0.7 + colormap_lut("jet")[0], 0, 255)
    assert np.abs(overlay[20, 10] - hot).max() <= 2 and np.abs(overlay[20, 110] - cold).max() <= 2


def test_blackbox_occlusion_and_422_through_the_api(make_app) -> None:
    client = make_app(FakeServing(methods=())).test_client()
    r = client.post(
        "/v1/models/tiny:explain?method=occlusion&patch_size=16", data=solid(RED, (32, 32)), content_type="image/png"
    )
    assert r.status_code == 200 and r.get_json()["via"] == "blackbox"
    r = client.post("/v1/models/tiny:explain?method=gradcam", data=solid(RED), content_type="image/png")
    assert r.status_code == 422
    err = error_of(r)
    assert err["code"] == "UNPROCESSABLE" and "glimpse export" in err["message"]


# ------------------------------------------------------------------------------------------- robustness: bad input


def _post(client, **kwargs):
    return client.post("/v1/models/tiny:explain", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"data": b"\x00" * 10, "content_type": "text/plain"}, 415, "unsupported content type"),
        ({"data": b""}, 415, "unsupported content type"),
        ({"data": b"", "content_type": "image/png"}, 400, "empty image"),
        ({"data": b"GIF89a-not-really", "content_type": "image/gif"}, 400, "not a decodable image"),
        ({"data": b"{not json", "content_type": "application/json"}, 400, "not valid JSON"),
        ({"json": [1, 2]}, 400, "must be an object"),
        ({"json": {}}, 400, "no image"),
        ({"json": {"image": {"b64": "%%%"}}}, 400, "not valid base64"),
        ({"json": {"image": "abc", "extra": 1}}, 400, "unknown JSON field(s) extra"),
        ({"json": {"images": {"b64": "x"}}}, 400, "must be a list"),
        ({"json": {"image": {"url": "http://x"}}}, 400, 'must be {"b64"'),
        ({"json": {"image": {"b64": b64(solid(RED))}, "method": "lime"}}, 400, "allowed: gradcam, occlusion"),
        ({"json": {"image": {"b64": b64(solid(RED))}, "method": 3}}, 400, "method must be a string"),
        ({"json": {"image": {"b64": b64(solid(RED))}, "method": "gradcam", "params": {"bogus": 1}}}, 400,
         "allowed: use_guided_grads"),
        ({"json": {"image": {"b64": b64(solid(RED))}, "params": {"bogus": 1}}}, 400,
         f"for method {c.DEFAULT_EXPLAIN_METHOD}; allowed: "),
        ({"json": {"image": {"b64": b64(solid(RED))}, "params": [1]}}, 400, "params must be"),
        (
            {"json": {"image": {"b64": b64(solid(RED))}, "target": {"label": "purple"}}},
            400,
            "allowed: red, green, blue",
        ),
        ({"json": {"image": {"b64": b64(solid(RED))}, "target": {"class_index": 9}}}, 400, "[0, 2]"),
        ({"json": {"image": {"b64": b64(solid(RED))}, "target": {"name": "x"}}}, 400, "target must be"),
        ({"json": {"image": {"b64": b64(solid(RED))}, "top_k": 0}}, 400, "top_k must be in"),
        ({"json": {"image": {"b64": b64(solid(RED))}, "heatmap_size": "big"}}, 400, "heatmap_size must be"),
        ({"json": {"image": {"b64": b64(solid(RED))}, "format": "gif"}}, 400, "allowed: json, png, grid"),
        ({"json": {"image": {"b64": b64(solid(RED))}, "colormap": "hot"}}, 400, "allowed: jet, viridis"),
        ({"json": {"image": {"b64": b64(solid(RED))}, "label": 5}}, 400, "label must be a string"),
        (
            {"data": {"photo": (io.BytesIO(solid(RED)), "a.png")}, "content_type": "multipart/form-data"},
            400,
            "unknown file field(s) photo",
        ),
        ({"data": {"method": "gradcam"}, "content_type": "multipart/form-data"}, 400, "no image"),
    ],
)
def test_bad_inputs_are_4xx_with_a_clear_message(client, fake: FakeServing, kwargs, status, needle) -> None:
    r = _post(client, **kwargs)
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    assert needle in error_of(r)["message"]
    assert not [call for call in fake.calls_of("Predict")]  # validated before any model call


def test_size_limits(make_app, chelsea_png: bytes) -> None:
    client = make_app(max_body_bytes=len(chelsea_png) - 1, max_images=2).test_client()
    r = client.post("/v1/models/tiny:explain", data=chelsea_png, content_type="image/png")
    assert r.status_code == 413 and "limit is" in error_of(r)["message"]
    r = client.post("/v1/models/tiny:explain", **multipart(solid(RED), solid(RED), solid(RED)))
    assert r.status_code == 413 and "limit is 2" in error_of(r)["message"]
    client = make_app(max_pixels=1000).test_client()
    r = client.post("/v1/models/tiny:predict", data=solid(RED, (100, 100)), content_type="image/png")
    assert r.status_code == 413 and "100x100" in error_of(r)["message"]


def test_truncated_and_bad_second_image(client, chelsea_jpeg: bytes) -> None:
    r = client.post("/v1/models/tiny:explain", data=chelsea_jpeg[:2000], content_type="image/jpeg")
    assert r.status_code == 400
    r = client.post("/v1/models/tiny:explain", **multipart(solid(RED), b"junk"))
    assert r.status_code == 400 and error_of(r)["message"].startswith("image 2:")


# ---------------------------------------------------------------------------------------------- serving failures


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (Unavailable("failed to connect to all addresses"), 503, "UNAVAILABLE"),
        (DeadlineExceeded("Deadline Exceeded"), 504, "DEADLINE_EXCEEDED"),
        (NotFound("Servable not found for request: Latest(tiny)"), 404, "NOT_FOUND"),
        (InvalidArgument("Expects arg[0] to be float but string is provided"), 400, "INVALID_ARGUMENT"),
        (Internal("boom"), 500, "INTERNAL"),
    ],
)
def test_serving_errors_are_mapped_once(client, fake: FakeServing, failure, status, code) -> None:
    fake.failures.append(failure)
    r = client.post("/v1/models/tiny:explain", data=solid(RED), content_type="image/png")
    assert r.status_code == status
    err = error_of(r)
    assert err["code"] == code and failure.message in err["message"]
    assert ("Retry-After" in r.headers) == (status == 503)


def test_unexpected_exceptions_are_500_without_details(make_app) -> None:
    class Broken(FakeServing):
        def metadata(self, model, **kwargs):
            raise RuntimeError("secret internals")

    r = make_app(Broken()).test_client().post("/v1/models/tiny:explain", data=solid(RED), content_type="image/png")
    assert r.status_code == 500 and "secret" not in error_of(r)["message"]


# ------------------------------------------------------------------------------------------------- auth and CORS


def test_auth_when_keys_are_configured(make_app) -> None:
    client = make_app(api_keys=("k1", "second-key")).test_client()
    for path in ("/healthz", "/readyz", "/metrics", "/", "/static/app.js"):
        r = client.get(path)
        assert r.status_code == 200, path
        r.close()
    r = client.get("/v1/models")
    assert r.status_code == 401 and error_of(r)["code"] == "UNAUTHENTICATED"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Basic k1"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer k1"}).status_code == 200
    assert client.get("/v1/models/tiny", headers={"Authorization": "bearer second-key"}).status_code == 200
    r = client.post("/v1/models/tiny:predict", data=solid(RED), content_type="image/png")
    assert r.status_code == 401
    r = client.post(
        "/v1/models/tiny:predict", data=solid(RED), content_type="image/png", headers={"Authorization": "Bearer k1"}
    )
    assert r.status_code == 200
    assert client.get("/openapi.json").status_code == 401


def test_no_auth_by_default(client) -> None:
    assert client.get("/v1/models").status_code == 200


def test_cors_off_by_default_and_on_when_configured(make_app, client) -> None:
    r = client.get("/v1/models", headers={"Origin": "https://example.org"})
    assert "Access-Control-Allow-Origin" not in r.headers
    client = make_app(cors_origins=("https://example.org",), api_keys=("k",)).test_client()
    r = client.options(
        "/v1/models/tiny:explain", headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    )
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "https://example.org"
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    r = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


# --------------------------------------------------------------------------------------------------------- metrics


def test_metrics_count_requests_grpc_and_images(client) -> None:
    client.post("/v1/models/tiny:explain", data=solid(RED), content_type="image/png")
    client.get("/v1/models/nope")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'glimpse_api_requests_total{method="POST",route="/v1/models/<name>:explain",status="200"} 1.0' in text
    assert 'glimpse_api_requests_total{method="GET",route="/v1/models/<name>",status="404"} 1.0' in text
    assert 'glimpse_api_request_duration_seconds_bucket{le="0.005",method="POST"' in text
    signature = c.explain_signature(c.DEFAULT_EXPLAIN_METHOD)  # no method in the request: the model's default
    assert f'glimpse_api_grpc_duration_seconds_count{{code="OK",rpc="Predict",signature="{signature}"}} 1.0' in text
    assert 'glimpse_api_grpc_duration_seconds_count{code="NOT_FOUND",rpc="GetModelStatus",signature=""} 1.0' in text
    assert "glimpse_api_image_bytes_count 1.0" in text
    assert "glimpse_api_requests_in_flight 1.0" in text  # this very request


def test_readyz_without_default_model_on_tf_serving(make_app, fake: FakeServing) -> None:
    """Real TF Serving has no gRPC health service: UNIMPLEMENTED still proves it is reachable."""
    from glimpse_wire.errors import Unimplemented

    client = make_app(default_model=None).test_client()
    fake.failures.append(Unimplemented("Method not found: grpc.health.v1.Health/Check"))
    assert client.get("/readyz").status_code == 200
    fake.failures.append(Unavailable("connection refused"))
    assert client.get("/readyz").status_code == 503


@pytest.mark.parametrize("verb", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/v1/models/tiny:explain", "/v1/models/tiny/versions/1:explain",
                                  "/v1/models/tiny/labels/stable:predict"])  # fmt: skip
def test_wrong_method_on_a_verb_route_is_405_allowing_post(client, fake: FakeServing, verb: str, path: str) -> None:
    r = client.open(path, method=verb)
    assert r.status_code == 405 and error_of(r)["code"] == "METHOD_NOT_ALLOWED"
    assert set(r.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    assert not fake.calls_of("GetModelStatus")  # not taken for a model named "tiny:explain"


def test_activations_layer_out_of_range_is_checked_before_the_users_image_is_sent(client, fake: FakeServing) -> None:
    r = client.post("/v1/models/tiny:explain", **multipart(solid(RED, (30, 20)), method="activations", layer=99))
    message = error_of(r)["message"]
    assert r.status_code == 400
    assert "layer 99 does not exist: this model has 2 activation layers (layers 0 to 1" in message
    assert "function_node" not in message
    # the range was learned from the signature by single-image probes, then kept for the version
    explains = [call for call in fake.calls_of("Predict") if call.signature == "explain_activations"]
    assert explains and all(call.batch == 1 for call in explains)
    probes = len(explains)
    r = client.post("/v1/models/tiny:explain", **multipart(solid(RED), method="activations", layer=5))
    assert r.status_code == 400 and "layer must be -1 (the Grad-CAM layer) or in [0, 1]" in error_of(r)["message"]
    assert len([c for c in fake.calls_of("Predict") if c.signature == "explain_activations"]) == probes  # cached
    ok = client.post("/v1/models/tiny:explain", **multipart(solid(RED), method="activations", layer=1))
    assert ok.status_code == 200
