"""Training runs: seeded reproducibility, logs, and the end-to-end train + export through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.train import TrainConfig, train


def _tiny(tmp_path, **kw):
    base = dict(model="scratch", image_size=32, epochs=2, max_examples=40, batch_size=16, seed=7,
                logdir=str(tmp_path / "runs"), export_dir=str(tmp_path / "models"))
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_same_seed_same_weights_and_metrics(tmp_path):
    a = train(_tiny(tmp_path), export=False, verbose=0)
    b = train(_tiny(tmp_path), export=False, verbose=0)
    assert a.metrics["test_accuracy"] == b.metrics["test_accuracy"]
    assert a.history == b.history
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    c = train(_tiny(tmp_path, seed=8), export=False, verbose=0)
    assert any(not np.array_equal(x, y) for x, y in zip(a.model.get_weights(), c.model.get_weights(), strict=True))


@pytest.mark.slow
def test_refit_trains_on_train_and_val_for_the_best_epoch_count(tmp_path):
    from training.data import load_dataset

    splits = load_dataset("tuxpaint", image_size=32, seed=7, max_examples=40, batch_size=16)
    merged = sum(int(y.shape[0]) for _, y in splits.train_and_val())
    assert merged == splits.num_train + splits.num_val == 72  # 40 training photos + the 32 validation photos
    plain = train(_tiny(tmp_path, epochs=3), export=False, verbose=0)
    refit = train(_tiny(tmp_path, epochs=3, refit=True), verbose=0)
    m = refit.metrics
    assert m["refit_epochs"] == m["best_epoch"] == plain.metrics["best_epoch"] and m["refit_examples"] == 72
    # the early-stopped run is the same; only the refit model (trained on more examples) differs
    assert m["val_accuracy"] == plain.metrics["val_accuracy"] and refit.history == plain.history
    assert any(not np.array_equal(x, y)
               for x, y in zip(plain.model.get_weights(), refit.model.get_weights(), strict=True))
    card = json.loads((refit.version_dir / "assets.extra" / "model_card.json").read_text())
    assert card["metrics"]["refit_epochs"] == m["refit_epochs"] and card["training"]["refit"] is True
    assert card["metrics"]["test_accuracy"] == pytest.approx(m["test_accuracy"])


@pytest.mark.slow
def test_ema_validates_and_keeps_the_averaged_weights(tmp_path):
    from training.train import make_optimizer

    assert make_optimizer("adam", 1e-3, 0.9).use_ema and not make_optimizer("adam", 1e-3).use_ema
    plain = train(_tiny(tmp_path, epochs=3), export=False, verbose=0)
    r = train(_tiny(tmp_path, epochs=3, ema=0.9), export=False, verbose=0)
    # validation during fit saw the averaged weights, and the kept (best-epoch) model is that averaged model
    best = r.metrics["best_epoch"] - 1
    assert r.metrics["val_accuracy"] == pytest.approx(r.history["val_accuracy"][best], abs=1e-6)
    assert r.metrics["val_loss"] == pytest.approx(r.history["val_loss"][best], rel=1e-4)
    assert r.history["val_accuracy"] != plain.history["val_accuracy"] or r.history["val_loss"] != plain.history[
        "val_loss"]
    with pytest.raises(ValueError, match="--ema"):
        _tiny(tmp_path, ema=1.0)


def test_label_smoothed_loss_is_cross_entropy_against_smoothed_targets():
    from training.fit import classification_loss

    assert classification_loss(0.0) == "sparse_categorical_crossentropy"
    probs = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9], [0.3, 0.4, 0.3]], np.float32)
    labels = np.array([0, 1, 2], np.int32)
    s, classes = 0.1, 3
    targets = np.full((3, classes), s / classes)
    targets[np.arange(3), labels] += 1 - s
    expected = -(targets * np.log(probs)).sum(axis=1)
    loss = classification_loss(s)
    np.testing.assert_allclose(np.asarray(loss(labels, probs)), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(loss(labels[:, None], probs)), expected, rtol=1e-5)  # (batch, 1) labels
    with pytest.raises(ValueError, match="--label-smoothing"):
        TrainConfig(label_smoothing=1.0)
    with pytest.raises(ValueError, match="--early-stopping"):
        TrainConfig(early_stopping="auc")


def test_the_best_epoch_follows_the_metric_early_stopping_watched():
    from training.fit import FitResult

    history = {"loss": [1.0, 0.8, 0.7, 0.6], "val_accuracy": [0.5, 0.75, 0.75, 0.7],
               "val_loss": [1.2, 0.9, 0.8, 0.85]}
    by_accuracy = FitResult(None, None, history, [], 0.0)
    by_loss = FitResult(None, None, history, [], 0.0, early_stopping="loss")
    assert (by_accuracy.best_epoch, by_accuracy.best_val_accuracy) == (2, 0.75)  # the first of the tied epochs
    assert (by_loss.best_epoch, by_loss.best_val_accuracy) == (3, 0.75)


@pytest.mark.slow
def test_early_stopping_on_the_loss_keeps_the_lowest_validation_loss(tmp_path):
    r = train(_tiny(tmp_path, epochs=4, patience=3, early_stopping="loss", label_smoothing=0.1), export=False,
              verbose=0)
    val_loss = r.history["val_loss"]
    best = int(np.argmin(val_loss))
    assert r.metrics["best_epoch"] == best + 1
    # the kept model is the one of that epoch, evaluated again after the fit
    assert r.metrics["val_loss"] == pytest.approx(val_loss[best], rel=1e-4)
    assert r.metrics["val_accuracy"] == pytest.approx(r.history["val_accuracy"][best], abs=1e-6)
    # the run trained on the label-smoothed loss
    assert getattr(r.model.loss, "__name__", None) == "smoothed_sparse_crossentropy"


@pytest.mark.slow
def test_a_run_leaves_the_op_determinism_setting_as_it_found_it(tmp_path):
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    train(_tiny(tmp_path, epochs=1, max_examples=16), export=False, verbose=0)
    assert tf_config.is_op_determinism_enabled() == before


@pytest.mark.slow
def test_pipeline_benchmark_times_real_and_synthetic_steps():
    from training.train import pipeline_benchmark

    r = pipeline_benchmark("tuxpaint", "scratch", image_size=32, steps=3, batch_size=16, rounds=2, max_examples=40)
    assert r["real_step_s"] > 0 and r["synthetic_step_s"] > 0 and r["rounds"] == 2
    assert r["ratio"] == pytest.approx(r["real_step_s"] / r["synthetic_step_s"])


@pytest.mark.slow
def test_recipe_epoch_benchmark_times_the_recipe_under_each_variant():
    """The Fashion-MNIST recipe's epoch (211 steps of 256 over the 54000 training images), float32, XLA and bf16."""
    from training.recipes import DATASET_RECIPES
    from training.train import recipe_epoch_benchmark

    r = recipe_epoch_benchmark("fashion_mnist", steps=2, rounds=1, max_examples=512)
    recipe = DATASET_RECIPES["fashion_mnist"]
    assert (r["model"], r["batch_size"], r["augment"], r["image_size"]) == (
        recipe["model"], recipe["batch_size"], recipe["augment"], 28)
    assert r["epoch_steps"] == 211 and r["epochs"] == recipe["epochs"]
    assert all(r[f"{v}_epoch_s"] > 0 for v in ("float32", "xla", "bf16"))
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # the bf16 variant leaves the policy as it was


