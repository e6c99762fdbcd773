"""Seeded, logged training runs that end in an exported, explainable model.

``train(TrainConfig(...))`` loads the data, builds the model, fits it with early stopping and TensorBoard logging
(scalars, weight histograms, sample images, the HParams record), evaluates on the held-out split and exports the
model through the model contract.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.data import load_dataset
from training.export import export_classifier
from training.fit import (
    LR_SCHEDULES,
    OPTIMIZERS,
    FitData,
    TrainConfig,
    build_classifier,
    default_image_size,
    epoch_timer,
    fit,
    hparams_of,
    make_optimizer,
    seed_everything,
    seeded,
    write_hparams,
)
from training.models import build_model

__all__ = [
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "TrainConfig",
    "TrainResult",
    "default_image_size",
    "epoch_timer",
    "make_optimizer",
    "pipeline_benchmark",
    "run_pipeline_benchmarks",
    "seed_everything",
    "train",
]


@dataclasses.dataclass
class TrainResult:
    model: Any
    history: dict[str, list[float]]
    metrics: dict[str, float]
    wall_s: float
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    version_dir: Path | None = None
    run_dir: Path | None = None
    class_names: tuple[str, ...] = ()


def _unique_run_dir(logdir: str, stem: str) -> Path:
    """``logdir/stem-<timestamp>``, with a counter when two runs start within the same second."""
    base = Path(logdir) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    return run_dir


def _log_run_start(run_dir: Path, splits: Any, config: TrainConfig) -> None:
    import tensorflow as tf

    with tf.summary.create_file_writer(str(run_dir / "samples")).as_default():
        for images, _ in splits.train.take(1):
            tf.summary.image("train_samples", images[:8] / 255.0, max_outputs=8, step=0)
        tf.summary.text("config", json.dumps(dataclasses.asdict(config), indent=1), step=0)


def train(config: TrainConfig, *, export: bool = True, callbacks: Sequence[Any] = (), verbose: int | str = "auto"
          ) -> TrainResult:
    """Train, evaluate on the test split, and (``export=True``) export the next version of the model.

    The run is seeded with ``config.seed`` and TF op determinism is on while it runs: two runs with the same config
    and data give identical weights and metrics. ``callbacks`` are added to Keras' fit; ``verbose`` is fit's.
    """
    t_start = time.perf_counter()
    with seeded(config.seed):
        return _train(config, export=export, callbacks=callbacks, verbose=verbose, t_start=t_start)


def _train(config: TrainConfig, *, export: bool, callbacks: Sequence[Any], verbose: int | str, t_start: float
           ) -> TrainResult:
    splits = load_dataset(config.dataset, image_size=config.size, seed=config.seed, max_examples=config.max_examples,
                          batch_size=config.batch_size, augment=config.augment)
    channels = splits.channels  # grey stays grey: pretrained models repeat it to RGB inside
    num_classes = len(splits.class_names)
    model, info = build_classifier(config, num_classes, channels)
    run_dir = _unique_run_dir(config.logdir, f"{config.model_name}-{config.model}")
    _log_run_start(run_dir, splits, config)
    run_callbacks = list(callbacks)
    if config.explain_every:
        from training.callbacks import ExplainCallbackConfig, explanation_callbacks  # TF and tf-explain at import

        run_callbacks += explanation_callbacks(
            model, gradcam_layer=info.gradcam_layer, validation=splits.val, class_names=splits.class_names,
            log_dir=run_dir / "explain",
            config=ExplainCallbackConfig(every=config.explain_every, num_images=config.explain_images))
    fitted = fit(config, FitData(splits.train, num_classes, channels, splits.num_train, val=splits.val), model=model,
                 callbacks=run_callbacks, log_dir=run_dir, histograms=True, verbose=verbose)
    model, hist = fitted.model, fitted.history
    val_loss, val_acc = model.evaluate(splits.val, verbose=0)
    best_epoch = fitted.best_epoch
    refit: dict[str, int] = {}
    if config.refit:
        # The validation split has chosen the epoch count; now it becomes training data too. Same seed, same
        # initialisation and the same learning-rate path per epoch, on train+val for best_epoch epochs. The
        # reported validation accuracy stays the early-stopped run's: the refit model has seen those examples.
        examples = splits.num_train + splits.num_val
        model = fit(config, FitData(splits.train_and_val(), num_classes, channels, examples), epochs=best_epoch,
                    log_dir=run_dir / "refit", verbose=verbose).model
        refit = {"refit_epochs": best_epoch, "refit_examples": examples}
    test_loss, test_acc = model.evaluate(splits.test, verbose=0)
    wall = time.perf_counter() - t_start
    metrics = {
        "test_accuracy": float(test_acc), "test_loss": float(test_loss),
        "val_accuracy": float(val_acc), "val_loss": float(val_loss),
        "epochs_run": len(hist["loss"]), "best_epoch": best_epoch, **refit, "train_seconds": round(wall, 1),
    }
    write_hparams(run_dir, hparams_of(config), metrics, trial_id=run_dir.name, metric_prefix="hparams/")

    version_dir = None
    if export:
        card = {
            "training": {**dataclasses.asdict(config), "image_size": config.size, "name": config.model_name},
            "dataset": splits.describe(),
            "metrics": metrics,
        }
        version_dir = export_classifier(model, splits.class_names, config.export_dir, config.model_name,
                                        image_size=config.size, channels=channels, preprocessing=info.preprocessing,
                                        gradcam_layer=info.gradcam_layer, card=card, examples=splits.test_records())
    print(
        f"[glimpse] {config.model} on {config.dataset}: val_accuracy={val_acc:.4f} test_accuracy={test_acc:.4f} "
        f"epochs={metrics['epochs_run']}"
        + (f" refit={best_epoch} epochs on {refit['refit_examples']} examples" if refit else "")
        + f" wall={wall:.1f}s"
        + (f" exported={version_dir}" if version_dir else ""),
        flush=True,
    )
    return TrainResult(model, hist, metrics, wall, fitted.epoch_seconds, version_dir, run_dir, splits.class_names)


def pipeline_benchmark(dataset: str = "tuxpaint", model: str = "efficientnet_lite0", image_size: int = 128,
                       steps: int = 20, batch_size: int = 32, rounds: int = 3, max_examples: int | None = None
                       ) -> dict[str, float]:
    """Seconds per training step with the real input pipeline vs the same step on synthetic tensors in memory.

    A ratio near 1 means the pipeline keeps up with the model (it is not the bottleneck). The real pipeline is
    timed after one full pass (its cache is filled, as in every epoch after the first); augmentation is included.
    The two are timed alternately ``rounds`` times, ``steps`` steps each, and the medians compared, so that load from
    other processes hits both alike. ``max_examples`` caps the training split (a shorter first pass).
    """
    import statistics

    import keras
    import numpy as np
    import tensorflow as tf

    if steps < 1 or rounds < 1:
        raise ValueError("steps and rounds must be at least 1")
    keras.utils.set_random_seed(0)
    splits = load_dataset(dataset, image_size=image_size, batch_size=batch_size, seed=0, max_examples=max_examples)
    m, _ = build_model(model, len(splits.class_names), image_size=image_size, channels=splits.channels)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    real = splits.train.repeat()
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch_size, image_size, image_size, splits.channels)),
                    tf.float32)
    y = tf.constant(np.zeros(batch_size), tf.int32)
    synthetic = tf.data.Dataset.from_tensors((x, y)).repeat()
    m.fit(synthetic, steps_per_epoch=3, epochs=1, shuffle=False, verbose=0)  # build and warm up
    one_pass = math.ceil(splits.num_train / batch_size) + 1
    m.fit(real, steps_per_epoch=one_pass, epochs=1, shuffle=False, verbose=0)  # fill the cache, trace a short batch

    def timed(ds: Any) -> float:
        t0 = time.perf_counter()
        m.fit(ds, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
        return (time.perf_counter() - t0) / steps

    synthetic_times: list[float] = []
    real_times: list[float] = []
    for _ in range(rounds):
        synthetic_times.append(timed(synthetic))
        real_times.append(timed(real))
    real_s, synthetic_s = statistics.median(real_times), statistics.median(synthetic_times)
    return {"real_step_s": real_s, "synthetic_step_s": synthetic_s, "ratio": real_s / synthetic_s,
            "steps": steps, "rounds": rounds, "batch_size": batch_size, "image_size": image_size}


def run_pipeline_benchmarks(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for ``glimpse bench --suite pipeline``: Tux Paint into a frozen Lite0, Fashion-MNIST into scratch_bn."""
    rows = []
    cases = (
        ("tuxpaint", "efficientnet_lite0", 128, 32, None, "real tuxpaint pipeline (all 144, basic augmentation)"),
        ("fashion_mnist", "scratch_bn", 28, 256, 5120, "real fashion_mnist pipeline (5120, basic augmentation)"),
    )
    for dataset, model, size, batch, cap, what in cases:
        r = pipeline_benchmark(dataset, model, size, steps=5 if quick else 20, batch_size=batch,
                               rounds=1 if quick else 3, max_examples=cap)
        rows.append({
            "name": f"training step, {what} vs synthetic tensors ({model}, {size}px, batch {batch})",
            "ours_s": r["real_step_s"], "baseline_s": r["synthetic_step_s"], "ratio": r["ratio"],
            "note": "ratio ~1: the input pipeline is not the bottleneck; medians of alternating rounds",
        })
    return rows
