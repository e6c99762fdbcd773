"""`glimpse study`: variant parsing, result tables and plots, and every study end to end in --quick mode."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from glimpse.cli import main as glimpse_main
from studies.chapter import (
    ASPECT_BINS,
    RESULT_COLUMNS,
    STUDIES,
    AspectOutcomes,
    RunResult,
    StudyConfig,
    StudyError,
    StudyResult,
    aspect_bin_of,
    normalized,
    quick_params,
    write_results,
)
from training.fit import TrainConfig

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REQUIRED = {
    "study",
    "variant",
    "val_accuracy",
    "test_accuracy",
    "best_epoch",
    "epochs_run",
    "seconds_per_epoch",
    "normalized_accuracy",
}


@pytest.fixture(autouse=True)
def _keep_argv(monkeypatch):
    """glimpse.cli.main(argv) rewrites sys.argv; give it back after each test."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------------------------
# Unit tests (no training)


def test_the_issue_studies_are_all_registered():
    assert set(STUDIES) == {
        "transfer-vs-scratch",
        "unfreeze",
        "data-per-class",
        "learning-rate",
        "optimizer",
        "batch-size",
        "image-size",
        "aspect-ratio",
    }
    assert STUDIES["learning-rate"].values == ("0.1", "0.01", "0.001", "0.0001")
    assert set(STUDIES["optimizer"].values) == {"adadelta", "adagrad", "adam", "sgd", "momentum", "rmsprop"}
    for spec in STUDIES.values():
        assert len(spec.quick_values) >= 2


def test_variants_override_one_setting():
    base = TrainConfig()
    (v01, v001) = STUDIES["learning-rate"].variants(names=["0.1", "0.001"])
    assert v01.apply(base).lr == pytest.approx(0.1) and v001.apply(base).lr == pytest.approx(0.001)
    assert v01.apply(base).optimizer == base.optimizer
    assert v01.apply(base) == replace(base, lr=0.1)  # a variant is a dataclasses.replace of the base TrainConfig
    all_data, three = (STUDIES["data-per-class"].to_variant(v) for v in ("all", "3"))
    assert (all_data.per_class, three.per_class) == (None, 3)
    assert all_data.apply(base) == three.apply(base) == base  # data-per-class varies the data, not the run
    scratch = STUDIES["transfer-vs-scratch"].to_variant("scratch").apply(base)
    assert (scratch.model, scratch.weights, scratch.unfreeze) == ("scratch", "none", 1.0)
    assert STUDIES["unfreeze"].to_variant("0.25").apply(base).unfreeze == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("study", "names", "message"),
    [
        ("learning-rate", ["fast"], "must be a float"),
        ("learning-rate", ["-1"], "must be"),
        ("batch-size", ["0"], "must be >= 1"),
        ("unfreeze", ["1.5"], "[0.0, 1.0]"),
        ("optimizer", ["lion"], "expected one of"),
        ("data-per-class", ["0"], ">= 1"),
        ("transfer-vs-scratch", ["frozen"], "expected one of"),
        ("aspect-ratio", ["squash"], "expected one of"),
        ("learning-rate", ["0.1", "0.1"], "duplicate"),
    ],
)
def test_bad_variants_are_clear_errors(study, names, message):
    with pytest.raises(StudyError) as info:
        STUDIES[study].variants(names=names)
    assert message in str(info.value)


def test_config_rejects_unsuited_models_and_values(tmp_path):
    with pytest.raises(StudyError, match="pretrained"):
        StudyConfig("unfreeze", TrainConfig(model="scratch"), tmp_path)
    with pytest.raises(StudyError, match="pretrained weights"):
        StudyConfig("transfer-vs-scratch", TrainConfig(weights="none"), tmp_path)
    with pytest.raises(StudyError, match="unknown study"):
        StudyConfig("colour", TrainConfig(), tmp_path)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="unfreeze"):
        TrainConfig(unfreeze=2.0)
    with pytest.raises(StudyError, match="aspect-ratio only"):
        StudyConfig("batch-size", TrainConfig(model="scratch"), tmp_path, seeds=(1, 2))
    with pytest.raises(StudyError, match="distinct"):
        StudyConfig("aspect-ratio", TrainConfig(model="scratch"), tmp_path, seeds=(1, 1))
    # A scratch model is fine for studies that do not need a pretrained backbone.
    assert StudyConfig("batch-size", TrainConfig(model="scratch"), tmp_path).spec.name == "batch-size"


def test_quick_params_are_tiny_but_explicit_values_win():
    q = quick_params(TrainConfig())
    assert (q.image_size, q.epochs, q.max_examples) == (32, 1, 48)
    q = quick_params(TrainConfig(), image_size=64, epochs=2, max_examples=20)
    assert (q.image_size, q.epochs, q.max_examples) == (64, 2, 20)


def test_normalized_divides_by_the_best():
    assert normalized([0.5, 0.25, 0.4]) == pytest.approx([1.0, 0.5, 0.8])
    assert normalized([0.0, 0.0]) == [0.0, 0.0]


