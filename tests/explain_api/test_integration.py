"""The explain API in front of a real `glimpse serve` subprocess with a real exported model (the session fixture
`exported_model`): every method, batching, version and label paths, bad inputs, auth, serving down and back up,
the black-box occlusion path, and the page in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explain_api import service
from explain_api.app import create_app, state
from explain_api.config import ApiConfig
from glimpse_wire import contract as c
from glimpse_wire.client import ModelRef
from rendering.images import decode_image
from tests.explain_api.browser import chromium, run_page_session, serve_http
from tests.explain_api.servers import LABEL, Served
from tests.rendering.conftest import encode

pytestmark = [pytest.mark.slow, pytest.mark.integration]

@pytest.fixture
def api(served: Served):
    app = create_app(ApiConfig(serving_address=served.address, default_model=served.name, timeout_s=60.0))
    yield app
    state(app).client.close()


@pytest.fixture
def http(api):
    return api.test_client()


@pytest.fixture
def method(http, served: Served) -> str:
    """An in-graph method: gradcam when the model has it (an export without a conv layer has none), else another."""
    in_graph = http.get(f"/v1/models/{served.name}").get_json()["explain_signatures"]
    return "gradcam" if "gradcam" in in_graph else in_graph[0]


@pytest.fixture(scope="session")
def photos(chelsea: np.ndarray) -> list[bytes]:
    """Real photos: Tux Paint stamps when installed, plus skimage's cat (JPEG) and coffee (PNG)."""
    import skimage.data

    stamps = sorted(Path("/usr/share/tuxpaint/stamps").glob("*/*/*.png"))
    picked = [p.read_bytes() for p in stamps if "cartoon" not in str(p)][:2]
    return [*picked, encode(chelsea, "JPEG", quality=90), encode(skimage.data.coffee(), "PNG")]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _grpc_count(http, signature: str) -> float:
    text = http.get("/metrics").get_data(as_text=True)
    pattern = rf'glimpse_api_grpc_duration_seconds_count\{{code="OK",rpc="Predict",signature="{signature}"\}} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


# -------------------------------------------------------------------------------------------------------- models


def test_ready_and_model_detail(http, served: Served) -> None:
    assert http.get("/readyz").get_json()["ready"] is True
    body = http.get(f"/v1/models/{served.name}").get_json()
    assert body["version"] == served.version
    assert tuple(body["labels"]) == served.class_names
    assert set(body["methods"]) <= set(c.EXPLAIN_METHODS) and "occlusion" in body["methods"]
    assert body["input"]["height"] > 0 and body["input"]["width"] > 0
    assert {c.SIG_DEFAULT, c.SIG_PIXELS, c.SIG_CLASSIFY} <= set(body["signatures"])
    models = http.get("/v1/models").get_json()["models"]
    assert models[0]["name"] == served.name and models[0]["versions"][0]["state"] == "AVAILABLE"


def test_version_and_label_paths(http, served: Served, photos: list[bytes], method: str) -> None:
    n, v = served.name, served.version
    assert http.get(f"/v1/models/{n}/versions/{v}").get_json()["version"] == v
    assert http.get(f"/v1/models/{n}/labels/{LABEL}").get_json()["version"] == v
    r = http.post(f"/v1/models/{n}/versions/{v}:predict", data=photos[0], content_type="image/png")
    assert r.status_code == 200 and r.get_json()["model"] == {"name": n, "version": v}
    r = http.post(f"/v1/models/{n}/labels/{LABEL}:explain?method={method}", data=photos[0], content_type="image/png")
    assert r.status_code == 200 and r.get_json()["model"]["version"] == v
    r = http.post(f"/v1/models/{n}/versions/{v + 40}:predict", data=photos[0], content_type="image/png")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "NOT_FOUND"
    r = http.post(f"/v1/models/{n}/labels/nolabel:predict", data=photos[0], content_type="image/png")
    assert r.status_code == 400 and "nolabel" in r.get_json()["error"]["message"]
    assert http.get("/v1/models/no_such_model").status_code == 404