@pytest.mark.slow
def test_run_logs_tensorboard_scalars_histograms_images_and_hparams(tmp_path):
    r = train(_tiny(tmp_path, epochs=1, lr_schedule="cosine"), export=False, verbose=0)
    assert float(r.model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-7)  # cosine decayed over the run
    files = [p.relative_to(r.run_dir).as_posix() for p in r.run_dir.rglob("events.out.tfevents.*")]
    assert any(f.startswith("train/") for f in files) and any(f.startswith("validation/") for f in files)
    assert any(f.startswith("samples/") for f in files)
    import tensorflow as tf

    tags = set()
    for path in r.run_dir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                tags.add(v.tag)
    assert "_hparams_/session_start_info" in tags and "hparams/test_accuracy" in tags
    assert set(r.metrics) >= {"test_accuracy", "val_accuracy", "epochs_run", "best_epoch"}
    assert 0.0 <= r.metrics["test_accuracy"] <= 1.0 and len(r.epoch_seconds) == 1


@pytest.mark.slow
def test_cli_trains_and_exports_a_version_with_card_and_examples(tmp_path, capsys):
    from glimpse.cli import main

    rc = main(["train", "--dataset", "tuxpaint", "--model", "scratch", "--image-size", "32", "--epochs", "1",
               "--max-examples", "24", "--logdir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "m"),
               "--name", "tux", "--metrics-out", str(tmp_path / "out" / "metrics.json")])
    assert rc == 0
    assert "test_accuracy=" in capsys.readouterr().out
    version = tmp_path / "m" / "tux" / "1"
    card = json.loads((version / "assets.extra" / "model_card.json").read_text())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {"test_accuracy", "val_accuracy", "wall_s", "epochs_run"} <= set(metrics)
    assert metrics["test_accuracy"] == pytest.approx(card["metrics"]["test_accuracy"])
    assert metrics["epochs_run"] == 1 and metrics["wall_s"] > 0 and not any(k.startswith("cv_") for k in metrics)
    assert card["labels"] == (version / "assets" / "labels.txt").read_text().split("\n")[:-1]
    assert 0.0 <= card["metrics"]["test_accuracy"] <= 1.0
    assert card["training"]["seed"] == 42 and card["training"]["model"] == "scratch"
    assert (tmp_path / "m" / "tux" / "examples" / "test.tfrecord").stat().st_size > 0


