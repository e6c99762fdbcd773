"""The one fit path of Glimpse: a ``TrainConfig`` and data in, a fitted model and its history out.

``glimpse train`` (``training.train``), the chapter's studies and the hyperparameter tuner (``studies``) all fit
through :func:`fit`, so that seeding, the optimizer and its learning-rate schedule, the moving average of the
weights (EMA), early stopping, TensorBoard and the epoch timer are written once. ``TrainConfig`` is the only record of
training parameters; a study's variant is a ``dataclasses.replace`` of one, and a tuner's trial is one as well.

TensorFlow and Keras are imported inside functions: importing this module (and so building a ``TrainConfig`` while
parsing flags) stays light.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.data import AUGMENTATIONS
from training.distribute import DISTRIBUTE_MODES, prepare_model
from training.models import MODELS, ModelInfo, build_model
from training.recipes import DATASET_RECIPES

__all__ = [
    "EARLY_STOPPING",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "PRETRAINED_IMAGE_SIZE",
    "FitData",
    "FitResult",
    "TrainConfig",
    "build_classifier",
    "classification_loss",
    "compile_classifier",
    "default_image_size",
    "epoch_timer",
    "fit",
    "hparams_of",
    "make_optimizer",
    "recipe_config",
    "seed_everything",
    "seeded",
    "write_hparams",
]

OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop", "adagrad", "adadelta")
LR_SCHEDULES = ("constant", "cosine")
EARLY_STOPPING = ("accuracy", "loss")  # the validation metric early stopping watches (and picks the best epoch by)
# The input side of a pretrained backbone when none is given; callers that want smaller runs (the studies) pass theirs.
PRETRAINED_IMAGE_SIZE = 160


def default_image_size(dataset: str, model: str, *, pretrained_size: int = PRETRAINED_IMAGE_SIZE) -> int:
    """The input side when none is given: 28 for Fashion-MNIST on the scratch CNNs, 64 for other scratch runs, and
    ``pretrained_size`` (160 unless a caller asks for another) for the pretrained backbones."""
    if model.startswith("scratch"):
        return 28 if dataset == "fashion_mnist" else 64
    return pretrained_size


def recipe_config(dataset: str, **given: Any) -> TrainConfig:
    """The TrainConfig of ``glimpse train --dataset DATASET``: TrainConfig's defaults, the dataset's recipe
    (``DATASET_RECIPES``) over them, and ``given`` over both (None values count as not given). A recipe was measured
    for its model: when ``given`` names another model, the recipe does not apply at all."""
    chosen = {k: v for k, v in given.items() if v is not None}
    recipe = DATASET_RECIPES.get(dataset, {})
    if chosen.get("model", recipe.get("model")) != recipe.get("model"):
        recipe = {}
    return TrainConfig(**{"dataset": dataset, **recipe, **chosen})


@dataclass(frozen=True)
class TrainConfig:
    """Every parameter of one training run (``glimpse train``'s flags); the studies and the tuner vary copies."""

    dataset: str = "tuxpaint"
    model: str = "efficientnet_lite0"
    image_size: int | None = None  # None: default_image_size(dataset, model)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    lr_schedule: str = "constant"  # or "cosine": decays lr to 0 over the planned epochs
    patience: int = 5  # early stopping's patience; 0 stops at the first epoch without improvement
    early_stopping: str = "accuracy"  # or "loss": the validation metric that early stopping watches
    label_smoothing: float = 0.0  # > 0: the loss's targets are (1 - s) one-hot + s / classes
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
    cv: int = 0  # >= 2: stratified K-fold cross-validation over every example (training.cv); 0: one split
    cv_repeats: int = 1  # repeated cross-validation: R fresh K-fold partitions
    distribute: str = "none"  # or "mirrored" (local GPUs) or "multiworker" (cluster from TF_CONFIG)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        for attr in ("epochs", "batch_size"):
            if getattr(self, attr) < 1:
                raise ValueError(f"--{attr.replace('_', '-')} must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError("--lr must be positive")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.lr_schedule!r}; expected one of {', '.join(LR_SCHEDULES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("--dropout must be in [0, 1)")
        if not 0.0 <= self.unfreeze <= 1.0:
            raise ValueError("--unfreeze must be in [0, 1]")
        if self.patience < 0:
            raise ValueError("--patience must be >= 0")
        if self.early_stopping not in EARLY_STOPPING:
            raise ValueError(f"unknown --early-stopping {self.early_stopping!r}; expected one of "
                             f"{', '.join(EARLY_STOPPING)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1) (0: off), got {self.label_smoothing}")
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
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; expected one of {', '.join(MODELS)}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augment!r}; expected one of {', '.join(AUGMENTATIONS)}")
        if self.cv == 1 or self.cv < 0:
            raise ValueError(f"--cv must be at least 2 folds (0: off), got {self.cv}")
        if self.cv_repeats < 1:
            raise ValueError(f"--cv-repeats must be at least 1, got {self.cv_repeats}")
        if self.cv_repeats > 1 and not self.cv:
            raise ValueError("--cv-repeats needs --cv K")
        if self.cv and (self.refit or self.explain_every):
            raise ValueError("--cv trains the exported model on all the data itself: drop --refit and --explain-every")
        if self.distribute not in DISTRIBUTE_MODES:
            raise ValueError(f"unknown --distribute {self.distribute!r}; expected one of {', '.join(DISTRIBUTE_MODES)}")
        if self.distribute != "none" and (self.cv or self.refit or self.explain_every):
            raise ValueError("--distribute runs one training: drop --cv, --refit and --explain-every")

    @property
    def size(self) -> int:
        return self.image_size or default_image_size(self.dataset, self.model)

    @property
    def model_name(self) -> str:
        if self.name:
            return self.name
        base = self.dataset.split(":", 1)[-1] if ":" in self.dataset else self.dataset
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(base).name) or "model"


