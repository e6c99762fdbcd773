"""`glimpse tune`: configuration, the search space, and a 2-trial search that exports the best model."""

from __future__ import annotations

import csv
import io
import json
import sys

import numpy as np
import pytest

from glimpse.cli import main as glimpse_main
from glimpse_wire import contract
from training.studies import StudyError
from training.tuning import TRIAL_COLUMNS, TUNERS, TuneConfig


@pytest.fixture(autouse=True)
def _keep_argv(monkeypatch):
    """glimpse.cli.main(argv) rewrites sys.argv; give it back after each test."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))


def test_tuners_offered():
    assert TUNERS == ("random", "hyperband", "bayesian")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tuner": "autokeras"}, "unknown tuner"),
        ({"max_trials": 0}, "max_trials"),
        ({"tuner": "hyperband", "epochs": 1}, "hyperband"),
        ({"name": "../x"}, "--name"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, kwargs, message):
    with pytest.raises(StudyError) as info:
        TuneConfig(out=tmp_path, **kwargs)
    assert message in str(info.value)


def test_search_space_has_the_chapter_hyperparameters():
    import keras_tuner as kt

    from training.tuning import define_search_space

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
    with pytest.raises(SystemExit):
        glimpse_main(["tune", "--tuner", "autokeras", "--out", str(tmp_path)])


@pytest.fixture(scope="module")
def quick_tune(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune")
    saved = list(sys.argv)
    argv = ["tune", "--dataset", "tuxpaint", "--model", "scratch", "--tuner", "random", "--max-trials", "2"]
    argv += ["--quick", "--seed", "3", "--no-determinism", "--verbose", "0"]
    argv += ["--out", str(out / "report"), "--export-dir", str(out / "models"), "--name", "tux"]
    try:
        assert glimpse_main(argv) == 0
    finally:
        sys.argv = saved
    return out


@pytest.mark.slow
def test_quick_tune_writes_the_reports(quick_tune):
    report = quick_tune / "report"
    best = json.loads((report / "best_hyperparameters.json").read_text())
    assert set(best["hyperparameters"]) == {"lr", "optimizer", "dropout", "dense_units", "augment"}
    assert 0.0 <= best["val_accuracy"] <= 1.0 and 0.0 <= best["test_accuracy"] <= 1.0
    with (report / "trials.csv").open(newline="") as f:
        trials = list(csv.DictReader(f))
    assert list(trials[0]) == list(TRIAL_COLUMNS)
    assert len(trials) == 2 and {t["status"] for t in trials} == {"COMPLETED"}
    assert [int(t["epochs_run"]) for t in trials] == [1, 1] and all(float(t["seconds"]) > 0 for t in trials)
    assert max(float(t["val_accuracy"]) for t in trials) == pytest.approx(best["val_accuracy"], abs=1e-4)
    md = (report / "trials.md").read_text()
    assert "| trial_id |" in md and md.count("| COMPLETED |") == 2
    assert list((report / "tb").rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_quick_tune_exports_the_best_model(quick_tune):
    from PIL import Image
    from skimage import data as skdata

    from serving.session import load_session_model

    versions = sorted((quick_tune / "models" / "tux").iterdir())
    version = next(v for v in versions if v.name.isdigit())
    assert version.name == "1" and (version / "saved_model.pb").exists()
    card = json.loads((version / contract.MODEL_CARD_ASSET).read_text())
    best = json.loads((quick_tune / "report" / "best_hyperparameters.json").read_text())
    assert card["training"]["hyperparameters"] == best["hyperparameters"]
    assert card["metrics"]["test_accuracy"] == pytest.approx(best["test_accuracy"])
    labels = (version / contract.LABELS_ASSET).read_text().split()
    assert len(labels) == 8

    buf = io.BytesIO()
    Image.fromarray(skdata.chelsea()).save(buf, format="JPEG")
    with load_session_model(version) as model:
        out = model.run(contract.SIG_DEFAULT, {contract.IN_IMAGE_BYTES: np.array([buf.getvalue()], dtype=object)})
    probs = out[contract.OUT_PROBABILITIES]
    assert probs.shape == (1, 8) and np.isclose(probs.sum(), 1.0, atol=1e-4)
    assert int(out[contract.OUT_CLASS_INDEX][0]) == int(probs.argmax())