def test_cli_reports_bad_input_as_an_error_not_a_traceback(capsys, tmp_path):
    from glimpse.cli import main

    rc = main(["train", "--dataset", "nope", "--logdir", str(tmp_path), "--export-dir", str(tmp_path)])
    assert rc == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="unfreeze"):
        TrainConfig(unfreeze=1.5)
    with pytest.raises(ValueError, match="efficientnet_lite0, efficientnet_lite2, mobilenet_v2"):
        TrainConfig(model="vgg")
    with pytest.raises(ValueError, match="basic, randaugment, none"):
        TrainConfig(augment="mixup")
    with pytest.raises(ValueError, match="constant, cosine"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="--cv must be at least 2"):
        TrainConfig(cv=1)
    with pytest.raises(ValueError, match="--cv-repeats needs --cv"):
        TrainConfig(cv_repeats=3)
    with pytest.raises(ValueError, match="drop --refit"):
        TrainConfig(cv=5, refit=True)
    with pytest.raises(ValueError, match="none, mirrored, multiworker"):
        TrainConfig(distribute="horovod")
    with pytest.raises(ValueError, match="drop --cv"):
        TrainConfig(distribute="multiworker", cv=3)
    assert TrainConfig(dataset="folder:/data/My Photos").model_name == "My_Photos"


def test_cli_choices_match_the_library():
    # the CLI keeps its own copies so that parsing flags imports nothing heavy; they must not drift
    from training import cli
    from training.data import AUGMENTATIONS
    from training.models import MODELS
    from training.train import OPTIMIZERS

    assert set(cli._AUGMENTATIONS) == set(AUGMENTATIONS)
    assert set(cli._MODELS) == set(MODELS)
    assert set(cli._OPTIMIZERS) == set(OPTIMIZERS)
    from training.distribute import DISTRIBUTE_MODES

    assert cli._DISTRIBUTE == DISTRIBUTE_MODES
    from training.fit import EARLY_STOPPING

    assert cli._EARLY_STOPPING == EARLY_STOPPING


def test_train_flags_parse_without_tensorflow():
    import subprocess
    import sys

    code = ("import argparse, sys; from training.cli import configure_train; p = argparse.ArgumentParser(); "
            "configure_train(p); a = p.parse_args(['--cv', '5', '--cv-repeats', '2', '--metrics-out', 'm.json', "
            "'--distribute', 'multiworker']); assert (a.cv, a.cv_repeats, a.metrics_out, a.distribute) == "
            "(5, 2, 'm.json', 'multiworker'); assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