def test_aspect_bins_cover_all_ratios():
    assert ASPECT_BINS[0].low == 0.0 and math.isinf(ASPECT_BINS[-1].high)
    for a, b in zip(ASPECT_BINS, ASPECT_BINS[1:], strict=False):
        assert a.high == b.low
    assert aspect_bin_of(1.0).label.startswith("square")
    assert aspect_bin_of(0.5) is ASPECT_BINS[0]
    assert aspect_bin_of(3.97) is ASPECT_BINS[-1]
    assert aspect_bin_of(1.11) is not aspect_bin_of(1.1)


def test_aspect_outcomes_pool_and_bin():
    a = AspectOutcomes(np.array([0.5, 1.0, 1.0]), {"pad": np.array([True, False, True])})
    b = AspectOutcomes(np.array([3.0]), {"pad": np.array([True])})
    both = a.pooled(b)
    assert both.overall() == {"pad": pytest.approx(0.75)}
    rows = {r["bin"]: r for r in both.rows()}
    assert (rows["tall <0.75"]["count"], rows["tall <0.75"]["accuracy"]) == (1, 1.0)
    assert (rows["square 0.9-1.11"]["count"], rows["square 0.9-1.11"]["correct"]) == (2, 1)
    assert rows["wide >=2"]["count"] == 1
    assert rows["0.75-0.9"]["count"] == 0 and math.isnan(rows["0.75-0.9"]["accuracy"])


def _run(variant: str, val: list[float], test: float, seconds: list[float]) -> RunResult:
    return RunResult(
        variant=variant,
        params=TrainConfig(lr=float(variant)),
        history={"val_accuracy": val, "accuracy": val},
        val_accuracy=max(val),
        test_accuracy=test,
        epoch_seconds=tuple(seconds),
        wall_seconds=sum(seconds) + 1.0,
        train_examples=100,
    )


def test_run_result_reports_epochs_to_converge_and_speed():
    run = _run("0.01", [0.2, 0.6, 0.6, 0.5], 0.55, [5.0, 1.0, 2.0, 3.0])
    assert (run.best_epoch, run.epochs_run) == (2, 4)  # the first epoch reaching the best value
    assert run.seconds_per_epoch == pytest.approx(2.0)  # the first epoch (tracing) is left out
    assert _run("0.1", [0.3], 0.3, [4.0]).seconds_per_epoch == pytest.approx(4.0)


