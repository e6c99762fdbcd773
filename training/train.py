"""Seeded, logged training runs that end in an exported, explainable model.

``train(TrainConfig(...))`` loads the data, builds the model, fits it with early stopping and TensorBoard logging
(scalars, weight histograms, sample images, the HParams record), evaluates on the held-out split and exports the
model through the model contract.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop", "adagrad", "adadelta")
LR_SCHEDULES = ("constant", "cosine")


def default_image_size(dataset: str, model: str) -> int:
    if dataset == "fashion_mnist" and model.startswith("scratch"):
        return 28
    return 64 if model.startswith("scratch") else 160


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "tuxpaint"
    model: str = "efficientnet_lite0"
    image_size: int | None = None  # None: default_image_size(dataset, model)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    lr_schedule: str = "constant"  # or "cosine": decays lr to 0 over the planned epochs
    patience: int = 5
    unfreeze: float = 0.0
    dropout: float = 0.2
    dense_units: int = 256
    augment: str = "basic"
    seed: int = 42
    max_examples: int | None = None
    weights: str = "imagenet"
    logdir: str = "runs"
    export_dir: str = "models"
    name: str | None = None  # None: derived from the dataset
    explain_every: int = 0  # > 0: Grad-CAM/occlusion/activations of fixed validation images every N epochs
    explain_images: int = 6  # how many (the first of the validation split)
    refit: bool = False  # after early stopping: retrain on train+val for the best epoch count, test and export that
    ema: float = 0.0  # > 0: validate, early-stop and export an exponential moving average of the weights

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        for attr in ("epochs", "batch_size"):
            if getattr(self, attr) < 1:
                raise ValueError(f"--{attr.replace('_', '-')} must be at least 1")
        if self.lr <= 0:
            raise ValueError("--lr must be positive")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.lr_schedule!r}; expected one of {', '.join(LR_SCHEDULES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("--dropout must be in [0, 1)")
        if not 0.0 <= self.unfreeze <= 1.0:
            raise ValueError("--unfreeze must be in [0, 1]")
        if self.patience < 1:
            raise ValueError("--patience must be at least 1")
        if self.dense_units < 0:
            raise ValueError("--dense-units must be >= 0 (0: no hidden layer in the head)")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError("--image-size must be at least 8")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError("--max-examples must be at least 1")
        if self.explain_every < 0:
            raise ValueError(f"--explain-every must be >= 0 (0: off), got {self.explain_every}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema must be in [0, 1) (0: off), got {self.ema}")
        if self.explain_images < 1:
            raise ValueError(f"--explain-images must be at least 1, got {self.explain_images}")
        from training.data import AUGMENTATIONS
        from training.models import MODELS

        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; expected one of {', '.join(MODELS)}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augment!r}; expected one of {', '.join(AUGMENTATIONS)}")

    @property
    def size(self) -> int:
        return self.image_size or default_image_size(self.dataset, self.model)

    @property
    def model_name(self) -> str:
        if self.name:
            return self.name
        base = self.dataset.split(":", 1)[-1] if ":" in self.dataset else self.dataset
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(base).name) or "model"


@dataclass
class TrainResult:
    model: Any
    history: dict[str, list[float]]
    metrics: dict[str, float]
    wall_s: float
    epoch_seconds: list[float] = field(default_factory=list)
    version_dir: Path | None = None
    run_dir: Path | None = None
    class_names: tuple[str, ...] = ()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF ops deterministic (same seed and data => same weights)."""
    import keras
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """``seed_everything`` for the duration of a run; op determinism is switched off again afterwards if it was off
    before, so a library caller (or the next test in the same process) keeps TensorFlow's usual behaviour."""
    from tensorflow.python.framework import config as tf_config

    was_on = bool(getattr(tf_config, "is_op_determinism_enabled", lambda: True)())
    seed_everything(seed)
    try:
        yield
    finally:
        disable = getattr(tf_config, "disable_op_determinism", None)
        if not was_on and disable is not None:
            disable()


def _unique_run_dir(logdir: str, stem: str) -> Path:
    """``logdir/stem-<timestamp>``, with a counter when two runs start within the same second."""
    base = Path(logdir) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    return run_dir


def make_optimizer(name: str, lr: Any, ema: float = 0.0) -> Any:
    """A Keras optimizer by name; ``lr`` is a float or a ``keras.optimizers.schedules.LearningRateSchedule``.

    ``ema`` > 0 keeps an exponential moving average of the weights with that momentum per step (Keras' ``use_ema``).
    """
    import keras

    kw: dict[str, Any] = {"use_ema": True, "ema_momentum": ema} if ema > 0 else {}
    factories = {
        "adam": lambda: keras.optimizers.Adam(lr, **kw),
        "sgd": lambda: keras.optimizers.SGD(lr, **kw),
        "momentum": lambda: keras.optimizers.SGD(lr, momentum=0.9, **kw),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr, **kw),
        "adagrad": lambda: keras.optimizers.Adagrad(lr, **kw),
        "adadelta": lambda: keras.optimizers.Adadelta(lr, **kw),
    }
    if name not in factories:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    return factories[name]()


