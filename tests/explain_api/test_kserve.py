"""explain_api.kserve: KServe v1 bodies mapped to Glimpse's own and back. Unit tests of the pure functions, and the
round trip through the real app on the fake serving client: a v1 body as Glimpse's JSON, the app's answer as v1's."""

from __future__ import annotations

import base64

import pytest

from explain_api import kserve
from explain_api.errors import ApiError
from tests.rendering.conftest import solid

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------------------------------------ telling them apart


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"instances": [{"b64": "AAAA"}]}, True),
        ({"instances": []}, True),  # a v1 body, refused later for being empty
        ({"image": {"b64": "AAAA"}}, False),
        ({"images": [{"b64": "AAAA"}]}, False),
        ([{"instances": []}], False),
        (None, False),
        ("instances", False),
    ],
)
def test_a_v1_body_is_told_apart_by_its_instances(body: object, expected: bool) -> None:
    assert kserve.is_v1_body(body) is expected


# ------------------------------------------------------------------------------------------------ v1 -> Glimpse


def test_every_instance_form_becomes_one_glimpse_image() -> None:
    body = {"instances": [
        {"image_bytes": {"b64": "QQ=="}, "key": "first"},
        {"b64": "Qg=="},
        {"image": {"b64": "Qw=="}},
        "RA==",
        {"image_bytes": "RQ==", "key": 5},
    ]}
    v1 = kserve.to_glimpse_body(body, "predict")
    assert v1.body == {"images": [{"b64": s} for s in ("QQ==", "Qg==", "Qw==", "RA==", "RQ==")]}
    assert v1.keys == ("first", None, None, None, 5)


def test_parameters_are_glimpse_options_and_an_explain_answer_is_json() -> None:
    body = {"instances": [{"b64": "QQ=="}], "parameters": {"method": "occlusion", "params": {"patch_size": 8},
                                                           "top_k": 2, "label": "red", "heatmap_size": 16}}
    v1 = kserve.to_glimpse_body(body, "explain")
    assert v1.body == {"images": [{"b64": "QQ=="}], "method": "occlusion", "params": {"patch_size": 8}, "top_k": 2,
                       "label": "red", "heatmap_size": 16, "format": "json"}
    assert kserve.to_glimpse_body({"instances": ["QQ=="], "parameters": {"top_k": 1}}, "predict").body == {
        "images": [{"b64": "QQ=="}], "top_k": 1}
    assert "format" not in kserve.to_glimpse_body({"instances": ["QQ=="], "parameters": None}, "predict").body


def test_per_instance_class_index_is_the_requests_target() -> None:
    body = {"instances": [{"image_bytes": {"b64": "QQ=="}, "class_index": 2},
                          {"image_bytes": {"b64": "Qg=="}, "class_index": 2}]}
    assert kserve.to_glimpse_body(body, "explain").body["class_index"] == 2
    predicted = {"instances": [{"image_bytes": {"b64": "QQ=="}, "class_index": -1}]}
    assert "class_index" not in kserve.to_glimpse_body(predicted, "explain").body  # -1: the predicted class


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        ({"instances": []}, "predict", "non-empty list"),
        ({"instances": {"b64": "QQ=="}}, "predict", "non-empty list"),
        ({"instances": ["QQ=="], "signature_name": "serving_default"}, "predict", "unknown field(s) signature_name"),
        ({"instances": [3]}, "predict", "instances[0] must be an object"),
        ({"instances": [{"image_bytes": {"url": "x"}}]}, "predict", 'instances[0].image_bytes must be {"b64"'),
        ({"instances": [{"image": "QQ==", "image_bytes": "QQ=="}]}, "predict", "one image"),
        ({"instances": [{"key": 1}]}, "predict", "one image"),
        ({"instances": [{"image_bytes": "QQ==", "size": 3}]}, "predict", "unknown field(s) size in instances[0]"),
        ({"instances": [{"image_bytes": "QQ==", "class_index": 1}]}, "predict", "unknown field(s) class_index"),
        ({"instances": ["QQ=="], "parameters": [1]}, "predict", "parameters must be an object"),
        ({"instances": ["QQ=="], "parameters": {"method": "gradcam"}}, "predict", "unknown parameter(s) method"),
        ({"instances": ["QQ=="], "parameters": {"images": [{"b64": "QQ=="}]}}, "explain", "unknown parameter(s)"),
        ({"instances": ["QQ=="], "parameters": {"format": "png"}}, "explain", "answer is JSON"),
        ({"instances": [{"image_bytes": "QQ==", "class_index": 1}, {"image_bytes": "QQ==", "class_index": 2}]},
         "explain", "different class_index"),
        ({"instances": [{"image_bytes": "QQ==", "class_index": 1}, "QQ=="]}, "explain", "some instances"),
        ({"instances": [{"image_bytes": "QQ==", "class_index": 1}], "parameters": {"label": "red"}}, "explain",
         "both in the instances and in parameters"),
    ],
)
def test_what_cannot_be_mapped_is_a_400_naming_it(body: dict, kind: str, message: str) -> None:
    with pytest.raises(ApiError) as e:
        kserve.to_glimpse_body(body, kind)
    assert e.value.status == 400 and message in e.value.message