# --------------------------------------------------------------------------------------------- predict / explain


def test_predict_batch_in_one_call(http, served: Served, photos: list[bytes]) -> None:
    before = _grpc_count(http, c.SIG_DEFAULT)
    r = http.post(f"/v1/models/{served.name}:predict", json={"images": [{"b64": _b64(p)} for p in photos]})
    assert r.status_code == 200, r.get_json()
    results = r.get_json()["results"]
    assert len(results) == len(photos)
    for result in results:
        scores = [p["score"] for p in result["predictions"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert all(p["label"] == served.class_names[p["class_index"]] for p in result["predictions"])
    assert _grpc_count(http, c.SIG_DEFAULT) == before + 1


@pytest.mark.parametrize("name", c.ATTRIBUTION_METHODS)
def test_every_method(http, served: Served, photos: list[bytes], name: str) -> None:
    detail = http.get(f"/v1/models/{served.name}").get_json()
    if name not in detail["methods"]:
        assert name not in detail["explain_signatures"]
        r = http.post(f"/v1/models/{served.name}:explain?method={name}", data=photos[0], content_type="image/png")
        assert r.status_code == 422 and "glimpse export" in r.get_json()["error"]["message"]
        return
    in_graph = name in detail["explain_signatures"]
    before = _grpc_count(http, c.explain_signature(name))
    r = http.post(
        f"/v1/models/{served.name}:explain",
        json={"images": [{"b64": _b64(p)} for p in photos[:3]], "method": name},
    )
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["via"] == ("signature" if in_graph else "blackbox") and body["method"] == name
    assert {p.name for p in c.METHOD_PARAMS[name]} <= set(body["params"])
    info = http.get(f"/v1/models/{served.name}").get_json()["input"]
    for photo, result in zip(photos[:3], body["results"], strict=True):
        heat = np.array(result["heatmap"]["values"])
        assert heat.shape == (info["height"], info["width"]) and heat.min() >= 0 and heat.max() <= 1
        assert result["target"]["label"] in served.class_names
        assert result["target"]["class_index"] == result["predictions"][0]["class_index"]  # default: predicted
        overlay = Image.open(io.BytesIO(base64.b64decode(result["overlay_jpeg"])))
        assert overlay.size == Image.open(io.BytesIO(photo)).size
    if in_graph:
        assert _grpc_count(http, c.explain_signature(name)) == before + 1  # three images, one call


def test_activations_through_the_real_stack(http, served: Served, photos: list[bytes]) -> None:
    """explain_activations over gRPC from `glimpse serve`: the tiny model's three stage outputs, 3 images in one call;
    the grid tiles exactly the raw channels the JSON carries; PNG answers name the layer."""
    detail = http.get(f"/v1/models/{served.name}").get_json()
    assert c.ACTIVATIONS_METHOD in detail["explain_signatures"]
    shapes = {0: [64, 64, 16], 1: [32, 32, 32], 2: [16, 16, 32], -1: [16, 16, 32]}
    # the first explicit layer makes the API learn this version's layer range (a few probe calls, once)
    first = {"image": {"b64": _b64(photos[0])}, "method": "activations", "params": {"layer": 0}}
    assert http.post(f"/v1/models/{served.name}:explain", json=first).status_code == 200
    for layer, shape in shapes.items():
        before = _grpc_count(http, c.explain_signature(c.ACTIVATIONS_METHOD))
        images = [{"b64": _b64(p)} for p in photos[:3]]
        body = {"images": images, "method": "activations", "params": {"layer": layer}}
        r = http.post(f"/v1/models/{served.name}:explain", json=body)
        assert r.status_code == 200, r.get_json()
        assert _grpc_count(http, c.explain_signature(c.ACTIVATIONS_METHOD)) == before + 1
        for result in r.get_json()["results"]:
            acts = result["activations"]
            assert acts["layer"] == (2 if layer == -1 else layer) and acts["channels"]["shape"] == shape
            channels = np.frombuffer(base64.b64decode(acts["channels"]["b64"]), "<f4").reshape(shape)
            grid = np.frombuffer(base64.b64decode(acts["grid"]["b64"]), "<f4").reshape(acts["grid"]["shape"])
            h, w, k = shape
            n = acts["grid"]["tiles"][0]
            assert acts["grid"]["shape"] == [n * h, n * w] and n * n >= k > (n - 1) * (n - 1)
            low = channels.min() if n * n == k else min(channels.min(), 0.0)
            last = k - 1  # the last channel's tile
            tile = grid[(last // n) * h : (last // n + 1) * h, (last % n) * w : (last % n + 1) * w]
            np.testing.assert_allclose(tile, (channels[..., last] - low) / (channels.max() - low), atol=1e-5)
    r = http.post(f"/v1/models/{served.name}:explain?method=activations&layer=1&format=png", data=photos[2],
                  content_type="image/jpeg")  # fmt: skip
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.headers["X-Glimpse-Layer"] == "1" and r.headers["X-Glimpse-Layer-Name"] == "conv2"
    assert Image.open(io.BytesIO(r.data)).size == (384, 384)  # the 6x6-tile 192 px grid, enlarged 2x
    r = http.post(f"/v1/models/{served.name}:explain?method=activations&layer=3", data=photos[2],
                  content_type="image/jpeg")  # fmt: skip
    assert r.status_code == 400
    assert "layer must be -1 (the Grad-CAM layer) or in [0, 2]" in r.get_json()["error"]["message"]


def test_explain_a_chosen_class_and_png_answers(http, served: Served, photos: list[bytes], method: str) -> None:
    url = f"/v1/models/{served.name}:explain?method={method}"
    last = len(served.class_names) - 1
    r = http.post(f"{url}&class_index={last}", data=photos[2], content_type="image/jpeg")
    assert r.get_json()["results"][0]["target"]["class_index"] == last
    label = served.class_names[0]
    r = http.post(url, json={"image": {"b64": _b64(photos[2])}, "target": {"label": label}})
    assert r.get_json()["results"][0]["target"]["label"] == label
    r = http.post(f"{url}&format=grid", data=photos[2], content_type="image/jpeg")
    width, height = Image.open(io.BytesIO(photos[2])).size
    assert r.mimetype == "image/png" and Image.open(io.BytesIO(r.data)).size == (3 * width + 8, height)
    r = http.post(url, data=photos[2], content_type="image/jpeg", headers={"Accept": "image/png"})
    assert r.mimetype == "image/png" and Image.open(io.BytesIO(r.data)).size == (width, height)


def test_predict_and_explain_agree(http, served: Served, photos: list[bytes], method: str) -> None:
    pred = http.post(f"/v1/models/{served.name}:predict", data=photos[3], content_type="image/png").get_json()
    url = f"/v1/models/{served.name}:explain?method={method}"
    expl = http.post(url, data=photos[3], content_type="image/png").get_json()
    p, e = pred["results"][0]["predictions"], expl["results"][0]["predictions"]
    assert [x["class_index"] for x in p] == [x["class_index"] for x in e]
    assert np.allclose([x["score"] for x in p], [x["score"] for x in e], atol=1e-4)


def test_blackbox_occlusion_on_a_real_server(api, served: Served, photos: list[bytes]) -> None:
    """The fallback path (built for models without explain_* signatures) run against the real predict_pixels."""
    st = state(api)
    info = st.catalog.get(ModelRef(served.name))
    blackbox = dataclasses.replace(info, methods=())
    assert blackbox.fallback_methods == ("occlusion",)

    class Fixed:
        def get(self, ref):
            return blackbox

    image = decode_image(photos[3], max_pixels=10**8)
    out = service.explain_images(
        st.client,
        Fixed(),
        ModelRef(served.name),
        [image],
        service.ExplainSpec("occlusion"),
        top_k=3,
        budget=st.config.max_message_bytes,
    )
    assert out.via == "blackbox"
    item = out.images[0]
    assert item.heatmap.shape == info.input_size and 0 <= item.heatmap.min() and item.heatmap.max() <= 1
    assert item.heatmap.max() > 0 and 0 <= item.score <= 1
    assert item.label in served.class_names


class _BlackBox:
    """A catalog that hides the model's explain_* signatures, so that ``explain_images`` takes the black-box path."""

    def __init__(self, info: service.ModelInfo) -> None:
        self.info = dataclasses.replace(info, methods=())

    def get(self, ref: ModelRef) -> service.ModelInfo:
        return self.info


@pytest.mark.parametrize(
    ("params", "class_index"),
    [({}, -1), ({"patch_size": 8, "stride": 8}, -1), ({"patch_size": 10, "stride": 6}, 1), ({"patch_size": 7}, 0)],
)
def test_blackbox_occlusion_agrees_with_the_in_graph_signature(
    api, served: Served, photos: list[bytes], params: dict, class_index: int
) -> None:
    """One occlusion: on the same exported model and image, the NumPy map computed from Predict calls on
    predict_pixels equals the explain_occlusion signature's (same grid, grey, score and resize)."""
    st = state(api)
    info = st.catalog.get(ModelRef(served.name))
    height, width = info.input_size
    # At the model's input size, both paths see the same pixels: neither resizes (TF and Pillow would differ a bit).
    rgb = np.asarray(Image.open(io.BytesIO(photos[2])).convert("RGB").resize((width, height)), dtype=np.uint8)
    png = encode(rgb, "PNG")
    graph = st.client.explain(
        served.name,
        "occlusion",
        [png],
        class_index=[class_index],
        params=service.validate_params("occlusion", params),
        timeout_s=60.0,
    )
    out = service.explain_images(
        st.client,
        _BlackBox(info),
        ModelRef(served.name),
        [decode_image(png, max_pixels=10**8)],
        service.ExplainSpec("occlusion", params, class_index=class_index),
        top_k=3,
        budget=st.config.max_message_bytes,
        timeout_s=60.0,
    )
    assert out.via == "blackbox"
    item = out.images[0]
    assert item.class_index == int(graph.outputs[c.OUT_CLASS_INDEX][0])
    assert item.score == pytest.approx(float(graph.outputs[c.OUT_SCORE][0]), abs=1e-5)
    in_graph = np.asarray(graph.outputs[c.OUT_ATTRIBUTION][0], dtype=np.float32)
    assert item.attribution.shape == in_graph.shape == (height, width)
    assert np.abs(item.attribution - in_graph).max() <= 1e-4
    spread = float(in_graph.max() - in_graph.min())
    assert spread > 1e-3  # a map with structure, not two flat arrays that agree trivially
    # The heatmaps are both min-max normalised attributions: they agree up to the attribution tolerance over the spread.
    assert np.abs(item.heatmap - np.asarray(graph.outputs[c.OUT_HEATMAP][0])).max() <= 2e-4 / spread


# ------------------------------------------------------------------------------------------------ bad input, auth


def test_bad_inputs_never_reach_the_server_or_500(http, served: Served, chelsea_jpeg: bytes, method: str) -> None:
    url = f"/v1/models/{served.name}:explain?method={method}"
    cases = [
        ({"data": b"junk", "content_type": "image/png"}, 400),
        ({"data": chelsea_jpeg[:3000], "content_type": "image/jpeg"}, 400),
        ({"data": b"x", "content_type": "text/plain"}, 415),
        ({"json": {"image": {"b64": _b64(chelsea_jpeg)}, "method": "lime"}}, 400),
        ({"json": {"image": {"b64": _b64(chelsea_jpeg)}, "top_k": 0}}, 400),
        ({"json": {"image": {"b64": _b64(chelsea_jpeg)}, "target": {"label": "no-such-label"}}}, 400),
        ({"json": {"image": {"b64": _b64(chelsea_jpeg)}, "target": {"class_index": 10_000}}}, 400),
        ({"json": {"image": {"b64": _b64(chelsea_jpeg)}, "params": {"bogus": 1}}}, 400),
        ({"json": {"images": [{"b64": _b64(chelsea_jpeg)}] * 17}}, 413),
    ]
    for kwargs, status in cases:
        r = http.post(url, **kwargs)
        assert r.status_code == status, (kwargs.get("content_type"), r.get_json())
        assert set(r.get_json()["error"]) == {"code", "message"}


def test_auth_on_in_front_of_real_serving(served: Served, photos: list[bytes]) -> None:
    app = create_app(ApiConfig(serving_address=served.address, default_model=served.name, api_keys=("k-1",)))
    http = app.test_client()
    url = f"/v1/models/{served.name}:predict"
    assert http.post(url, data=photos[0], content_type="image/png").status_code == 401
    ok = http.post(url, data=photos[0], content_type="image/png", headers={"Authorization": "Bearer k-1"})
    assert ok.status_code == 200
    assert http.get("/readyz").status_code == 200
    state(app).client.close()


# --------------------------------------------------------------------------------------------------- down and up


class TcpRelay:
    """A TCP relay 127.0.0.1:port -> the model server. ``stop()`` closes the port and every connection through it,
    which the API sees exactly as a model server that went away; ``start()`` opens the same port again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone would not
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def test_serving_down_then_back_up(served: Served, photos: list[bytes]) -> None:
    """The model server goes away (its port refuses connections, open connections drop): the API answers 503 with
    Retry-After and /readyz says not ready; when it is back on the same address the API recovers without a restart."""
    relay = TcpRelay(served.port)
    relay.start()
    app = create_app(
        ApiConfig(
            serving_address=f"127.0.0.1:{relay.port}",
            default_model=served.name,
            timeout_s=10.0,
            readiness_timeout_s=2.0,
            metadata_ttl_s=0.0,
        )
    )
    http = app.test_client()
    url = f"/v1/models/{served.name}:predict"
    try:
        assert http.post(url, data=photos[0], content_type="image/png").status_code == 200
        relay.stop()
        r = http.post(url, data=photos[0], content_type="image/png")
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        assert r.get_json()["error"]["code"] == "UNAVAILABLE"
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.get_json()["ready"] is False
        relay.start()
        deadline = time.monotonic() + 90  # gRPC reconnects with its own backoff
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the API did not recover after the model server came back"
            time.sleep(0.5)
        assert http.post(url, data=photos[0], content_type="image/png").status_code == 200
    finally:
        relay.stop()
        state(app).client.close()


# ---------------------------------------------------------------------------------------------------------- page


@pytest.mark.browser
def test_page_against_the_real_stack(
    api, served: Served, photos: list[bytes], chelsea: np.ndarray, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode(chelsea))
    labels = min(5, len(served.class_names))
    methods_ok = len(api.test_client().get(f"/v1/models/{served.name}").get_json()["methods"])
    with serve_http(api) as base, chromium() as browser:
        run_page_session(browser, base, photo, photos[3], labels=labels, methods_ok=methods_ok, tmp_path=tmp_path)


def test_activations_layer_out_of_range_in_plain_words(http, served: Served, photos: list[bytes]) -> None:
    """layer=99 against the real signature: a 400 that gives the range, not TensorFlow's assertion text."""
    r = http.post(f"/v1/models/{served.name}:explain?method=activations&layer=99", data=photos[0],
                  content_type="image/png")  # fmt: skip
    message = r.get_json()["error"]["message"]
    assert r.status_code == 400 and "function_node" not in message
    assert message.startswith("layer 99 does not exist: this model has 3 activation layers (layers 0 to 2")