def epoch_timer() -> Any:
    """A Keras callback whose ``seconds`` lists each epoch's wall time."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._t0 = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self._t0)

    return EpochTimer()


def _log_run_start(run_dir: Path, splits: Any, config: TrainConfig) -> None:
    import tensorflow as tf

    with tf.summary.create_file_writer(str(run_dir / "samples")).as_default():
        for images, _ in splits.train.take(1):
            tf.summary.image("train_samples", images[:8] / 255.0, max_outputs=8, step=0)
        tf.summary.text("config", json.dumps(dataclasses.asdict(config), indent=1), step=0)


def _log_hparams(run_dir: Path, config: TrainConfig, metrics: dict[str, float]) -> None:
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
               for k, v in dataclasses.asdict(config).items() if k not in ("logdir", "export_dir")}
    with tf.summary.create_file_writer(str(run_dir)).as_default():
        hp.hparams(hparams, trial_id=run_dir.name)
        for key, value in metrics.items():
            tf.summary.scalar(f"hparams/{key}", value, step=0)


def train(config: TrainConfig, *, export: bool = True, callbacks: Sequence[Any] = (), verbose: int | str = "auto"
          ) -> TrainResult:
    """Train, evaluate on the test split, and (``export=True``) export the next version of the model.

    The run is seeded with ``config.seed`` and TF op determinism is on while it runs: two runs with the same config
    and data give identical weights and metrics. ``callbacks`` are added to Keras' fit; ``verbose`` is fit's.
    """
    t_start = time.perf_counter()
    with _seeded(config.seed):
        return _train(config, export=export, callbacks=callbacks, verbose=verbose, t_start=t_start)


def _compile(model: Any, config: TrainConfig, num_examples: int) -> None:
    """The run's optimizer and loss; a cosine schedule decays to 0 over ``config.epochs`` of ``num_examples``."""
    import keras

    lr: Any = config.lr
    if config.lr_schedule == "cosine":
        steps = max(1, math.ceil(num_examples / config.batch_size)) * config.epochs
        lr = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=steps)
    model.compile(optimizer=make_optimizer(config.optimizer, lr, config.ema), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


def _train(config: TrainConfig, *, export: bool, callbacks: Sequence[Any], verbose: int | str, t_start: float
           ) -> TrainResult:
    import keras

    from training.data import load_dataset
    from training.models import build_model

    splits = load_dataset(config.dataset, image_size=config.size, seed=config.seed, max_examples=config.max_examples,
                          batch_size=config.batch_size, augment=config.augment)
    channels = splits.channels  # grey stays grey: pretrained models repeat it to RGB inside
    train_ds, val_ds, test_ds = splits.train, splits.val, splits.test
    def build() -> tuple[Any, Any]:
        return build_model(config.model, len(splits.class_names), image_size=config.size, channels=channels,
                           weights=config.weights, unfreeze=config.unfreeze, dropout=config.dropout,
                           dense_units=config.dense_units, seed=config.seed)

    model, info = build()
    _compile(model, config, splits.num_train)

    run_dir = _unique_run_dir(config.logdir, f"{config.model_name}-{config.model}")
    _log_run_start(run_dir, splits, config)
    timer = epoch_timer()
    fit_callbacks = [
        # First, so that validation, early stopping's best weights and the logs all see the averaged weights.
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema else []),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", min_delta=1e-4, patience=config.patience,
                                      restore_best_weights=True),
        keras.callbacks.TensorBoard(log_dir=str(run_dir), histogram_freq=1),
        timer,
        *callbacks,
    ]
    if config.explain_every:
        from training.callbacks import ExplainCallbackConfig, explanation_callbacks

        fit_callbacks += explanation_callbacks(
            model, gradcam_layer=info.gradcam_layer, validation=val_ds, class_names=splits.class_names,
            log_dir=run_dir / "explain",
            config=ExplainCallbackConfig(every=config.explain_every, num_images=config.explain_images))
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=fit_callbacks,
                        shuffle=False, verbose=verbose)  # the pipeline shuffles, seeded
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    val_loss, val_acc = model.evaluate(val_ds, verbose=0)
    best_epoch = int(max(range(len(hist["val_accuracy"])), key=lambda i: hist["val_accuracy"][i])) + 1
    refit: dict[str, int] = {}
    if config.refit:
        # The validation split has chosen the epoch count; now it becomes training data too. Same seed, same
        # initialisation and the same learning-rate path per epoch, on train+val for best_epoch epochs. The
        # reported validation accuracy stays the early-stopped run's: the refit model has seen those examples.
        keras.utils.set_random_seed(config.seed)
        model, info = build()
        examples = splits.num_train + splits.num_val
        _compile(model, config, examples)
        model.fit(splits.train_and_val(), epochs=best_epoch, shuffle=False, verbose=verbose,
                  callbacks=[keras.callbacks.TensorBoard(log_dir=str(run_dir / "refit"))])
        refit = {"refit_epochs": best_epoch, "refit_examples": examples}
    test_loss, test_acc = model.evaluate(test_ds, verbose=0)
    wall = time.perf_counter() - t_start
    metrics = {
        "test_accuracy": float(test_acc), "test_loss": float(test_loss),
        "val_accuracy": float(val_acc), "val_loss": float(val_loss),
        "epochs_run": len(hist["loss"]), "best_epoch": best_epoch, **refit, "train_seconds": round(wall, 1),
    }
    _log_hparams(run_dir, config, metrics)

    version_dir = None
    if export:
        from training.export import export_classifier

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
    return TrainResult(model, hist, metrics, wall, timer.seconds, version_dir, run_dir, splits.class_names)


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

    from training.data import load_dataset
    from training.models import build_model

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