def test_image_request_parses_the_mapped_body_with_the_usual_checks() -> None:
    png = solid(RED)
    body = {"instances": [{"image_bytes": {"b64": b64(png)}}, b64(png)],
            "parameters": {"method": "occlusion", "params": {"patch_size": 8}}}
    req, v1 = kserve.image_request(body, kind="explain", max_images=4, query_string=b"colormap=jet&top_k=2")
    assert req.blobs == (png, png) and req.method == "occlusion" and req.params == {"patch_size": 8}
    assert (req.format, req.colormap, req.top_k) == ("json", "jet", 2)  # query parameters kept
    assert v1.keys == (None, None)
    with pytest.raises(ApiError, match="not valid base64"):
        kserve.image_request({"instances": ["%%%"]}, kind="predict", max_images=4)
    with pytest.raises(ApiError) as e:
        kserve.image_request({"instances": [b64(png)] * 3}, kind="predict", max_images=2)
    assert e.value.status == 413
    with pytest.raises(ApiError, match="top_k must be in"):
        kserve.image_request({"instances": [b64(png)], "parameters": {"top_k": 0}}, kind="predict", max_images=2)


# ------------------------------------------------------------------------------------------------ Glimpse -> v1

_ANSWER = {
    "model": {"name": "tiny", "version": 1},
    "results": [
        {"predictions": [{"label": "red", "score": 0.9, "class_index": 0}, {"label": "blue", "score": 0.1,
                                                                            "class_index": 2}]},
        {"predictions": [{"label": "blue", "score": 0.7, "class_index": 2}]},
    ],
}


def test_predict_answer_as_v1_predictions_one_per_instance_with_keys() -> None:
    assert kserve.to_v1_predict(_ANSWER, ("a", None)) == {"predictions": [
        {"class_index": 0, "label": "red", "score": 0.9, "top_k": _ANSWER["results"][0]["predictions"], "key": "a"},
        {"class_index": 2, "label": "blue", "score": 0.7, "top_k": _ANSWER["results"][1]["predictions"]},
    ]}
    with pytest.raises(ValueError, match="2 results for 1 instances"):
        kserve.to_v1_predict(_ANSWER, (None,))


def test_explain_answer_as_v1_predictions_and_explanations() -> None:
    answer = {"model": {"name": "tiny", "version": 1}, "method": "gradcam", "params": {}, "via": "signature",
              "colormap": "viridis", "results": [
                  {"target": {"class_index": 0, "label": "red", "score": 0.9},
                   "predictions": [{"label": "red", "score": 0.9, "class_index": 0}],
                   "heatmap": {"shape": [2, 2], "values": [[0, 1], [1, 0]]}, "overlay_jpeg": "xx",
                   "image": {"width": 4, "height": 4, "format": "PNG"}}]}
    v1 = kserve.to_v1_explain(answer, (7,))
    assert v1["predictions"] == [{"class_index": 0, "label": "red", "score": 0.9,
                                  "top_k": [{"label": "red", "score": 0.9, "class_index": 0}], "key": 7}]
    (explanation,) = v1["explanations"]
    assert explanation == {"model": {"name": "tiny", "version": 1}, "method": "gradcam", "params": {},
                           "via": "signature", "colormap": "viridis",
                           "target": {"class_index": 0, "label": "red", "score": 0.9},
                           "heatmap": {"shape": [2, 2], "values": [[0, 1], [1, 0]]}, "overlay_jpeg": "xx",
                           "image": {"width": 4, "height": 4, "format": "PNG"}, "key": 7}


