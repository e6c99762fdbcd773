"""whatif.config against a fake ServingClient: signature checks, label vocab sources, arguments, TensorBoard rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimpse_wire.client import SignatureInfo, TensorSpec
from tests.whatif.support import FakeModel, FakeServing, image_example, write_layout
from whatif.config import (
    WitConfigError,
    local_label_vocab,
    read_serialized_examples,
    resolve_settings,
    tensorboard_settings,
)

LABELS = ["bird", "fruit", "vehicle"]
ADDRESS = "serving:8500"


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """An exporter-shaped ``tiny`` with versions 1 and 3 and four examples."""
    return write_layout(tmp_path, "tiny", LABELS, (1, 3), [image_example(i % 3, LABELS[i % 3]) for i in range(4)])


@pytest.fixture
def serving() -> FakeServing:
    return FakeServing({"tiny": FakeModel(LABELS, versions=(1, 3)), "other": FakeModel(LABELS, versions=(5,))})


def test_defaults_use_the_classification_signature_and_the_local_labels(examples: Path, serving: FakeServing) -> None:
    settings = resolve_settings(ADDRESS, "tiny", examples, client_factory=serving)
    assert settings.model.signature == "classification"
    assert settings.model.version is None and settings.served_version == 3
    assert settings.label_vocab == tuple(LABELS)
    assert settings.label_vocab_path == str(examples.parent.parent / "3" / "assets" / "labels.txt")
    assert settings.compare is None and not settings.use_predict
    assert serving.calls == [("metadata", "tiny", None, None)]  # the vocab came from disk: no Classify call
    assert serving.closed == 1


def test_vocab_comes_from_one_classify_call_when_no_labels_file_is_near(tmp_path: Path, serving: FakeServing) -> None:
    path = write_layout(tmp_path, "elsewhere", None, (), [image_example(0, "bird")])
    serving.models["tiny"].labels = ["b", "a", "c"]  # the server's order is the class-index order
    settings = resolve_settings(ADDRESS, "tiny", path, model_version=1, client_factory=serving)
    assert settings.label_vocab == ("b", "a", "c") and settings.label_vocab_path is None
    assert serving.calls == [("metadata", "tiny", 1, None), ("classify", "tiny", 1, 1)]


def test_labels_file_of_another_model_name_is_not_used(examples: Path, serving: FakeServing) -> None:
    serving.models["other"].labels = ["x", "y", "z"]
    settings = resolve_settings(ADDRESS, "other", examples, client_factory=serving)
    assert settings.label_vocab == ("x", "y", "z")
    assert local_label_vocab(examples, None, "other") is None
    assert local_label_vocab(examples, None, "tiny") == (LABELS, examples.parent.parent / "3" / "assets" / "labels.txt")
    assert local_label_vocab(examples, 2) is None  # no such version directory


def test_comparison_defaults_and_errors(examples: Path, serving: FakeServing) -> None:
    settings = resolve_settings(ADDRESS, "tiny", examples, model_version=3, compare_model_version=1,
                                client_factory=serving)
    assert settings.compare is not None
    assert (settings.compare.address, settings.compare.name, settings.compare.version) == (ADDRESS, "tiny", 1)
    assert settings.compare_served_version == 1

    with pytest.raises(WitConfigError, match="the model itself"):
        resolve_settings(ADDRESS, "tiny", examples, model_version=1, compare_model_version=1, client_factory=serving)
    serving.models["other"].labels = ["x", "y", "z"]
    with pytest.raises(WitConfigError, match="different labels"):
        resolve_settings(ADDRESS, "tiny", examples, compare_model_name="other", client_factory=serving)
    with pytest.raises(WitConfigError, match=r"Specific\(tiny, 9\)"):
        resolve_settings(ADDRESS, "tiny", examples, compare_model_version=9, client_factory=serving)


def test_predict_path_tensors_and_its_requirements(examples: Path, serving: FakeServing) -> None:
    settings = resolve_settings(ADDRESS, "tiny", examples, use_predict=True, client_factory=serving)
    assert (settings.predict_input_tensor, settings.predict_output_tensor) == ("inputs", "scores")

    with pytest.raises(WitConfigError, match="encoded images"):
        resolve_settings(ADDRESS, "tiny", examples, use_predict=True, signature="serving_default",
                         client_factory=serving)
    signatures = serving.models["tiny"].signatures
    signatures["two_inputs"] = SignatureInfo("tensorflow/serving/predict", inputs={
        "a": TensorSpec("DT_STRING", (None,)), "b": TensorSpec("DT_STRING", (None,))}, outputs={})
    with pytest.raises(WitConfigError, match="one tensor of serialized tf.Examples"):
        resolve_settings(ADDRESS, "tiny", examples, use_predict=True, signature="two_inputs", client_factory=serving)
    signatures["floats_in"] = SignatureInfo("tensorflow/serving/predict", inputs={
        "x": TensorSpec("DT_FLOAT", (None, 4))}, outputs={"scores": TensorSpec("DT_FLOAT", (None, 3))})
    with pytest.raises(WitConfigError, match="DT_STRING"):
        resolve_settings(ADDRESS, "tiny", examples, use_predict=True, signature="floats_in", client_factory=serving)
    signatures["no_scores"] = SignatureInfo("tensorflow/serving/predict", inputs={
        "x": TensorSpec("DT_STRING", (None,))}, outputs={"logits": TensorSpec("DT_FLOAT", (None, 3))})
    with pytest.raises(WitConfigError, match="float \\[B, C\\] output"):
        resolve_settings(ADDRESS, "tiny", examples, use_predict=True, signature="no_scores", client_factory=serving)
    with pytest.raises(WitConfigError, match="needs a classify signature"):
        resolve_settings(ADDRESS, "tiny", examples, signature="no_scores", client_factory=serving)
    with pytest.raises(WitConfigError, match="no signature 'missing'; the model has classification"):
        resolve_settings(ADDRESS, "tiny", examples, signature="missing", client_factory=serving)


def test_without_the_server(examples: Path, tmp_path: Path, serving: FakeServing) -> None:
    settings = resolve_settings(ADDRESS, "tiny", examples, check_server=False, client_factory=serving)
    assert settings.label_vocab == tuple(LABELS) and settings.served_version is None
    assert serving.calls == []
    lonely = write_layout(tmp_path, "lonely", None, (), [image_example(0, "bird")])
    with pytest.raises(WitConfigError, match="cannot find the label vocab"):
        resolve_settings(ADDRESS, "lonely", lonely, check_server=False)
    given = resolve_settings(ADDRESS, "lonely", lonely, check_server=False, label_vocab=["p", "q"])
    assert given.label_vocab == ("p", "q") and given.label_vocab_path is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"serving_address": " "}, "serving_address"),
        ({"model_name": ""}, "model_name"),
        ({"model_version": 0}, "model_version"),
        ({"compare_model_version": "x"}, "compare_model_version"),
        ({"max_examples": 0}, "max_examples"),
        ({"signature": ""}, "signature"),
    ],
)
def test_bad_arguments(examples: Path, serving: FakeServing, kwargs: dict, message: str) -> None:
    arguments = {"serving_address": ADDRESS, "model_name": "tiny", "examples_path": examples, **kwargs}
    with pytest.raises(WitConfigError, match=message):
        resolve_settings(**arguments, client_factory=serving)
    assert serving.calls == []


def test_examples_files(tmp_path: Path) -> None:
    with pytest.raises(WitConfigError, match="no examples TFRecord"):
        read_serialized_examples(tmp_path / "missing.tfrecord", 5)
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    with pytest.raises(WitConfigError, match="holds no examples"):
        read_serialized_examples(empty, 5)
    broken = tmp_path / "broken.tfrecord"
    broken.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(WitConfigError, match="cannot read"):
        read_serialized_examples(broken, 5)
    many = write_layout(tmp_path, "m", None, (), [image_example(i % 3, "x") for i in range(7)])
    assert len(read_serialized_examples(many, 5)) == 5


def test_tensorboard_settings_rows(examples: Path, serving: FakeServing) -> None:
    settings = resolve_settings(ADDRESS, "tiny", examples, compare_model_name="other", use_predict=True,
                                max_examples=50, client_factory=serving)
    rows = dict(tensorboard_settings(settings))
    assert rows["Inference address"] == ADDRESS and rows["Model name"] == "tiny"
    assert rows["Model type"] == "Classification" and rows["Model version (optional)"] == ""
    assert rows["Model signature (optional)"] == "classification" and rows["Uses Predict API"] == "yes"
    assert (rows["Predict input tensor"], rows["Predict output tensor"]) == ("inputs", "scores")
    assert rows["Path to examples"] == str(examples.resolve())
    assert rows["Maximum number of examples to load"] == "50"
    assert rows["Path to label dict (optional)"].endswith("tiny/3/assets/labels.txt")
    assert rows["Second model: model name"] == "other"
    plain = dict(tensorboard_settings(resolve_settings(ADDRESS, "tiny", examples, client_factory=serving)))
    assert "Predict input tensor" not in plain and "Second model: model name" not in plain


@pytest.fixture(scope="module")
def witwidget_loaded() -> None:
    """witwidget (and TensorFlow, which it imports) loaded once, outside the timed tests (importing whatif.config
    above installed whatif.compat)."""
    import witwidget.notebook.visualization  # noqa: F401


def test_builder_holds_the_settings(witwidget_loaded: None, examples: Path, serving: FakeServing) -> None:
    import tensorflow as tf

    from whatif.config import builder_from_settings, load_examples

    settings = resolve_settings(ADDRESS, "tiny", examples, model_version=3, compare_model_name="other",
                                use_predict=True, max_examples=3, client_factory=serving)
    loaded = load_examples(examples, settings.max_examples)
    assert len(loaded) == 3 and all(isinstance(e, tf.train.Example) for e in loaded)
    config = builder_from_settings(settings).build()
    assert config["examples"] == loaded
    expected = {
        "model_type": "classification", "inference_address": ADDRESS, "model_name": "tiny", "model_version": "3",
        "model_signature": "classification", "label_vocab": LABELS, "multiclass": True, "max_classes": 3,
        "target_feature": "label", "uses_predict_api": True, "predict_input_tensor": "inputs",
        "predict_output_tensor": "scores", "inference_address_2": ADDRESS, "model_name_2": "other",
        "model_signature_2": "classification", "are_sequence_examples": False,
    }
    assert {k: v for k, v in config.items() if k != "examples"} == expected


def test_load_examples_needs_the_image_feature(witwidget_loaded: None, tmp_path: Path) -> None:
    from whatif.config import load_examples

    path = write_layout(tmp_path, "m", None, (), [{"label": 1}])
    with pytest.raises(WitConfigError, match="no 'image/encoded' feature"):
        load_examples(path)
    with pytest.raises(WitConfigError, match="max_examples"):
        load_examples(path, 0)


def test_local_labels_are_read_from_a_zero_padded_version_directory(tmp_path: Path) -> None:
    base = tmp_path / "flowers"
    (base / "examples").mkdir(parents=True)
    (base / "examples" / "test.tfrecord").write_bytes(b"")
    for name, labels in (("00000007", "daisy\nrose\n"), ("3", "old\n")):
        (base / name / "assets").mkdir(parents=True)
        (base / name / "assets" / "labels.txt").write_text(labels)
    examples = base / "examples" / "test.tfrecord"
    assert local_label_vocab(examples, None) == (["daisy", "rose"], base / "00000007" / "assets" / "labels.txt")
    assert local_label_vocab(examples, 7, "flowers")[0] == ["daisy", "rose"]
    assert local_label_vocab(examples, 3)[0] == ["old"]
    assert local_label_vocab(examples, 5) is None
