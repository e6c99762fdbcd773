"""ServingClient against a real in-process gRPC server speaking TF Serving's method paths."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from glimpse_wire import contract as c
from glimpse_wire import errors
from glimpse_wire.client import (
    ClientConfig,
    ModelRef,
    ServingClient,
    TensorSpec,
    VersionStatus,
    build_explain_inputs,
)
from glimpse_wire.examples import make_example
from glimpse_wire.messages import Code, ModelServerConfig, ModelVersionStatus, StatusProto
from glimpse_wire.tensors import to_numpy
from tests.glimpse_wire.fake_serving import LABELS, FakeServing

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


# --------------------------------------------------------------------------------------------------------- predict


def test_predict_sends_tensors_and_decodes_outputs(client: ServingClient, fake: FakeServing) -> None:
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    result = client.predict(fake.model, {"images": pixels, "image_bytes": [PNG, b"x"]}, signature=c.SIG_PIXELS)
    assert result.model == ModelRef(fake.model, fake.version, c.SIG_PIXELS)
    np.testing.assert_array_equal(result.outputs["images"], pixels)
    assert result["image_bytes"].tolist() == [PNG, b"x"]
    sent = fake.requests["Predict"][0]
    assert sent.model_spec.signature_name == c.SIG_PIXELS
    assert sent.inputs["images"].tensor_content == pixels.tobytes()  # numbers travel as tensor_content


def test_predict_model_spec_version_label_and_filter(client: ServingClient, fake: FakeServing) -> None:
    client.predict(fake.model, {"a": [1], "b": [2]}, version=7, output_filter=["b"])
    client.predict(fake.model, {"a": [1]}, label="stable")
    first, second = fake.requests["Predict"]
    assert first.model_spec.WhichOneof("version_choice") == "version" and first.model_spec.version.value == 7
    assert first.model_spec.signature_name == ""  # the server's default
    assert list(first.output_filter) == ["b"]
    assert second.model_spec.WhichOneof("version_choice") == "version_label"
    assert second.model_spec.version_label == "stable"


def test_predict_result_with_filter(client: ServingClient, fake: FakeServing) -> None:
    result = client.predict(fake.model, {"a": [1], "b": [2.5]}, output_filter=["b"])
    assert list(result.outputs) == ["b"]
    assert result.outputs["b"].dtype == np.float32


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"model": ""}, ValueError),
        ({"version": 1, "label": "x"}, ValueError),
        ({"version": -1}, ValueError),
        ({"version": True}, ValueError),
        ({"label": ""}, ValueError),
        ({"inputs": [1, 2]}, TypeError),
        ({"inputs": {"a": None}}, TypeError),
        ({"inputs": {"": [1]}}, ValueError),
        ({"timeout_s": 0}, ValueError),
        ({"timeout_s": float("nan")}, ValueError),
    ],
)
def test_bad_arguments_fail_before_sending(
    client: ServingClient, fake: FakeServing, kwargs: dict, error: type[Exception]
) -> None:
    args = {"model": fake.model, "inputs": {"a": [1]}} | kwargs
    with pytest.raises(error):
        client.predict(args.pop("model"), args.pop("inputs"), **args)
    assert fake.calls["Predict"] == 0


# ------------------------------------------------------------------------------------------------ errors, retries


def test_unavailable_is_retried_with_backoff(client: ServingClient, fake: FakeServing) -> None:
    fake.fail("Predict", grpc.StatusCode.UNAVAILABLE, times=2)
    result = client.predict(fake.model, {"a": [1]})
    assert result.outputs["a"].tolist() == [1]
    assert fake.calls["Predict"] == 3


def test_retries_run_out(fake: FakeServing) -> None:
    fake.fail("Predict", grpc.StatusCode.UNAVAILABLE, times=5, message="server restarting")
    config = ClientConfig(address=fake.address, retries=1, backoff_s=0.01, timeout_s=5)
    with ServingClient(config) as client, pytest.raises(errors.Unavailable, match="server restarting") as info:
        client.predict(fake.model, {"a": [1]})
    assert fake.calls["Predict"] == 2
    assert isinstance(info.value.__cause__, grpc.RpcError)  # chained: raise ... from e
    assert info.value.http_status == 503


@pytest.mark.parametrize(
    "code,cls",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.INTERNAL, errors.Internal),
        (grpc.StatusCode.UNIMPLEMENTED, errors.Unimplemented),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
    ],
)
def test_other_errors_are_typed_and_not_retried(
    client: ServingClient, fake: FakeServing, code: grpc.StatusCode, cls: type[errors.ServingError]
) -> None:
    fake.fail("Predict", code, times=3, message="no good")
    with pytest.raises(cls, match="no good") as info:
        client.predict(fake.model, {"a": [1]})
    assert info.value.code == code.name
    assert fake.calls["Predict"] == 1


def test_server_side_errors_come_back_typed(client: ServingClient, fake: FakeServing) -> None:
    with pytest.raises(errors.NotFound, match=r"Servable not found for request: Latest\(nope\)"):
        client.predict("nope", {"a": [1]})
    with pytest.raises(errors.FailedPrecondition, match='Serving signature key "missing" not found'):
        client.predict(fake.model, {"a": [1]}, signature="missing")


def test_deadline_exceeded(client: ServingClient, fake: FakeServing) -> None:
    fake.delay("Predict", 0.5)
    start = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded):
        client.predict(fake.model, {"a": [1]}, timeout_s=0.1)
    assert time.monotonic() - start < 0.45
    assert fake.calls["Predict"] == 1


def test_deadline_bounds_retries(fake: FakeServing) -> None:
    fake.fail("Predict", grpc.StatusCode.UNAVAILABLE, times=100)
    config = ClientConfig(address=fake.address, retries=50, backoff_s=0.05, timeout_s=0.3)
    start = time.monotonic()
    with ServingClient(config) as client, pytest.raises(errors.Unavailable):
        client.predict(fake.model, {"a": [1]})
    assert time.monotonic() - start < 0.6
    assert 1 < fake.calls["Predict"] < 50


def test_no_server_is_unavailable(free_port: int) -> None:
    config = ClientConfig(address=f"127.0.0.1:{free_port}", retries=2, backoff_s=0.01, timeout_s=2)
    with ServingClient(config) as client, pytest.raises(errors.Unavailable):
        client.status("flowers")


def test_message_size_limit(fake: FakeServing) -> None:
    config = ClientConfig(address=fake.address, max_message_bytes=1024, retries=0)
    with ServingClient(config) as client, pytest.raises(errors.ResourceExhausted):
        client.predict(fake.model, {"a": np.zeros(1024, np.float32)})


def test_one_client_many_threads(client: ServingClient, fake: FakeServing) -> None:
    failures: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(10):
                value = np.full((2, 3), k * 100 + i, dtype=np.int64)
                out = client.predict(fake.model, {"x": value}).outputs["x"]
                assert np.array_equal(out, value)
        except BaseException as e:  # noqa: BLE001 - collected and re-raised below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert fake.calls["Predict"] == 80


def test_closed_client(fake: FakeServing) -> None:
    client = ServingClient(fake.address)
    client.close()
    client.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        client.status(fake.model)


def test_config_validation() -> None:
    for bad in (
        {"address": ""},
        {"timeout_s": 0},
        {"retries": -1},
        {"retries": 1.5},
        {"backoff_s": -0.1},
        {"max_message_bytes": 0},
        {"max_message_bytes": 2**31},
    ):
        with pytest.raises(ValueError):
            ClientConfig(**bad)
    with pytest.raises(TypeError):
        ServingClient(8500)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- classify, regress


def test_classify_examples(client: ServingClient, fake: FakeServing) -> None:
    result = client.classify(
        fake.model, [{c.EXAMPLE_IMAGE_KEY: PNG, c.EXAMPLE_LABEL_KEY: 2}, make_example({c.EXAMPLE_LABEL_KEY: 0})]
    )
    assert result.model.signature == c.SIG_CLASSIFY
    assert [max(r, key=lambda p: p[1])[0] for r in result.results] == [LABELS[2], LABELS[0]]
    assert result.results[0][2] == (LABELS[2], pytest.approx(0.9))
    sent = fake.requests["Classify"][0]
    assert sent.model_spec.signature_name == c.SIG_CLASSIFY
    assert sent.input.example_list.examples[0].features.feature[c.EXAMPLE_IMAGE_KEY].bytes_list.value == [PNG]


def test_classify_with_context_and_errors(client: ServingClient, fake: FakeServing) -> None:
    client.classify(fake.model, [{"label": 1}], context={"shared": b"ctx"}, signature="")
    sent = fake.requests["Classify"][0]
    assert sent.model_spec.signature_name == ""
    assert sent.input.WhichOneof("kind") == "example_list_with_context"
    assert sent.input.example_list_with_context.context.features.feature["shared"].bytes_list.value == [b"ctx"]
    with pytest.raises(ValueError, match="no examples"):
        client.classify(fake.model, [])
    with pytest.raises(TypeError):
        client.classify(fake.model, make_example({"a": 1}))  # one example, not a sequence
    with pytest.raises(ValueError, match="example 0"):
        client.classify(fake.model, [b"\xff\xff\xff"])
    with pytest.raises(TypeError, match="example 0"):
        client.classify(fake.model, [42])  # type: ignore[list-item]


def test_regress(client: ServingClient, fake: FakeServing) -> None:
    result = client.regress(fake.model, [{"x": [1.0, 2.0]}, {"x": 0.5}])
    assert result.values == [pytest.approx(3.0), pytest.approx(0.5)]


# ------------------------------------------------------------------------------------------- metadata, status


def test_metadata_parses_the_signature_map(client: ServingClient, fake: FakeServing) -> None:
    md = client.metadata(fake.model)
    assert (md.name, md.version) == (fake.model, fake.version)
    assert set(md.signatures) == set(fake.signature_map.signature_def)
    default = md.signatures[c.SIG_DEFAULT]
    assert default.method_name == c.PREDICT_METHOD_NAME
    assert default.inputs == {c.IN_IMAGE_BYTES: TensorSpec("DT_STRING", (None,), "serving_default_image_bytes:0")}
    assert md.signatures[c.SIG_PIXELS].inputs[c.IN_IMAGES].shape == (None, 32, 32, 3)
    assert md.signatures[c.SIG_CLASSIFY].method_name == c.CLASSIFY_METHOD_NAME
    gradcam = md.signatures[c.explain_signature("gradcam")]
    assert gradcam.inputs["use_guided_grads"].dtype == "DT_BOOL"
    assert gradcam.outputs[c.OUT_ATTRIBUTION].shape is None  # unknown rank
    sent = fake.requests["GetModelMetadata"][0]
    assert list(sent.metadata_field) == ["signature_def"]


def test_metadata_edge_cases(client: ServingClient, fake: FakeServing) -> None:
    fake.signature_map.signature_def.clear()
    assert client.metadata(fake.model, version=fake.version).signatures == {}
    assert fake.requests["GetModelMetadata"][0].model_spec.version.value == fake.version
    fake.send_signature_map = False
    with pytest.raises(errors.Internal, match="signature_def"):
        client.metadata(fake.model)


def test_status(client: ServingClient, fake: FakeServing) -> None:
    fake.statuses = [
        ModelVersionStatus(
            version=2,
            state=ModelVersionStatus.State.END,
            status=StatusProto(error_code=Code.NOT_FOUND, error_message="saved_model.pb missing"),
        ),
        ModelVersionStatus(version=1, state=ModelVersionStatus.State.AVAILABLE),
    ]
    assert client.status(fake.model) == [
        VersionStatus(1, "AVAILABLE", "OK", ""),
        VersionStatus(2, "END", "NOT_FOUND", "saved_model.pb missing"),
    ]
    assert client.status(fake.model, version=1)[0].available


def test_wait_until_available(client: ServingClient, fake: FakeServing) -> None:
    fake.statuses = [ModelVersionStatus(version=1, state=ModelVersionStatus.State.LOADING)]

    def become_available() -> None:
        time.sleep(0.2)
        fake.statuses = [ModelVersionStatus(version=1, state=ModelVersionStatus.State.AVAILABLE)]

    fake.fail("GetModelStatus", grpc.StatusCode.NOT_FOUND, times=1)
    thread = threading.Thread(target=become_available)
    thread.start()
    start = time.monotonic()
    client.wait_until_available(fake.model, timeout_s=3, poll_s=0.05)
    assert 0.15 < time.monotonic() - start < 2
    thread.join(timeout=2)
    assert fake.calls["GetModelStatus"] >= 3  # NOT_FOUND, LOADING..., AVAILABLE


def test_wait_until_available_times_out_or_fails(client: ServingClient, fake: FakeServing) -> None:
    fake.statuses = [ModelVersionStatus(version=1, state=ModelVersionStatus.State.LOADING)]
    with pytest.raises(errors.DeadlineExceeded, match="LOADING"):
        client.wait_until_available(fake.model, timeout_s=0.3, poll_s=0.05)
    fake.statuses = [
        ModelVersionStatus(
            version=1,
            state=ModelVersionStatus.State.END,
            status=StatusProto(error_code=Code.INVALID_ARGUMENT, error_message="bad graph"),
        )
    ]
    with pytest.raises(errors.InvalidArgument, match="bad graph"):
        client.wait_until_available(fake.model, timeout_s=2, poll_s=0.05)
    fake.fail("GetModelStatus", grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(errors.PermissionDenied):
        client.wait_until_available(fake.model, timeout_s=2, poll_s=0.05)


def test_reload_config(client: ServingClient, fake: FakeServing) -> None:
    text = 'model_config_list { config { name: "flowers" base_path: "/m/flowers" model_platform: "tensorflow" } }'
    client.reload_config(text)
    sent = fake.requests["HandleReloadConfigRequest"][0]
    assert sent.config.model_config_list.config[0].base_path == "/m/flowers"
    message = ModelServerConfig()
    message.model_config_list.config.add(name="other", base_path="/m/other")
    client.reload_config(message)
    assert fake.requests["HandleReloadConfigRequest"][1].config == message
    fake.reload_status = StatusProto(error_code=Code.INVALID_ARGUMENT, error_message="bad base path")
    with pytest.raises(errors.InvalidArgument, match="bad base path"):
        client.reload_config(text)
    with pytest.raises(ValueError, match="text proto"):
        client.reload_config("model_config_list { nonsense: 1 }")


def test_health(client: ServingClient, fake: FakeServing) -> None:
    assert client.health() == "SERVING"
    fake.health.set(fake.model, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        assert client.health(fake.model) == "NOT_SERVING"
    finally:
        fake.health.set(fake.model, health_pb2.HealthCheckResponse.SERVING)
    with pytest.raises(errors.NotFound):
        client.health("no-such-service")


# ----------------------------------------------------------------------------------------------------- explain


def test_explain_fills_defaults_and_broadcasts(client: ServingClient, fake: FakeServing) -> None:
    result = client.explain(fake.model, "smoothgrad", [PNG, PNG, PNG], params={"num_samples": 8, "noise": [0, 1, 2]})
    sent = fake.requests["Predict"][0]
    assert sent.model_spec.signature_name == "explain_smoothgrad"
    inputs = {alias: to_numpy(t) for alias, t in sent.inputs.items()}
    assert set(inputs) == {"image_bytes", "class_index", "num_samples", "noise", "seed"}
    assert inputs["class_index"].dtype == np.int32 and inputs["class_index"].tolist() == [-1, -1, -1]
    assert inputs["num_samples"].dtype == np.int32 and inputs["num_samples"].tolist() == [8, 8, 8]
    assert inputs["noise"].dtype == np.float32 and inputs["noise"].tolist() == [0.0, 1.0, 2.0]
    assert inputs["seed"].tolist() == [0, 0, 0]  # METHOD_PARAMS default
    assert result.model.signature == "explain_smoothgrad"


def test_build_explain_inputs_for_every_method() -> None:
    for method in c.EXPLAIN_METHODS:
        inputs = build_explain_inputs(method, [PNG, PNG], class_index=[1, -1])
        expected = {c.IN_IMAGE_BYTES, c.IN_CLASS_INDEX, *(p.name for p in c.METHOD_PARAMS[method])}
        assert set(inputs) == expected
        for p in c.METHOD_PARAMS[method]:
            assert inputs[p.name].shape == (2,) and inputs[p.name].tolist() == [p.default, p.default]
        assert inputs[c.IN_CLASS_INDEX].tolist() == [1, -1]
    gradcam = build_explain_inputs("gradcam", [PNG], class_index=4, params={"use_guided_grads": False})
    assert gradcam["use_guided_grads"].dtype == np.bool_ and gradcam["use_guided_grads"].tolist() == [False]
    assert gradcam[c.IN_CLASS_INDEX].tolist() == [4]


@pytest.mark.parametrize(
    "method,kwargs,match",
    [
        ("nope", {}, "unknown method"),
        ("gradcam", {"params": {"colour": 1}}, "allowed: use_guided_grads"),
        ("vanilla_gradients", {"params": {"x": 1}}, r"allowed: \(none\)"),
        ("smoothgrad", {"params": {"num_samples": 0}}, r"\[1, 256\]"),
        ("smoothgrad", {"params": {"num_samples": 2.5}}, "integer"),
        ("smoothgrad", {"params": {"noise": float("inf")}}, "finite"),
        ("smoothgrad", {"params": {"noise": "1"}}, "number"),
        ("smoothgrad", {"params": {"num_samples": [1, 2]}}, "2 values for 1 images"),
        ("gradcam", {"params": {"use_guided_grads": "yes"}}, "true or false"),
        ("occlusion", {"params": {"patch_size": -1}}, "patch_size"),
        ("gradcam", {"class_index": [-2]}, "class_index"),
        ("gradcam", {"class_index": [1, 2]}, "2 values"),
        ("gradcam", {"class_index": [True]}, "class_index"),
    ],
)
def test_explain_argument_errors(method: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_explain_inputs(method, [PNG], **kwargs)


def test_explain_image_errors(client: ServingClient, fake: FakeServing) -> None:
    with pytest.raises(ValueError, match="no images"):
        client.explain(fake.model, "gradcam", [])
    with pytest.raises(ValueError, match="image 1 is empty"):
        client.explain(fake.model, "gradcam", [PNG, b""])
    with pytest.raises(TypeError):
        client.explain(fake.model, "gradcam", PNG)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="image 0"):
        client.explain(fake.model, "gradcam", ["path.png"])  # type: ignore[list-item]
    assert fake.calls["Predict"] == 0


def test_the_channel_reconnects_fast_after_an_outage() -> None:
    """gRPC's reconnect backoff grows to 120 s by default; the client's channel caps it (1 s by default)."""
    options = dict(ClientConfig().channel_options())
    assert options["grpc.max_reconnect_backoff_ms"] == 1000
    assert options["grpc.initial_reconnect_backoff_ms"] == options["grpc.min_reconnect_backoff_ms"] == 100
    assert options["grpc.max_send_message_length"] == options["grpc.max_receive_message_length"] == 64 * 2**20
    assert dict(ClientConfig(reconnect_backoff_max_s=0.05).channel_options())["grpc.initial_reconnect_backoff_ms"] == 50
    for bad in (0, -1, float("inf"), True, 7200):
        with pytest.raises(ValueError, match="reconnect_backoff_max_s"):
            ClientConfig(reconnect_backoff_max_s=bad)