# ------------------------------------------------------------------------------------------------ through the app


def test_a_v1_predict_through_the_app(client) -> None:
    body = {"instances": [{"image_bytes": {"b64": b64(solid(BLUE))}, "key": "b"}, {"b64": b64(solid(RED))}],
            "parameters": {"top_k": 2}}
    v1 = kserve.to_glimpse_body(body, "predict")
    r = client.post("/v1/models/tiny:predict", json=v1.body)
    assert r.status_code == 200, r.get_json()
    answer = kserve.to_v1_predict(r.get_json(), v1.keys)
    assert [(p["label"], p.get("key")) for p in answer["predictions"]] == [("blue", "b"), ("red", None)]
    assert all(len(p["top_k"]) == 2 and p["score"] > 0.5 for p in answer["predictions"])


def test_a_v1_explain_through_the_app(client) -> None:
    body = {"instances": [{"image_bytes": {"b64": b64(solid(GREEN))}, "class_index": 1, "key": 1},
                          {"image_bytes": {"b64": b64(solid(RED))}, "class_index": 1, "key": 2}],
            "parameters": {"method": "gradcam", "heatmap_size": 8}}
    v1 = kserve.to_glimpse_body(body, "explain")
    r = client.post("/v1/models/tiny:explain", json=v1.body, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.mimetype == "application/json"  # v1 answers JSON whatever the Accept header
    answer = kserve.to_v1_explain(r.get_json(), v1.keys)
    assert set(answer) == {"predictions", "explanations"}
    assert [p["key"] for p in answer["predictions"]] == [1, 2]
    assert [p["label"] for p in answer["predictions"]] == ["green", "red"]
    for explanation in answer["explanations"]:
        assert explanation["method"] == "gradcam" and explanation["target"]["class_index"] == 1
        assert explanation["heatmap"]["shape"] == [8, 8] and explanation["overlay_jpeg"]
        assert "predictions" not in explanation


# --- wired into the routes: the same :predict and :explain URLs answer v1 bodies in v1's shape --------------------


def test_v1_predict_and_explain_bodies_on_the_apis_own_routes(client) -> None:
    b64 = base64.b64encode(solid((200, 10, 10), (40, 30))).decode()
    body = {"instances": [{"image_bytes": {"b64": b64}, "key": "a"}, {"image": {"b64": b64}, "key": "b"}, b64]}
    predicted = client.post("/v1/models/tiny:predict", json=body)
    assert predicted.status_code == 200, predicted.get_json()
    predictions = predicted.get_json()["predictions"]
    assert [p.get("key") for p in predictions] == ["a", "b", None]
    assert predictions[0]["label"] in ("red", "green", "blue")

    explained = client.post("/v1/models/tiny:explain", json={**body, "parameters": {"method": "gradcam"}})
    assert explained.status_code == 200, explained.get_json()
    answer = explained.get_json()
    assert set(answer) == {"predictions", "explanations"}
    assert [e.get("key") for e in answer["explanations"]] == ["a", "b", None]
    assert answer["explanations"][0]["method"] == "gradcam"


def test_glimpse_bodies_still_get_glimpse_answers(client) -> None:
    b64 = base64.b64encode(solid((10, 200, 10), (40, 30))).decode()
    answer = client.post("/v1/models/tiny:predict", json={"image": {"b64": b64}}).get_json()
    assert "results" in answer and "predictions" not in answer


def test_a_bad_v1_body_is_a_400(client) -> None:
    response = client.post("/v1/models/tiny:predict", json={"instances": "not a list"})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "INVALID_ARGUMENT"
