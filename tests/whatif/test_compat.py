"""whatif.compat: witwidget 1.8.1 on protobuf 6, tensorflow-serving-api 2.21, grpcio 1.85 and IPython 9."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from whatif import compat

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_importing_whatif_and_its_cli_stays_light() -> None:
    proc = _python(
        "import sys, json, whatif, whatif.cli\n"
        "heavy = ('tensorflow', 'witwidget', 'IPython', 'grpc', 'matplotlib', 'nbformat', 'google.protobuf')\n"
        "print(json.dumps([whatif.compat.installed(), [m for m in heavy if m in sys.modules]]))\n",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [True, []]


def test_every_vendored_module_has_a_modern_counterpart() -> None:
    import importlib.util

    vendored = compat.vendored_modules()
    assert len(vendored) >= 15
    assert "witwidget._vendor.tensorflow_serving.apis.prediction_service_pb2" in vendored
    for name in vendored:
        modern = compat.modern_name(name)
        assert modern is not None and modern.startswith("tensorflow_serving.")
        assert importlib.util.find_spec(modern) is not None, (name, modern)
    assert compat.modern_name("witwidget._vendor.tensorflow_serving.util.status_pb2") == (
        "tensorflow_serving.apis.status_pb2")
    assert compat.modern_name("witwidget._vendor.tensorflow_serving.apis") is None  # packages load as they are
    assert compat.modern_name("witwidget.notebook.base") is None
    assert compat.modern_name("tensorflow_serving.apis.predict_pb2") is None


def test_message_to_json_accepts_the_removed_keyword() -> None:
    from google.protobuf import json_format

    from glimpse_wire.messages import ClassificationResult

    result = ClassificationResult()
    result.classifications.add().classes.add(label="", score=0.0)
    assert json.loads(compat.message_to_json(result, including_default_value_fields=True)) == {
        "classifications": [{"classes": [{"label": "", "score": 0.0}]}]}
    assert json.loads(compat.message_to_json(result)) == json.loads(json_format.MessageToJson(result))
    assert json.loads(compat.message_to_json(result, including_default_value_fields=False)) == {
        "classifications": [{"classes": [{}]}]}
    with pytest.raises(TypeError, match="not both"):
        compat.message_to_json(result, including_default_value_fields=True, always_print_fields_with_no_presence=True)


def test_install_is_idempotent_and_patches_an_already_imported_inference_utils(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from google.protobuf import json_format

    compat.install()
    compat.install()
    assert sum(1 for finder in sys.meta_path if isinstance(finder, compat._WitwidgetFinder)) == 1
    fake = types.ModuleType("witwidget._utils.inference_utils")
    fake.json_format = json_format
    monkeypatch.setitem(sys.modules, "witwidget._utils.inference_utils", fake)
    compat.install()
    assert fake.json_format.MessageToJson is compat.message_to_json
    assert fake.json_format.Parse is json_format.Parse  # everything else is the real module's


@pytest.fixture(scope="module")
def serving_stubs() -> types.ModuleType:
    """tensorflow-serving-api's gRPC stubs (they import TensorFlow), loaded once outside the timed tests."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc


def test_beta_stub_factory_wraps_a_real_stub(serving_stubs: types.ModuleType) -> None:
    import grpc
    from grpc.beta import implementations

    beta_channel = implementations.insecure_channel("127.0.0.1", 9)
    try:
        stub = compat.beta_create_PredictionService_stub(beta_channel)
        assert isinstance(stub, serving_stubs.PredictionServiceStub)
        assert callable(stub.Classify) and callable(stub.Predict)
    finally:
        beta_channel._channel.close()
    with grpc.insecure_channel("127.0.0.1:9") as channel:
        assert isinstance(compat.beta_create_PredictionService_stub(channel), serving_stubs.PredictionServiceStub)
        with pytest.raises(TypeError, match="not supported"):
            compat.beta_create_PredictionService_stub(channel, host="x")
    with pytest.raises(TypeError, match="grpc channel"):
        compat.beta_create_PredictionService_stub("127.0.0.1:9")


@pytest.mark.slow
@pytest.mark.integration
def test_witwidget_breaks_without_whatif_and_works_with_it() -> None:
    without = _python("import witwidget.notebook.visualization")
    assert without.returncode != 0
    assert "cannot import name 'display' from 'IPython.core.display'" in without.stderr

    proc = _python(
        "import json, sys\n"
        "import whatif\n"
        "import witwidget.notebook.visualization as viz\n"
        "from witwidget._utils import inference_utils, platform_utils, common_utils\n"
        "import witwidget._vendor.tensorflow_serving.apis.prediction_service_pb2 as vendored_service\n"
        "import IPython.core.display, IPython.core.display_functions\n"
        "from tensorflow_serving.apis import classification_pb2, prediction_service_pb2\n"
        "print(json.dumps({\n"
        "  'same_messages': common_utils.classification_pb2.ClassificationResponse is "
        "classification_pb2.ClassificationResponse,\n"
        "  'beta': platform_utils.prediction_service_pb2.beta_create_PredictionService_stub is "
        "whatif.compat.beta_create_PredictionService_stub,\n"
        "  'modern_untouched': not hasattr(prediction_service_pb2, 'beta_create_PredictionService_stub'),\n"
        "  'vendored_is_alias': vendored_service.__wrapped__ is prediction_service_pb2,\n"
        "  'json': inference_utils.json_format.MessageToJson is whatif.compat.message_to_json,\n"
        "  'display': IPython.core.display.display is IPython.core.display_functions.display,\n"
        "  'widget': viz.WitWidget.__module__,\n"
        "}))\n"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"same_messages": True, "beta": True, "modern_untouched": True, "vendored_is_alias": True,
                      "json": True, "display": True, "widget": "witwidget.notebook.jupyter.wit"}
