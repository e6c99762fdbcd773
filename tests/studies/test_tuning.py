"""`glimpse tune`: configuration, the search space, quick real searches with every tuner (Keras Tuner's random,
hyperband and bayesian; AutoKeras) that export the best model, and the AutoKeras model adapter."""

from __future__ import annotations

import csv
import io
import json
import sys

import numpy as np
import pytest

from glimpse.cli import main as glimpse_main
from glimpse_wire import contract
from studies.chapter import StudyError
from studies.tuning import AUTOKERAS_TRIAL_COLUMNS, TRIAL_COLUMNS, TUNERS, TuneConfig, trial_columns
from training.fit import TrainConfig


@pytest.fixture(autouse=True)
def _keep_argv(monkeypatch):
    """glimpse.cli.main(argv) rewrites sys.argv; give it back after each test."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))


def test_tuners_offered():
    assert TUNERS == ("random", "hyperband", "bayesian", "autokeras")
    assert trial_columns("autokeras") == AUTOKERAS_TRIAL_COLUMNS
    assert all(trial_columns(t) == TRIAL_COLUMNS for t in ("random", "hyperband", "bayesian"))


@pytest.mark.parametrize(
    ("kwargs", "base", "message"),
    [
        ({"tuner": "grid"}, {}, "unknown tuner"),
        ({"time_limit": 0}, {}, "time_limit"),
        ({"time_limit": -5.0}, {}, "time_limit"),
        ({"max_trials": 0}, {}, "max_trials"),
        ({"tuner": "hyperband"}, {"epochs": 1}, "hyperband"),
        ({}, {"name": "../x"}, "--name"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, kwargs, base, message):
    with pytest.raises(StudyError) as info:
        TuneConfig(out=tmp_path, base=TrainConfig(**base), **kwargs)
    assert message in str(info.value)


def test_the_base_run_is_a_train_config_checked_by_it(tmp_path, capsys):
    config = TuneConfig(out=tmp_path)
    assert isinstance(config.base, TrainConfig) and config.base.epochs == 6 and config.base.image_size == 128
    with pytest.raises(ValueError, match="batch-size"):
        TuneConfig(out=tmp_path, base=TrainConfig(batch_size=0))
    assert glimpse_main(["tune", "--batch-size", "0", "--out", str(tmp_path)]) == 2
    assert "batch-size" in capsys.readouterr().err


def test_search_space_has_the_chapter_hyperparameters():
    import keras_tuner as kt

    from studies.tuning import define_search_space

    hp = kt.HyperParameters()
    values = define_search_space(hp, pretrained=True)
    assert set(hp.values) == {"lr", "optimizer", "dropout", "dense_units", "augment", "unfreeze"}
    assert set(values) == set(hp.values)
    assert 1e-4 <= values["lr"] <= 1e-2 and values["optimizer"] in ("adam", "rmsprop", "momentum", "sgd")
    scratch = kt.HyperParameters()
    assert define_search_space(scratch, pretrained=False)["unfreeze"] == 1.0
    assert "unfreeze" not in scratch.values


def test_cli_rejects_bad_flags_with_exit_2(tmp_path, capsys):
    rc = glimpse_main(["tune", "--max-trials", "0", "--out", str(tmp_path)])
    assert rc == 2
    assert "max_trials" in capsys.readouterr().err
    rc = glimpse_main(["tune", "--tuner", "autokeras", "--time-limit", "0", "--out", str(tmp_path)])
    assert rc == 2
    assert "time_limit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        glimpse_main(["tune", "--tuner", "grid", "--out", str(tmp_path)])


def _run_tune(out, argv):
    saved = list(sys.argv)
    argv = ["tune", "--dataset", "tuxpaint", *argv, "--quick", "--seed", "3", "--no-determinism", "--verbose", "0"]
    argv += ["--out", str(out / "report"), "--export-dir", str(out / "models"), "--name", "tux"]
    try:
        assert glimpse_main(argv) == 0
    finally:
        sys.argv = saved
    return out


def _jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG")
    return buf.getvalue()


def _read_trials(report):
    with (report / "trials.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or ()), list(reader)


def _version_dir(out):
    versions = sorted((out / "models" / "tux").iterdir())
    version = next(v for v in versions if v.name.isdigit())
    assert version.name == "1" and (version / "saved_model.pb").exists()
    return version


# Keras Tuner: flags of each quick search, and the epochs each of its trials must have run.
KERAS_TUNER_RUNS = {
    "random": (["--max-trials", "2"], [1, 1]),
    "bayesian": (["--max-trials", "2", "--epochs", "2"], [2, 2]),
    # Hyperband, max_epochs 3 and factor 3: its first bracket starts with 1-epoch trials (the cap stops it at two).
    "hyperband": (["--max-trials", "2", "--epochs", "3"], [1, 1]),
}
HP_COLUMNS = ("lr", "optimizer", "dropout", "dense_units", "augment")


@pytest.fixture(scope="module", params=list(KERAS_TUNER_RUNS))
def quick_tune(request, tmp_path_factory):
    tuner = request.param
    flags, _ = KERAS_TUNER_RUNS[tuner]
    return tuner, _run_tune(tmp_path_factory.mktemp(f"tune-{tuner}"), ["--model", "scratch", "--tuner", tuner, *flags])


@pytest.mark.slow
def test_quick_tune_writes_the_reports(quick_tune):
    tuner, out = quick_tune
    _, want_epochs = KERAS_TUNER_RUNS[tuner]
    report = out / "report"
    best = json.loads((report / "best_hyperparameters.json").read_text())
    assert best["tuner"] == tuner and best["trials_run"] == len(want_epochs)
    assert set(best["hyperparameters"]) == set(HP_COLUMNS)  # hyperband's own tuner/* values are left out
    assert 0.0 <= best["val_accuracy"] <= 1.0 and 0.0 <= best["test_accuracy"] <= 1.0
    columns, trials = _read_trials(report)
    assert columns == list(TRIAL_COLUMNS)
    assert len(trials) == len(want_epochs) and {t["status"] for t in trials} == {"COMPLETED"}
    assert [int(t["epochs_run"]) for t in trials] == want_epochs and all(float(t["seconds"]) > 0 for t in trials)
    assert {t["unfreeze"] for t in trials} == {"1.0"}  # a scratch model trains every layer
    assert max(float(t["val_accuracy"]) for t in trials) == pytest.approx(best["val_accuracy"], abs=1e-4)
    hps = [tuple(t[c] for c in HP_COLUMNS) for t in trials]
    assert hps[0] != hps[1]
    if tuner == "hyperband":
        # keras-tuner's own record of each trial: round 0 of bracket 1, trained for 1 of max_epochs 3.
        trial_files = sorted((report / "tuner").glob("trial_*/trial.json"))
        assert len(trial_files) == 2
        for trial_json in trial_files:
            values = json.loads(trial_json.read_text())["hyperparameters"]["values"]
            assert (values["tuner/bracket"], values["tuner/round"], values["tuner/epochs"]) == (1, 0, 1)
    md = (report / "trials.md").read_text()
    assert md.startswith(f"# Keras Tuner: {tuner} search")
    assert "| trial_id |" in md and md.count("| COMPLETED |") == len(want_epochs)
    assert list((report / "tb").rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_quick_tune_exports_the_best_model(quick_tune):
    from skimage import data as skdata

    from serving.session import load_session_model

    tuner, out = quick_tune
    version = _version_dir(out)
    card = json.loads((version / contract.MODEL_CARD_ASSET).read_text())
    best = json.loads((out / "report" / "best_hyperparameters.json").read_text())
    assert card["training"]["hyperparameters"] == best["hyperparameters"]
    assert card["training"]["tuned_with"] == f"keras_tuner {tuner}"
    assert card["metrics"]["test_accuracy"] == pytest.approx(best["test_accuracy"])
    labels = (version / contract.LABELS_ASSET).read_text().split()
    assert len(labels) == 8

    with load_session_model(version) as model:
        out_ = model.run(contract.SIG_DEFAULT, {contract.IN_IMAGE_BYTES: np.array([_jpeg(skdata.chelsea())], object)})
    probs = out_[contract.OUT_PROBABILITIES]
    assert probs.shape == (1, 8) and np.isclose(probs.sum(), 1.0, atol=1e-4)
    assert int(out_[contract.OUT_CLASS_INDEX][0]) == int(probs.argmax())


# --------------------------------------------------------------------------------------------------------------------
# AutoKeras


def test_offline_values_never_ask_for_pretrained_weights():
    from autokeras.tuners.task_specific import IMAGE_CLASSIFIER

    from studies.tuning import offline_autokeras_values

    assert any(v for values in IMAGE_CLASSIFIER for k, v in values.items() if k.endswith("/pretrained"))
    for values in IMAGE_CLASSIFIER:
        offline = offline_autokeras_values(values)
        assert not any(k.endswith("/trainable") for k in offline)
        assert all(v is False for k, v in offline.items() if k.endswith("/pretrained"))
        kept = {k: v for k, v in values.items() if not k.endswith(("/pretrained", "/trainable"))}
        assert {k: v for k, v in offline.items() if not k.endswith("/pretrained")} == kept


def _autokeras_like(num_classes: int, size: int = 16):
    """A model shaped like AutoKeras' exports: a one-element list input, its CastToFloat32 and an adapted
    Normalization, a nested functional backbone (as its ResNet/EfficientNet blocks make), and its head."""
    import autokeras as ak
    import keras

    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (6, size, size, 3)).astype("float32")
    inputs = keras.Input((size, size, 3), dtype="float32")
    x = ak.CastToFloat32()(inputs)
    norm = keras.layers.Normalization()
    norm.adapt(pixels)
    x = norm(x)
    inner = keras.Input((size, size, 3))
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inner)
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(features)
    x = keras.Model(inner, features, name="backbone")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if num_classes == 2:
        x = keras.layers.Activation("sigmoid", name="head")(keras.layers.Dense(1)(x))
    else:
        x = keras.layers.Softmax(name="head")(keras.layers.Dense(num_classes)(x))
    return keras.Model([inputs], x), pixels


def test_contract_model_rewraps_autokeras_graph_and_makes_two_class_probabilities():
    from studies.tuning import autokeras_contract_model
    from training.export import find_gradcam_layer

    original, pixels = _autokeras_like(2)
    model = autokeras_contract_model(original)
    assert len(model.inputs) == 1 and tuple(model.input.shape) == (None, 16, 16, 3)
    assert find_gradcam_layer(model) == "backbone"  # the nested backbone stays a top-level layer
    p = np.asarray(original([pixels]))
    np.testing.assert_allclose(np.asarray(model(pixels)), np.concatenate([1 - p, p], axis=1), atol=1e-6)


def test_contract_model_rejects_what_the_contract_cannot_take():
    import keras

    from studies.tuning import autokeras_contract_model
    from training.export import ExportError

    inputs = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten()(inputs)
    two_heads = keras.Model(inputs, [keras.layers.Dense(2)(flat), keras.layers.Dense(3)(flat)])
    with pytest.raises(ExportError, match="one output"):
        autokeras_contract_model(two_heads)
    ints = keras.Input((8, 8, 3), dtype="int32")
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(keras.layers.Rescaling(1.0)(ints)))
    with pytest.raises(ExportError, match="float32"):
        autokeras_contract_model(keras.Model(ints, out))


def _gradcam(session, encoded: bytes) -> dict:
    feeds = {
        contract.IN_IMAGE_BYTES: np.array([encoded], dtype=object),
        contract.IN_CLASS_INDEX: np.array([-1], np.int32),
    }
    for param in contract.METHOD_PARAMS["gradcam"]:
        feeds[param.name] = np.array([param.default], dtype=param.dtype)
    return session.run(contract.explain_signature("gradcam"), feeds)


def _check_gradcam(got: dict, size: int) -> None:
    heatmap, probs = got[contract.OUT_HEATMAP], got[contract.OUT_PROBABILITIES]
    assert heatmap.shape == (1, size, size) and np.isfinite(heatmap).all()
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    index = int(got[contract.OUT_CLASS_INDEX][0])
    assert index == int(probs.argmax())
    assert got[contract.OUT_SCORE][0] == pytest.approx(probs[0, index], abs=1e-5)


@pytest.mark.slow
def test_nested_autokeras_backbone_exports_with_gradcam(tmp_path):
    from skimage import data as skdata

    from serving.session import load_session_model
    from studies.tuning import autokeras_contract_model
    from training.export import expected_signatures, export_classifier, find_gradcam_layer

    original, pixels = _autokeras_like(3)
    model = autokeras_contract_model(original)
    version = export_classifier(
        model,
        ["a", "b", "c"],
        tmp_path,
        "nested",
        image_size=16,
        preprocessing="autokeras_normalization",
        gradcam_layer=find_gradcam_layer(model),
    )
    with load_session_model(version) as session:
        assert set(session.signature_defs) >= set(expected_signatures(gradcam=True))
        got = session.run(contract.SIG_PIXELS, {contract.IN_IMAGES: pixels})
        np.testing.assert_allclose(got[contract.OUT_PROBABILITIES], np.asarray(original([pixels])), atol=1e-5)
        _check_gradcam(_gradcam(session, _jpeg(skdata.coffee())), 16)


@pytest.fixture(scope="module")
def quick_autokeras(tmp_path_factory):
    # Two trials allowed, but a 1 s time limit: the first trial (AutoKeras' plain CNN) runs, no second one starts.
    argv = ["--tuner", "autokeras", "--max-trials", "2", "--time-limit", "1"]
    return _run_tune(tmp_path_factory.mktemp("tune-autokeras"), argv)


@pytest.mark.slow
def test_quick_autokeras_writes_the_reports(quick_autokeras):
    report = quick_autokeras / "report"
    best = json.loads((report / "best_hyperparameters.json").read_text())
    assert best["tuner"] == "autokeras" and best["model"] == "autokeras"
    assert best["tuned_with"].startswith("AutoKeras 3.") and best["time_limit"] == 1.0 and best["trials_run"] == 1
    assert best["hyperparameters"]["image_block_1/block_type"] == "vanilla"
    assert not any(v for k, v in best["hyperparameters"].items() if k.endswith("/pretrained"))
    columns, trials = _read_trials(report)
    assert columns == list(AUTOKERAS_TRIAL_COLUMNS)
    assert len(trials) == 1  # the time limit stopped the search before the second trial
    (trial,) = trials
    assert trial["status"] == "COMPLETED" and trial["block_type"] == "vanilla" and trial["optimizer"] == "adam"
    assert int(trial["epochs_run"]) == 1 and int(trial["best_epoch"]) == 1 and float(trial["seconds"]) > 0
    assert float(trial["val_accuracy"]) == pytest.approx(best["val_accuracy"], abs=1e-4)
    assert float(trial["lr"]) == pytest.approx(best["hyperparameters"]["learning_rate"])
    md = (report / "trials.md").read_text()
    assert md.startswith("# AutoKeras: architecture search") and "time limit 1 s" in md
    assert md.count("| COMPLETED |") == 1 and "| vanilla |" in md
    assert list((report / "tb").rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_quick_autokeras_exports_a_contract_model_with_gradcam(quick_autokeras):
    from skimage import data as skdata

    from serving.session import load_session_model
    from training.export import expected_signatures

    version = _version_dir(quick_autokeras)
    card = json.loads((version / contract.MODEL_CARD_ASSET).read_text())
    best = json.loads((quick_autokeras / "report" / "best_hyperparameters.json").read_text())
    assert card["training"]["hyperparameters"] == best["hyperparameters"]
    assert card["training"]["tuned_with"] == best["tuned_with"]
    assert card["metrics"]["test_accuracy"] == pytest.approx(best["test_accuracy"])
    assert card["input"]["preprocessing"] == "autokeras_normalization"
    assert card["gradcam_layer"]  # found automatically among AutoKeras' layers
    assert len((version / contract.LABELS_ASSET).read_text().split()) == 8

    with load_session_model(version) as session:
        assert set(session.signature_defs) >= set(expected_signatures(gradcam=True))
        encoded = _jpeg(skdata.chelsea())
        out = session.run(contract.SIG_DEFAULT, {contract.IN_IMAGE_BYTES: np.array([encoded], dtype=object)})
        probs = out[contract.OUT_PROBABILITIES]
        assert probs.shape == (1, 8) and np.isclose(probs.sum(), 1.0, atol=1e-4)
        got = _gradcam(session, encoded)
        np.testing.assert_allclose(got[contract.OUT_PROBABILITIES], probs, atol=1e-5)
        _check_gradcam(got, 32)