@dataclass(frozen=True)
class FitData:
    """What :func:`fit` trains on: ``train`` and ``val`` are batched ``tf.data`` datasets of (float32 pixels 0-255,
    int labels), or ``(x, y)`` array pairs that Keras batches (``config.batch_size``) and reshuffles each epoch.
    ``val`` None: no validation, hence no early stopping. ``num_train`` (examples) sizes a cosine schedule."""

    train: Any
    num_classes: int
    channels: int
    num_train: int
    val: Any = None


@dataclass
class FitResult:
    """A fitted model: ``info`` is its ``ModelInfo`` (None for a model the caller built), ``history`` Keras' per-epoch
    metrics, ``keras_history`` the ``History`` object itself (keras-tuner reads it)."""

    model: Any
    info: ModelInfo | None
    history: dict[str, list[float]]
    epoch_seconds: list[float]
    wall_s: float
    keras_history: Any = field(default=None, repr=False)
    early_stopping: str = "accuracy"  # the validation metric the best epoch is chosen by

    @property
    def best_epoch(self) -> int:
        """1-based epoch of the best validation accuracy, or the lowest validation loss when early stopping watched
        the loss (the first, if tied), or the last epoch without validation."""
        if self.early_stopping == "loss":
            val = [-v for v in self.history.get("val_loss", [])]
        else:
            val = self.history.get("val_accuracy", [])
        if not val:
            return len(self.history.get("loss", []))
        return max(range(len(val)), key=val.__getitem__) + 1

    @property
    def best_val_accuracy(self) -> float:
        """Validation accuracy at ``best_epoch``: the weights early stopping restored."""
        return float(self.history["val_accuracy"][self.best_epoch - 1])


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow, and (``deterministic``) make TF ops deterministic: same seed and data =>
    same weights."""
    import keras
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def seeded(seed: int, *, deterministic: bool = True) -> Iterator[None]:
    """``seed_everything`` for the duration of a run; op determinism is switched off again afterwards if it was off
    before, so a library caller (or the next test in the same process) keeps TensorFlow's usual behaviour."""
    from tensorflow.python.framework import config as tf_config

    was_on = bool(getattr(tf_config, "is_op_determinism_enabled", lambda: True)())
    seed_everything(seed, deterministic=deterministic)
    try:
        yield
    finally:
        disable = getattr(tf_config, "disable_op_determinism", None)
        if not was_on and disable is not None:
            disable()


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


def build_classifier(config: TrainConfig, num_classes: int, channels: int) -> tuple[Any, ModelInfo]:
    """``config.model`` from ``training.models.build_model``, seeded with ``config.seed`` just before it is built, so
    runs that differ in one setting start from the same weights."""
    import keras

    keras.utils.set_random_seed(config.seed)
    return build_model(config.model, num_classes, image_size=config.size, channels=channels, weights=config.weights,
                       unfreeze=config.unfreeze, dropout=config.dropout, dense_units=config.dense_units,
                       seed=config.seed)


def classification_loss(label_smoothing: float = 0.0) -> Any:
    """Cross-entropy on integer labels; ``label_smoothing`` s > 0 trains towards (1 - s) on the true class and s / C
    spread over all C classes (Szegedy et al. 2016), which Keras' sparse cross-entropy does not offer."""
    import keras

    if not label_smoothing:
        return "sparse_categorical_crossentropy"

    def smoothed_sparse_crossentropy(y_true: Any, y_pred: Any) -> Any:
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        targets = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(targets, y_pred, label_smoothing=label_smoothing)

    return smoothed_sparse_crossentropy


