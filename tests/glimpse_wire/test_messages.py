"""Our message definitions: TF Serving's method paths and type names, Any packing, and fresh generated code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import any_pb2, text_format

from glimpse_wire import messages as m

ROOT = Path(__file__).resolve().parents[2]


def test_method_paths_are_tf_servings() -> None:
    assert {name: method.path for name, method in m.METHODS.items()} == {
        "Predict": "/tensorflow.serving.PredictionService/Predict",
        "Classify": "/tensorflow.serving.PredictionService/Classify",
        "Regress": "/tensorflow.serving.PredictionService/Regress",
        "MultiInference": "/tensorflow.serving.PredictionService/MultiInference",
        "GetModelMetadata": "/tensorflow.serving.PredictionService/GetModelMetadata",
        "GetModelStatus": "/tensorflow.serving.ModelService/GetModelStatus",
        "HandleReloadConfigRequest": "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
    }
    assert m.METHODS["Predict"].request is m.PredictRequest and m.METHODS["Predict"].response is m.PredictResponse


def test_our_packages_never_collide_with_tensorflows() -> None:
    for name in m.__all__:
        obj = getattr(m, name)
        descriptor = getattr(obj, "DESCRIPTOR", None)
        if descriptor is not None and hasattr(descriptor, "full_name"):
            assert descriptor.full_name.startswith("glimpse."), descriptor.full_name


@pytest.mark.parametrize(
    "cls,name",
    [
        (m.SignatureDefMap, "tensorflow.serving.SignatureDefMap"),
        (m.TensorProto, "tensorflow.TensorProto"),
        (m.SignatureDef, "tensorflow.SignatureDef"),
        (m.Example, "tensorflow.Example"),
        (m.ModelServerConfig, "tensorflow.serving.ModelServerConfig"),
        (m.PredictionLog, "tensorflow.serving.PredictionLog"),
    ],
)
def test_tf_full_names(cls: type, name: str) -> None:
    assert m.tf_full_name(cls) == name
    assert m.type_url(cls) == "type.googleapis.com/" + name


def test_pack_and_unpack_any() -> None:
    sdm = m.SignatureDefMap()
    sdm.signature_def["serving_default"].method_name = "tensorflow/serving/predict"
    packed = m.pack_any(sdm)
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    assert m.unpack_any(packed, m.SignatureDefMap) == sdm
    ours = any_pb2.Any(type_url="type.googleapis.com/glimpse.tfs.SignatureDefMap", value=packed.value)
    assert m.unpack_any(ours, m.SignatureDefMap) == sdm
    with pytest.raises(ValueError, match="expected tensorflow.serving.SignatureDefMap"):
        m.unpack_any(any_pb2.Any(type_url="type.googleapis.com/tensorflow.Example"), m.SignatureDefMap)
    with pytest.raises(ValueError, match="does not parse"):
        m.unpack_any(any_pb2.Any(type_url=packed.type_url, value=b"\xff\xff"), m.SignatureDefMap)


def test_convert_between_wire_compatible_messages() -> None:
    spec = m.ModelSpec(name="flowers", signature_name="serving_default")
    spec.version.value = 3
    request = m.GetModelStatusRequest(model_spec=spec)
    # GetModelMetadataRequest shares field 1 (model_spec) with GetModelStatusRequest.
    as_metadata = m.convert(request, m.GetModelMetadataRequest)
    assert as_metadata.model_spec == spec
    assert m.convert(request, m.GetModelStatusRequest) is request
    with pytest.raises(TypeError):
        m.convert(b"bytes", m.ModelSpec)  # type: ignore[arg-type]


def test_model_server_config_text_format() -> None:
    text = """
    model_config_list {
      config {
        name: "flowers" base_path: "/models/flowers" model_platform: "tensorflow"
        model_version_policy { specific { versions: 1 versions: 2 } }
        version_labels { key: "stable" value: 1 }
        version_labels { key: "canary" value: 2 }
      }
    }
    """
    config = text_format.Parse(text, m.ModelServerConfig())
    model = config.model_config_list.config[0]
    assert model.model_version_policy.WhichOneof("policy_choice") == "specific"
    assert list(model.model_version_policy.specific.versions) == [1, 2]
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}


def test_unknown_fields_are_preserved() -> None:
    # TensorInfo.composite_tensor (field 5) is not defined here; it must survive a parse/serialize cycle.
    raw = m.TensorInfo(name="x:0", dtype=m.DataType.DT_FLOAT).SerializeToString() + b"\x2a\x02\x08\x01"
    assert m.TensorInfo.FromString(raw).SerializeToString() == raw


@pytest.mark.integration
def test_generated_code_is_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "glimpse_wire._regen", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