def test_write_results_tables_and_plots(tmp_path):
    config = StudyConfig("learning-rate", TrainConfig(), tmp_path, variants=("0.1", "0.01"))
    runs = (_run("0.1", [0.1, 0.2], 0.25, [2.0, 1.0]), _run("0.01", [0.5, 0.8, 0.7], 0.75, [2.0, 1.5, 1.5]))
    files = write_results(StudyResult(config, runs, wall_seconds=9.0))
    rows = _read_csv(tmp_path / "results.csv")
    assert list(rows[0]) == list(RESULT_COLUMNS)
    assert [r["variant"] for r in rows] == ["0.1", "0.01"]
    assert [float(r["normalized_accuracy"]) for r in rows] == pytest.approx([1 / 3, 1.0], abs=1e-4)
    assert [int(r["best_epoch"]) for r in rows] == [2, 2]
    md = (tmp_path / "results.md").read_text()
    assert "| 0.01 | 1.000 | 0.750 | 0.800 | 2 | 3 | 1.50 |" in md
    for name in ("val_accuracy.png", "normalized_accuracy.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
        assert f"![{name}]({name})" in md
    assert json.loads((tmp_path / "history.json").read_text())["0.01"]["history"]["val_accuracy"] == [0.5, 0.8, 0.7]
    assert all(f.exists() for f in files)


def test_command_modules_configure_without_tensorflow():
    code = (
        "import argparse, sys\n"
        "from studies.chapter import configure_study\n"
        "from studies.tuning import configure_tune\n"
        "configure_study(argparse.ArgumentParser()); configure_tune(argparse.ArgumentParser())\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'keras_tuner', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_cli_bad_variant_exits_2_with_one_line(tmp_path, capsys):
    rc = glimpse_main(["study", "learning-rate", "--variants", "0.1,fast", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("glimpse study:") and "fast" in err and "\n" not in err
    assert not (tmp_path / "results.csv").exists()


def test_cli_unsuited_model_exits_2(tmp_path, capsys):
    rc = glimpse_main(["study", "unfreeze", "--model", "scratch", "--quick", "--out", str(tmp_path)])
    assert rc == 2
    assert "pretrained" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------------
# Every study, end to end through the CLI, in --quick mode (tuxpaint, 32 px, 1 epoch, 48 examples per split)

PRETRAINED_STUDIES = {name for name, spec in STUDIES.items() if spec.needs_pretrained}


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    """Runs a study once per module and caches its output directory."""
    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in done:
            out = tmp_path_factory.mktemp(name)
            model = "efficientnet_lite0" if name in PRETRAINED_STUDIES else "scratch"
            argv = ["study", name, "--dataset", "tuxpaint", "--model", model, "--quick", "--seed", "7"]
            argv += ["--no-determinism", "--verbose", "0", "--out", str(out)]
            if name == "aspect-ratio":
                argv += ["--seeds", "7,8"]  # two seeded splits, one model each, test images pooled
            saved = list(sys.argv)
            try:
                assert glimpse_main(argv) == 0
            finally:
                sys.argv = saved
            done[name] = out
        return done[name]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STUDIES))
def test_quick_study_outputs(name, quick_study):
    out = quick_study(name)
    spec = STUDIES[name]
    rows = _read_csv(out / "results.csv")
    assert REQUIRED <= set(rows[0])
    assert [r["variant"] for r in rows] == list(spec.quick_values)
    assert all(r["study"] == name for r in rows)
    for r in rows:
        for col in ("val_accuracy", "test_accuracy", "normalized_accuracy"):
            assert 0.0 <= float(r[col]) <= 1.0, (col, r[col])
        assert 1 <= int(r["best_epoch"]) <= int(r["epochs_run"]) == 1
        assert float(r["seconds_per_epoch"]) > 0
    tests = [float(r["test_accuracy"]) for r in rows]
    if max(tests) > 0:
        assert max(float(r["normalized_accuracy"]) for r in rows) == pytest.approx(1.0)
    for png in ("val_accuracy.png", "normalized_accuracy.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    md = (out / "results.md").read_text()
    assert spec.title in md and "| variant | normalised accuracy |" in md
    assert list((out / "tb").rglob("events.out.tfevents.*")), "no TensorBoard log"


@pytest.mark.slow
def test_quick_study_varies_only_its_setting(quick_study):
    rows = {r["variant"]: r for r in _read_csv(quick_study("batch-size") / "results.csv")}
    assert (rows["8"]["batch_size"], rows["32"]["batch_size"]) == ("8", "32")
    assert rows["8"]["lr"] == rows["32"]["lr"] and rows["8"]["train_examples"] == rows["32"]["train_examples"]
    sizes = {r["variant"]: r["image_size"] for r in _read_csv(quick_study("image-size") / "results.csv")}
    assert sizes == {"32": "32", "48": "48"}
    transfer = {r["variant"]: r for r in _read_csv(quick_study("transfer-vs-scratch") / "results.csv")}
    assert (transfer["pretrained"]["model"], transfer["pretrained"]["weights"]) == ("efficientnet_lite0", "imagenet")
    assert transfer["scratch"]["model"] == "scratch"


@pytest.mark.slow
def test_quick_data_per_class_uses_nested_subsets(quick_study):
    rows = _read_csv(quick_study("data-per-class") / "results.csv")
    one, three = (int(r["train_examples"]) for r in rows)
    assert 1 <= one <= 8  # at most one image of each of the 8 classes
    assert one < three <= 24


@pytest.mark.slow
def test_quick_aspect_ratio_bins(quick_study):
    out = quick_study("aspect-ratio")
    bins = _read_csv(out / "aspect_ratio.csv")
    assert {r["mode"] for r in bins} == {"pad", "stretch", "crop"}
    per_mode = {m: sum(int(r["count"]) for r in bins if r["mode"] == m) for m in ("pad", "stretch", "crop")}
    assert len(set(per_mode.values())) == 1 and per_mode["pad"] > 0  # every test image, once per mode
    for r in bins:
        if int(r["count"]):
            assert float(r["accuracy"]) == pytest.approx(int(r["correct"]) / int(r["count"]))
    assert (out / "accuracy_by_aspect_ratio.png").read_bytes()[:8] == PNG_MAGIC
    assert set(json.loads((out / "history.json").read_text())) == {"seed 7", "seed 8"}
    assert list((out / "tb" / "seed-8").glob("events.out.tfevents.*"))
    rows = _read_csv(out / "results.csv")
    overall = {r["variant"]: float(r["test_accuracy"]) for r in rows}
    for mode in overall:
        correct = sum(int(r["correct"]) for r in bins if r["mode"] == mode)
        assert overall[mode] == pytest.approx(correct / per_mode[mode], abs=1e-4)


@pytest.mark.slow
def test_quick_study_logs_hparams(quick_study):
    import tensorflow as tf

    out = quick_study("learning-rate")
    plugins = set()
    for event_file in (out / "tb" / "0.01").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                plugins.add(value.metadata.plugin_data.plugin_name)
    assert "hparams" in plugins
    assert list((out / "tb" / "0.01" / "validation").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_train_indices_are_seeded_nested_and_capped():
    from studies.chapter import prepare_data

    data = prepare_data("tuxpaint", image_size=32, seed=3, max_examples=None)
    counts = np.bincount(data.y_train, minlength=data.num_classes)
    small = data.train_indices(2, seed=5)
    large = data.train_indices(5, seed=5)
    assert set(small) <= set(large)
    assert np.array_equal(np.bincount(data.y_train[large], minlength=data.num_classes), np.minimum(counts, 5))
    assert np.array_equal(data.train_indices(5, seed=5), large)
    assert len(data.train_indices(None, seed=5)) == len(data.y_train)