def compile_classifier(model: Any, config: TrainConfig, num_examples: int) -> None:
    """The run's optimizer (with EMA if ``config.ema``) and loss (label-smoothed if ``config.label_smoothing``); a
    cosine schedule decays to 0 over ``config.epochs`` epochs of ``num_examples`` examples."""
    import keras

    lr: Any = config.lr
    if config.lr_schedule == "cosine":
        steps = max(1, math.ceil(num_examples / config.batch_size)) * config.epochs
        lr = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=steps)
    model.compile(optimizer=make_optimizer(config.optimizer, lr, config.ema),
                  loss=classification_loss(config.label_smoothing), metrics=["accuracy"])


def fit(config: TrainConfig, data: FitData, *, model: Any = None, epochs: int | None = None, initial_epoch: int = 0,
        callbacks: Sequence[Any] = (), log_dir: str | Path | None = None, histograms: bool = False,
        verbose: int | str = "auto", strategy: Any = None) -> FitResult:
    """Fit a classifier on ``data`` as ``config`` says and return it with its history.

    ``model`` None: build ``config.model`` (seeded) and compile it (``compile_classifier``); a model the caller
    built is compiled the same way unless it is compiled already (the tuner compiles in its ``build``).
    ``epochs`` defaults to ``config.epochs``; ``initial_epoch`` is where a resumed run starts (Hyperband's).
    With validation data, early stopping watches val_accuracy, or val_loss (``config.early_stopping``), with
    ``config.patience``, and restores the best weights;
    with ``config.ema`` validation sees the averaged weights. ``log_dir`` adds TensorBoard (``histograms``: weight
    histograms each epoch); ``callbacks`` come last. ``strategy`` (a ``tf.distribute.Strategy``, see
    ``training.distribute``): the model is built and compiled in its scope, and ``data`` batches the global batch.
    """
    import keras

    start = time.perf_counter()
    info: ModelInfo | None = None
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        if model is None:
            model, info = build_classifier(config, data.num_classes, data.channels)
        if not getattr(model, "compiled", False):
            compile_classifier(model, config, data.num_train)
    prepare_model(model, strategy)
    timer = epoch_timer()
    validating = data.val is not None
    fit_callbacks: list[Any] = [
        # First, so that validation, early stopping's best weights and the logs all see the averaged weights.
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema and validating else []),
        *([keras.callbacks.EarlyStopping(monitor=f"val_{config.early_stopping}", min_delta=1e-4,
                                         patience=config.patience, restore_best_weights=True)] if validating else []),
        *([keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=int(histograms),
                                       write_graph=histograms)] if log_dir is not None else []),
        timer,
        *callbacks,
    ]
    kwargs: dict[str, Any] = {"epochs": epochs or config.epochs, "initial_epoch": initial_epoch,
                              "callbacks": fit_callbacks, "verbose": verbose}
    if validating:
        kwargs["validation_data"] = data.val
    if isinstance(data.train, tuple):  # arrays: Keras batches and reshuffles them
        x, y = data.train
        history = model.fit(x, y, batch_size=config.batch_size, shuffle=True, **kwargs)
    else:  # a tf.data pipeline shuffles (seeded) and batches by itself
        history = model.fit(data.train, shuffle=False, **kwargs)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    return FitResult(model, info, hist, list(timer.seconds), time.perf_counter() - start, history,
                     config.early_stopping)


def hparams_of(config: TrainConfig, **extra: Any) -> dict[str, bool | int | float | str]:
    """The run's parameters as TensorBoard HParams values: every field but the output paths, the resolved image size,
    then ``extra``; None becomes 0 (not set / not capped), anything else that is not a scalar its ``str``."""
    values: dict[str, Any] = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("logdir", "export_dir")}
    values["image_size"] = config.size
    values.update(extra)
    return {k: 0 if v is None else v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in values.items()}


def write_hparams(run_dir: str | Path, hparams: Mapping[str, Any], metrics: Mapping[str, float], *, trial_id: str,
                  metric_prefix: str = "") -> None:
    """The run's HParams record and its final metrics (as ``metric_prefix + name`` scalars) under ``run_dir``."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    with tf.summary.create_file_writer(str(run_dir)).as_default():
        hp.hparams(dict(hparams), trial_id=trial_id)
        for name, value in metrics.items():
            tf.summary.scalar(f"{metric_prefix}{name}", value, step=0)
