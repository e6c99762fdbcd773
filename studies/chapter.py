"""The chapter's studies as one command each: ``glimpse study NAME``.

Every study trains a few variants of one classifier that differ in a single setting (learning rate, optimizer, batch
size, ...) on the same data with the same seed, then writes what the chapter shows for each: accuracy normalised to
the best run, epochs to converge and seconds per epoch (``results.csv``, ``results.md``), validation accuracy per
epoch (PNG plots), and a TensorBoard log with HParams under ``OUT/tb``.

Every run is a ``training.fit.TrainConfig`` (a variant is a ``dataclasses.replace`` of the study's base config) fitted
by ``training.fit.fit``, the same fit path as ``glimpse train``. The data of a study is loaded once through
:func:`training.data.load_dataset` (no augmentation, resized as the
training pipeline does) and kept as arrays, so that every variant sees exactly the same images; augmentation is then
applied on the fly, seeded. ``data-per-class`` draws nested subsets of the training split (the 1-image set is inside
the 3-image set, ...). ``aspect-ratio`` trains once and evaluates the original test images after three ways of
making them square (pad, stretch, centre crop), by aspect-ratio bin.

A study can be fanned out over machines: ``--shard I/N`` trains only its share of the runs (variants I, I+N, ...;
for ``aspect-ratio`` the seeds) and writes ``OUT/shards/shard-I-of-N.json``; ``--merge DIR`` reads the N shard files
of DIR and writes the same results.csv / results.md / history.json / PNG plots as one process would (the runs are
seeded one by one, so a run's numbers do not depend on which process trained it). ``k8s/studies/`` runs the shards
as an indexed Job.

The studies run smaller than ``glimpse train``: pretrained backbones at ``STUDY_IMAGE_SIZE`` (128 px) unless
``--image-size`` says otherwise, and ``--quick`` at ``QUICK_IMAGE_SIZE`` (32 px), one epoch, 48 examples per split.

TensorFlow, Keras and matplotlib are imported inside functions: ``configure_study`` stays light.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from training.data import AUGMENTATIONS, DatasetUnavailable, load_dataset
from training.export import ExportError
from training.fit import (
    OPTIMIZERS,
    FitData,
    TrainConfig,
    default_image_size,
    fit,
    hparams_of,
    seeded,
    write_hparams,
)
from training.models import PRETRAINED_MODELS, ModelUnavailable

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "ASPECT_BINS",
    "PRETRAINED_MODELS",
    "RESULT_COLUMNS",
    "STUDIES",
    "AspectBin",
    "AspectOutcomes",
    "QUICK_EPOCHS",
    "QUICK_IMAGE_SIZE",
    "QUICK_MAX_EXAMPLES",
    "RunResult",
    "STUDY_IMAGE_SIZE",
    "StudyConfig",
    "StudyData",
    "StudyError",
    "StudyResult",
    "StudySpec",
    "Variant",
    "accuracy_by_aspect_ratio",
    "add_run_flags",
    "array_dataset",
    "aspect_bin_of",
    "aspect_outcomes",
    "configure_study",
    "execute_study",
    "fit_classifier",
    "make_augmenter",
    "merge_shards",
    "parse_shard",
    "normalized",
    "prepare_data",
    "quick_params",
    "run_study",
    "shard_path",
    "square_image",
    "user_errors",
    "write_results",
]

# The input side of pretrained backbones in the studies (many runs each; ``glimpse train`` defaults to 160), and the
# ``--quick`` run: tiny images, one epoch, a few examples per split. Scratch models keep training's default size.
STUDY_IMAGE_SIZE = 128
QUICK_IMAGE_SIZE = 32
QUICK_EPOCHS = 1
QUICK_MAX_EXAMPLES = 48
SQUARE_MODES: tuple[str, ...] = ("pad", "stretch", "crop")

RESULT_COLUMNS: tuple[str, ...] = (
    "study",
    "variant",
    "model",
    "weights",
    "image_size",
    "batch_size",
    "lr",
    "optimizer",
    "unfreeze",
    "per_class",
    "train_examples",
    "val_accuracy",
    "test_accuracy",
    "normalized_accuracy",
    "best_epoch",
    "epochs_run",
    "seconds_per_epoch",
    "first_epoch_seconds",
    "wall_seconds",
)


class StudyError(ValueError):
    """A study cannot run with these settings (bad variant, model unsuited to the study, ...)."""


# --------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Variant:
    """One run of a study: a name (``0.01``, ``adam``, ``pretrained``), the ``TrainConfig`` fields it overrides and,
    for ``data-per-class``, how many training images per class it keeps (None = all)."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    per_class: int | None = None

    def apply(self, base: TrainConfig) -> TrainConfig:
        return replace(base, **dict(self.overrides))


@dataclass(frozen=True)
class StudySpec:
    """A study: which setting it varies, over which values, and the values of ``--quick``."""

    name: str
    title: str
    varies: str  # what the variants differ in, for tables and plot legends
    values: tuple[str, ...]
    quick_values: tuple[str, ...]
    to_variant: Callable[[str], Variant]
    needs_pretrained: bool = False
    trains_once: bool = False  # aspect-ratio: one model, several evaluations

    def variants(self, quick: bool = False, names: Sequence[str] | None = None) -> list[Variant]:
        chosen = list(names) if names else list(self.quick_values if quick else self.values)
        if not chosen:
            raise StudyError(f"study {self.name!r} needs at least one variant")
        if len(set(chosen)) != len(chosen):
            raise StudyError(f"duplicate variants in {chosen}")
        return [self.to_variant(v) for v in chosen]


def _number_variant(field_name: str, kind: type, *, minimum: float, maximum: float | None = None):
    def to_variant(text: str) -> Variant:
        text = text.strip()
        try:
            value = kind(text)
        except ValueError:
            raise StudyError(f"{field_name} variant must be a {kind.__name__}, got {text!r}") from None
        if not (value >= minimum and (maximum is None or value <= maximum) and math.isfinite(value)):
            bound = f"[{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
            raise StudyError(f"{field_name} variant must be {bound}, got {text!r}")
        return Variant(text, {field_name: value})

    return to_variant


def _per_class_variant(text: str) -> Variant:
    text = text.strip()
    if text == "all":
        return Variant("all")
    try:
        n = int(text)
    except ValueError:
        raise StudyError(f"data-per-class variant must be a positive integer or 'all', got {text!r}") from None
    if n < 1:
        raise StudyError(f"data-per-class variant must be >= 1, got {text!r}")
    return Variant(text, per_class=n)


def _choice_variant(field_name: str, choices: Sequence[str]):
    def to_variant(text: str) -> Variant:
        text = text.strip()
        if text not in choices:
            raise StudyError(f"unknown {field_name} variant {text!r}; expected one of {', '.join(choices)}")
        return Variant(text, {field_name: text})

    return to_variant


_TRANSFER_VARIANTS: dict[str, dict[str, Any]] = {
    # The backbone starts from ImageNet weights and is trained as configured (frozen by default).
    "pretrained": {},
    # The same architecture from random weights, everything trainable.
    "random-init": {"weights": "none", "unfreeze": 1.0},
    # The chapter's small CNN trained from scratch.
    "scratch": {"model": "scratch", "weights": "none", "unfreeze": 1.0},
}


def _transfer_variant(text: str) -> Variant:
    text = text.strip()
    if text not in _TRANSFER_VARIANTS:
        choices = ", ".join(_TRANSFER_VARIANTS)
        raise StudyError(f"unknown transfer-vs-scratch variant {text!r}; expected one of {choices}")
    return Variant(text, _TRANSFER_VARIANTS[text])


def _square_variant(text: str) -> Variant:
    text = text.strip()
    if text not in SQUARE_MODES:
        raise StudyError(f"unknown aspect-ratio variant {text!r}; expected one of {', '.join(SQUARE_MODES)}")
    return Variant(text, {})


STUDIES: dict[str, StudySpec] = {
    spec.name: spec
    for spec in (
        StudySpec(
            "transfer-vs-scratch",
            "Transfer learning vs training from scratch",
            "initialisation",
            ("pretrained", "random-init", "scratch"),
            ("pretrained", "scratch"),
            _transfer_variant,
            needs_pretrained=True,
        ),
        StudySpec(
            "unfreeze",
            "How much of the backbone to fine-tune",
            "fraction of backbone layers trainable",
            ("0", "0.25", "0.5", "0.75", "1"),
            ("0", "1"),
            _number_variant("unfreeze", float, minimum=0.0, maximum=1.0),
            needs_pretrained=True,
        ),
        StudySpec(
            "data-per-class",
            "How many training images per class",
            "training images per class",
            ("1", "3", "5", "10", "20", "all"),
            ("1", "3"),
            _per_class_variant,
        ),
        StudySpec(
            "learning-rate",
            "Learning rate",
            "learning rate",
            ("0.1", "0.01", "0.001", "0.0001"),
            ("0.01", "0.001"),
            _number_variant("lr", float, minimum=1e-12, maximum=10.0),
        ),
        StudySpec(
            "optimizer",
            "Optimizer",
            "optimizer",
            OPTIMIZERS,
            ("adam", "sgd"),
            _choice_variant("optimizer", OPTIMIZERS),
        ),
        StudySpec(
            "batch-size",
            "Batch size",
            "batch size",
            ("8", "16", "32", "64", "128"),
            ("8", "32"),
            _number_variant("batch_size", int, minimum=1),
        ),
        StudySpec(
            "image-size",
            "Input image size",
            "image size (px)",
            ("96", "128", "160", "224"),
            ("32", "48"),
            _number_variant("image_size", int, minimum=8, maximum=1024),
        ),
        StudySpec(
            "aspect-ratio",
            "Aspect ratio of the test images after making them square",
            "how a test image is made square",
            SQUARE_MODES,
            SQUARE_MODES,
            _square_variant,
            trains_once=True,
        ),
    )
}


@dataclass(frozen=True)
class StudyConfig:
    """One study: its name, the base run, where to write, and the variants (None = the study's defaults)."""

    study: str
    base: TrainConfig
    out: Path
    quick: bool = False
    variants: tuple[str, ...] | None = None
    deterministic: bool = True  # tf.config.experimental.enable_op_determinism (process-wide)
    verbose: int | str = "auto"  # Keras' per-run progress: 0, 1, 2 or "auto"
    progress: bool = True  # tqdm over the whole study
    seeds: tuple[int, ...] | None = None  # aspect-ratio: pool the test splits of these seeds (None = base.seed)
    shard: tuple[int, int] | None = None  # (I, N): run only shard I of N and write its shard file, not the results

    def __post_init__(self) -> None:
        if self.study not in STUDIES:
            raise StudyError(f"unknown study {self.study!r}; expected one of {', '.join(STUDIES)}")
        spec = STUDIES[self.study]
        if spec.needs_pretrained and self.base.model not in PRETRAINED_MODELS:
            raise StudyError(
                f"study {self.study!r} compares pretrained backbones; --model must be one of "
                f"{', '.join(PRETRAINED_MODELS)}, got {self.base.model!r}"
            )
        if spec.needs_pretrained and self.base.weights == "none":
            raise StudyError(f"study {self.study!r} needs pretrained weights; drop --weights none")
        spec.variants(self.quick, self.variants)  # validates the names early
        if self.seeds is not None:
            if not spec.trains_once:
                raise StudyError(f"--seeds pools test splits and is for aspect-ratio only, not {self.study!r}")
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise StudyError(f"--seeds needs distinct seeds, got {list(self.seeds)}")
        if self.shard is not None:
            index, count = self.shard
            if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
                raise StudyError(f"--shard must be I/N with 0 <= I < N, got {index}/{count}")

    @property
    def spec(self) -> StudySpec:
        return STUDIES[self.study]


def quick_params(
    base: TrainConfig, *, image_size: int | None = None, epochs: int | None = None, max_examples: int | None = None
) -> TrainConfig:
    """The ``--quick`` settings: tiny images, 1 epoch, 48 examples per split (explicit values win)."""
    return replace(
        base,
        image_size=image_size or QUICK_IMAGE_SIZE,
        epochs=epochs or QUICK_EPOCHS,
        max_examples=max_examples or QUICK_MAX_EXAMPLES,
        dense_units=min(base.dense_units, 64),
    )


# --------------------------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class StudyData:
    """One dataset at one image size, as arrays (float32 pixels 0-255, int labels), shared by all variants."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    channels: int
    splits: Any  # the DatasetSplits it came from (test_records() gives the original test images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def as_rgb(self) -> StudyData:
        """Grey images repeated to 3 channels (pretrained backbones take RGB); RGB data is returned as is."""
        if self.channels == 3:
            return self
        rgb = {k: np.repeat(getattr(self, k), 3, axis=-1) for k in ("x_train", "x_val", "x_test")}
        return replace(self, channels=3, **rgb)

    def train_indices(self, per_class: int | None, seed: int) -> np.ndarray:
        """Indices of the training images to use: all, or the first ``per_class`` of each class in a seeded order.

        The order is seeded and independent of ``per_class``, so smaller subsets are contained in larger ones.
        """
        if per_class is None:
            return np.arange(len(self.y_train))
        rng = np.random.default_rng(seed)
        chosen: list[np.ndarray] = []
        for c in range(self.num_classes):
            idx = np.flatnonzero(self.y_train == c)
            chosen.append(rng.permutation(idx)[:per_class])
        return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _as_arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for batch in dataset.as_numpy_iterator():
        x, y = batch[0], batch[1]
        y = np.asarray(y)
        if y.ndim == 2:  # one-hot
            y = y.argmax(axis=1)
        xs.append(np.asarray(x, dtype=np.float32))
        ys.append(y.astype(np.int64).reshape(-1))
    if not xs:
        raise StudyError("a split of the dataset is empty")
    return np.concatenate(xs), np.concatenate(ys)


def _canonical_order(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by (label, content hash): the arrays no longer depend on the loader's shuffle order."""
    keys = [
        (int(label), hashlib.blake2b(img.tobytes(), digest_size=8).digest()) for img, label in zip(x, y, strict=True)
    ]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return x[order], y[order]


def prepare_data(dataset: str, *, image_size: int, seed: int, max_examples: int | None = None) -> StudyData:
    """Load a dataset spec once through ``training.data.load_dataset`` into arrays (no augmentation)."""
    splits = load_dataset(
        dataset, image_size=image_size, seed=seed, max_examples=max_examples, batch_size=256, augment="none"
    )
    x_train, y_train = _canonical_order(*_as_arrays(splits.train))
    x_val, y_val = _as_arrays(splits.val)
    x_test, y_test = _as_arrays(splits.test)
    return StudyData(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        class_names=tuple(splits.class_names),
        channels=int(x_train.shape[-1]),
        splits=splits,
    )


def make_augmenter(augment: str, seed: int) -> Callable[[Any], Any] | None:
    """A batch augmentation (pixels 0-255 in and out) for tf.data, or None for ``none``.

    ``basic`` is the chapter's: horizontal flip, brightness and contrast; ``randaugment`` is keras' RandAugment.
    """
    if augment not in AUGMENTATIONS:
        raise StudyError(f"unknown augment {augment!r}; expected one of {', '.join(AUGMENTATIONS)}")
    if augment == "none":
        return None
    import keras
    import tensorflow as tf

    if augment == "basic":
        layers = [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomBrightness(0.2, value_range=(0.0, 255.0), seed=seed + 1),
            keras.layers.RandomContrast(0.2, seed=seed + 2),
        ]
    else:
        layers = [keras.layers.RandAugment(value_range=(0.0, 255.0), seed=seed)]

    def apply(images: Any) -> Any:
        grey = images.shape[-1] == 1
        out = tf.repeat(images, 3, axis=-1) if grey else images  # RandAugment's colour ops expect RGB
        for layer in layers:
            out = layer(out, training=True)
        if grey:
            out = tf.reduce_mean(out, axis=-1, keepdims=True)
        return tf.clip_by_value(tf.cast(out, tf.float32), 0.0, 255.0)

    return apply


def array_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    augmenter: Callable[[Any], Any] | None = None,
) -> Any:
    """A batched tf.data pipeline over arrays: seeded reshuffle each epoch if ``shuffle_seed`` is given, then the
    batch augmentation, then prefetch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augmenter is not None:
        ds = ds.map(lambda images, labels: (augmenter(images), labels), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------------------------------------------------
# Training one run


@dataclass(frozen=True)
class RunResult:
    """What one variant produced."""

    variant: str
    params: TrainConfig
    history: dict[str, list[float]]
    val_accuracy: float
    test_accuracy: float
    epoch_seconds: tuple[float, ...]
    wall_seconds: float
    train_examples: int
    per_class: int | None = None  # training images per class (None = all)

    @property
    def epochs_run(self) -> int:
        return len(self.history.get("val_accuracy", ()))

    @property
    def best_epoch(self) -> int:
        """1-based epoch of the best validation accuracy (the first one, if tied): the epochs to converge."""
        val = self.history.get("val_accuracy", [])
        return int(np.argmax(val)) + 1 if val else 0

    @property
    def seconds_per_epoch(self) -> float:
        """Mean epoch time without the first epoch (graph tracing), or the first if it is the only one."""
        later = self.epoch_seconds[1:] or self.epoch_seconds
        return float(np.mean(later)) if later else 0.0


def _write_hparams_config(tb_dir: Path, varies: Iterable[str]) -> None:
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    with tf.summary.create_file_writer(str(tb_dir)).as_default():
        hp.hparams_config(
            hparams=[hp.HParam(name) for name in varies],
            metrics=[
                hp.Metric("test_accuracy", display_name="test accuracy"),
                hp.Metric("val_accuracy", display_name="val accuracy (restored best)"),
                hp.Metric("epoch_accuracy", group="validation", display_name="val accuracy per epoch"),
            ],
        )


def fit_classifier(
    params: TrainConfig,
    data: StudyData,
    *,
    per_class: int | None = None,
    log_dir: Path | None = None,
    verbose: int | str = "auto",
    variant: str = "run",
) -> tuple[keras.Model, Any, RunResult]:
    """Fit ``params.model`` on ``data`` through ``training.fit.fit`` (``per_class`` training images per class, None =
    all) and evaluate it.

    The model is seeded just before it is built, so runs that differ only in one setting start from the same weights.
    Early stopping watches val_accuracy and restores the best weights. Returns (model, ModelInfo, RunResult).
    """
    start = time.perf_counter()
    if params.model in PRETRAINED_MODELS:
        data = data.as_rgb()
    idx = data.train_indices(per_class, params.seed)
    train_ds = array_dataset(
        data.x_train[idx],
        data.y_train[idx],
        params.batch_size,
        shuffle_seed=params.seed,
        augmenter=make_augmenter(params.augment, params.seed),
    )
    val_ds = array_dataset(data.x_val, data.y_val, max(params.batch_size, 64))
    test_ds = array_dataset(data.x_test, data.y_test, max(params.batch_size, 64))
    fitted = fit(
        params, FitData(train_ds, data.num_classes, data.channels, len(idx), val=val_ds), log_dir=log_dir,
        verbose=verbose,
    )
    model = fitted.model
    val_accuracy = float(model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"])
    test_accuracy = float(model.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"])
    result = RunResult(
        variant=variant,
        params=params,
        history=fitted.history,
        val_accuracy=val_accuracy,
        test_accuracy=test_accuracy,
        epoch_seconds=tuple(fitted.epoch_seconds),
        wall_seconds=time.perf_counter() - start,
        train_examples=len(idx),
        per_class=per_class,
    )
    if log_dir is not None:
        write_hparams(log_dir, hparams_of(params, per_class=per_class),
                      {"val_accuracy": val_accuracy, "test_accuracy": test_accuracy}, trial_id=variant)
    return model, fitted.info, result


# --------------------------------------------------------------------------------------------------------------------
# Aspect ratio


@dataclass(frozen=True)
class AspectBin:
    label: str
    low: float  # width / height, inclusive
    high: float  # exclusive


ASPECT_BINS: tuple[AspectBin, ...] = (
    AspectBin("tall <0.75", 0.0, 0.75),
    AspectBin("0.75-0.9", 0.75, 0.9),
    AspectBin("square 0.9-1.11", 0.9, 1.11),
    AspectBin("1.11-1.5", 1.11, 1.5),
    AspectBin("1.5-2", 1.5, 2.0),
    AspectBin("wide >=2", 2.0, math.inf),
)


def aspect_bin_of(aspect: float, bins: Sequence[AspectBin] = ASPECT_BINS) -> AspectBin:
    """The bin of a width/height ratio."""
    for b in bins:
        if b.low <= aspect < b.high:
            return b
    raise StudyError(f"aspect ratio {aspect} is outside every bin")


def _decode_original(encoded: bytes, channels: int) -> np.ndarray:
    """An original test image as float32 HxWxC 0-255; transparency is composited onto grey 128 as in training."""
    with Image.open(io.BytesIO(encoded)) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
            im = Image.alpha_composite(background, rgba)
        im = im.convert("L" if channels == 1 else "RGB")
        arr = np.asarray(im, dtype=np.float32)
    return arr[..., None] if arr.ndim == 2 else arr


def square_image(image: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Make an HxWxC image ``size``x``size``: ``pad`` (keep aspect, pad with zeros, as the training pipeline does),
    ``stretch`` (distort) or ``crop`` (centre square, then resize)."""
    import tensorflow as tf

    if mode == "pad":
        out = tf.image.resize_with_pad(image, size, size)
    elif mode == "stretch":
        out = tf.image.resize(image, (size, size))
    elif mode == "crop":
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        out = tf.image.resize(image[top : top + side, left : left + side], (size, size))
    else:
        raise StudyError(f"unknown square mode {mode!r}; expected one of {', '.join(SQUARE_MODES)}")
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 255.0)


@dataclass(frozen=True)
class AspectOutcomes:
    """Per test image: its aspect ratio (width / height) and, per square mode, whether the model was right."""

    aspects: np.ndarray
    correct: Mapping[str, np.ndarray]

    def pooled(self, other: AspectOutcomes) -> AspectOutcomes:
        """Both sets of images together (e.g. the test splits of two seeds)."""
        return AspectOutcomes(
            np.concatenate([self.aspects, other.aspects]),
            {m: np.concatenate([self.correct[m], other.correct[m]]) for m in self.correct},
        )

    def overall(self) -> dict[str, float]:
        return {m: float(c.mean()) for m, c in self.correct.items()}

    def rows(self, bins: Sequence[AspectBin] = ASPECT_BINS) -> list[dict[str, Any]]:
        """Accuracy per (mode, bin); empty bins are kept with count 0 and accuracy NaN."""
        bin_of = [aspect_bin_of(float(a), bins) for a in self.aspects]
        rows: list[dict[str, Any]] = []
        for mode, correct in self.correct.items():
            for b in bins:
                mask = np.asarray([x is b for x in bin_of], dtype=bool)
                n = int(mask.sum())
                k = int(correct[mask].sum()) if n else 0
                rows.append(
                    {
                        "mode": mode,
                        "bin": b.label,
                        "low": b.low,
                        "high": b.high,
                        "count": n,
                        "correct": k,
                        "accuracy": (k / n) if n else float("nan"),
                    }
                )
        return rows


def aspect_outcomes(
    model: keras.Model,
    records: Iterable[Any],
    *,
    image_size: int,
    channels: int,
    modes: Sequence[str] = SQUARE_MODES,
) -> AspectOutcomes:
    """Predict the original test images (records with ``encoded`` bytes and ``label``) after making them square
    each way in ``modes``."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    for rec in records:
        images.append(_decode_original(rec.encoded, channels))
        labels.append(int(rec.label))
    if not images:
        raise StudyError("the dataset has no test records to measure aspect ratios on")
    y = np.asarray(labels)
    correct: dict[str, np.ndarray] = {}
    for mode in modes:
        batch = np.stack([square_image(img, image_size, mode) for img in images])
        pred = np.asarray(model.predict(batch, verbose=0, batch_size=64)).argmax(axis=1)
        correct[mode] = pred == y
    aspects = np.asarray([img.shape[1] / img.shape[0] for img in images], dtype=np.float64)
    return AspectOutcomes(aspects, correct)


def accuracy_by_aspect_ratio(
    model: keras.Model,
    records: Iterable[Any],
    *,
    image_size: int,
    channels: int,
    modes: Sequence[str] = SQUARE_MODES,
    bins: Sequence[AspectBin] = ASPECT_BINS,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Accuracy per (mode, aspect bin) on original test images, and the overall accuracy per mode."""
    outcomes = aspect_outcomes(model, records, image_size=image_size, channels=channels, modes=modes)
    return outcomes.rows(bins), outcomes.overall()


# --------------------------------------------------------------------------------------------------------------------
# The study


@dataclass(frozen=True)
class StudyResult:
    config: StudyConfig
    runs: tuple[RunResult, ...]
    wall_seconds: float
    aspect_rows: tuple[dict[str, Any], ...] = ()
    trainings: tuple[RunResult, ...] = ()  # aspect-ratio: the model trained for each seed
    files: tuple[Path, ...] = ()


def normalized(values: Sequence[float]) -> list[float]:
    """Each value divided by the largest (the chapter's 'accuracy normalised to the best run'); all 0 if max is 0."""
    best = max(values, default=0.0)
    return [v / best if best > 0 else 0.0 for v in values]


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", disable=not enabled, file=sys.stderr)


def execute_study(config: StudyConfig) -> StudyResult:
    """Run every variant of ``config.study`` (same seed, same data) and write the results under ``config.out``.

    The study runs seeded (``training.fit.seeded``), with TF op determinism on if ``config.deterministic``."""
    with seeded(config.base.seed, deterministic=config.deterministic):
        return _execute_study(config)


def _execute_study(config: StudyConfig) -> StudyResult:
    spec = config.spec
    variants = spec.variants(config.quick, config.variants)
    out = Path(config.out)
    tb_dir = out / "tb"
    out.mkdir(parents=True, exist_ok=True)
    if config.shard is None or config.shard[0] == 0:  # one hparams config per study, also when sharded
        varies = sorted({k for v in variants for k in v.overrides} | {"per_class" for v in variants if v.per_class})
        _write_hparams_config(tb_dir, varies or list(hparams_of(config.base, per_class=None)))

    started_at, start = time.time(), time.perf_counter()
    cache: dict[tuple[Any, ...], StudyData] = {}

    def data_for(p: TrainConfig) -> StudyData:
        key = (p.dataset, p.size, p.seed, p.max_examples)
        if key not in cache:
            cache.clear()  # one dataset at a time in memory
            cache[key] = prepare_data(p.dataset, image_size=p.size, seed=p.seed, max_examples=p.max_examples)
        return cache[key]

    runs: list[RunResult] = []
    trainings: list[RunResult] = []
    outcomes: list[AspectOutcomes] = []
    seeds = list(config.seeds or (config.base.seed,))
    # A shard's share: every N-th unit of work, from its index (the seeds of aspect-ratio, else the variants).
    index, count = config.shard or (0, 1)
    if spec.trains_once:
        seeds = seeds[index::count]
        todo: list[Variant] = []
    else:
        todo = variants[index::count]
    bar = _progress(len(seeds) if spec.trains_once else len(todo), f"study {spec.name}", config.progress)
    try:
        if spec.trains_once:
            modes = [v.name for v in variants]
            for seed in seeds:
                params = replace(config.base, seed=seed)
                bar.set_postfix_str(f"training seed {seed}")
                data = data_for(params)
                model, _, trained = fit_classifier(
                    params, data, log_dir=tb_dir / f"seed-{seed}", verbose=config.verbose, variant=f"seed {seed}"
                )
                outcomes.append(
                    aspect_outcomes(
                        model,
                        data.splits.test_records(),
                        image_size=params.size,
                        channels=int(model.input_shape[-1]),
                        modes=modes,
                    )
                )
                trainings.append(trained)
                bar.update(1)
        else:
            for v in todo:
                bar.set_postfix_str(v.name)
                params = v.apply(config.base)
                run_dir = tb_dir / _safe_name(v.name)
                _, _, result = fit_classifier(
                    params,
                    data_for(params),
                    per_class=v.per_class,
                    log_dir=run_dir,
                    verbose=config.verbose,
                    variant=v.name,
                )
                runs.append(result)
                bar.update(1)
                bar.write(
                    f"{spec.name} {v.name}: val {result.val_accuracy:.3f} test {result.test_accuracy:.3f} "
                    f"best epoch {result.best_epoch}/{result.epochs_run} {result.seconds_per_epoch:.1f} s/epoch"
                )
    finally:
        bar.close()
    wall = time.perf_counter() - start
    if config.shard is not None:
        shard = {
            "format": _SHARD_FORMAT,
            "study": _study_json(config),
            "shard": {"index": index, "count": count},
            "started_at": started_at,
            "finished_at": started_at + wall,
            "wall_seconds": wall,
            "runs": [_run_json(r) for r in runs],
            "trainings": [
                {"seed": seed, "run": _run_json(run), "aspects": o.aspects.tolist(),
                 "correct": {m: c.astype(bool).tolist() for m, c in o.correct.items()}}
                for seed, run, o in zip(seeds if spec.trains_once else [], trainings, outcomes, strict=True)
            ],
        }
        path = shard_path(out, index, count)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(shard, indent=1))
        partial.replace(path)  # whole or absent: the merge (and k8s' wait for N files) never sees half a file
        return StudyResult(config, tuple(runs), wall, trainings=tuple(trainings), files=(path,))
    result = _study_result(config, variants, runs, trainings, outcomes, wall)
    files = write_results(result)
    return replace(result, files=tuple(files))


def _study_result(
    config: StudyConfig,
    variants: Sequence[Variant],
    runs: Sequence[RunResult],
    trainings: Sequence[RunResult],
    outcomes: Sequence[AspectOutcomes],
    wall_seconds: float,
) -> StudyResult:
    """The study's result from its runs (aspect-ratio: from the trainings and their outcomes, pooled in order)."""
    if not config.spec.trains_once:
        return StudyResult(config, tuple(runs), wall_seconds)
    if not trainings:
        raise StudyError("aspect-ratio has no trained model to evaluate")
    pooled = outcomes[0]
    for more in outcomes[1:]:
        pooled = pooled.pooled(more)
    overall = pooled.overall()
    first = trainings[0]
    aspect_runs = [
        replace(
            first,
            variant=v.name,
            val_accuracy=float(np.mean([t.val_accuracy for t in trainings])),
            test_accuracy=overall[v.name],
            wall_seconds=sum(t.wall_seconds for t in trainings),
        )
        for v in variants
    ]
    return StudyResult(config, tuple(aspect_runs), wall_seconds, tuple(pooled.rows()), tuple(trainings))


# --------------------------------------------------------------------------------------------------------------------
# Shards: one study over several processes or machines

_SHARD_FORMAT = "glimpse-study-shard/1"


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (shard I of N, 0 <= I < N) as (I, N); StudyError otherwise."""
    left, sep, right = str(text).strip().partition("/")
    try:
        if not sep:
            raise ValueError
        index, count = int(left), int(right)
    except ValueError:
        raise StudyError(f"--shard must be I/N (shard I of N, counted from 0), got {text!r}") from None
    if not 0 <= index < count:
        raise StudyError(f"--shard must be I/N with 0 <= I < N, got {text!r}")
    return index, count


def shard_path(out: Path, index: int, count: int) -> Path:
    """Where shard ``index`` of ``count`` writes its runs under a study's directory."""
    return Path(out) / "shards" / f"shard-{index}-of-{count}.json"


def _study_json(config: StudyConfig) -> dict[str, Any]:
    """What every shard of one study shares (the merge checks it is the same in all of them)."""
    return {
        "name": config.study,
        "base": asdict(config.base),
        "quick": config.quick,
        "variants": list(config.variants) if config.variants is not None else None,
        "seeds": list(config.seeds) if config.seeds is not None else None,
        "deterministic": config.deterministic,
    }


def _run_json(run: RunResult) -> dict[str, Any]:
    return {
        "variant": run.variant,
        "params": asdict(run.params),
        "history": run.history,
        "val_accuracy": run.val_accuracy,
        "test_accuracy": run.test_accuracy,
        "epoch_seconds": list(run.epoch_seconds),
        "wall_seconds": run.wall_seconds,
        "train_examples": run.train_examples,
        "per_class": run.per_class,
    }


def _run_from_json(data: Mapping[str, Any]) -> RunResult:
    return RunResult(
        variant=str(data["variant"]),
        params=TrainConfig(**data["params"]),
        history={k: [float(x) for x in v] for k, v in data["history"].items()},
        val_accuracy=float(data["val_accuracy"]),
        test_accuracy=float(data["test_accuracy"]),
        epoch_seconds=tuple(float(x) for x in data["epoch_seconds"]),
        wall_seconds=float(data["wall_seconds"]),
        train_examples=int(data["train_examples"]),
        per_class=None if data["per_class"] is None else int(data["per_class"]),
    )


def _read_shards(directory: Path) -> list[dict[str, Any]]:
    paths = sorted((Path(directory) / "shards").glob("shard-*-of-*.json"))
    if not paths:
        raise StudyError(f"no shard files (shards/shard-I-of-N.json) under {directory}")
    shards = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise StudyError(f"{path} is not a shard file: {e}") from e
        if not isinstance(data, dict) or data.get("format") != _SHARD_FORMAT:
            raise StudyError(f"{path} is not a shard file of this version ({_SHARD_FORMAT})")
        shards.append(data)
    counts = {s["shard"]["count"] for s in shards}
    if len(counts) != 1:
        raise StudyError(f"shard files of different splits under {directory}: N = {sorted(counts)}")
    (count,) = counts
    indices = sorted(s["shard"]["index"] for s in shards)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        raise StudyError(f"{directory} holds shards {indices} of {count}; missing {missing}")
    if any(s["study"] != shards[0]["study"] for s in shards):
        raise StudyError(f"the shard files under {directory} are not of the same study and settings")
    return sorted(shards, key=lambda s: s["shard"]["index"])


def merge_shards(directory: Path, out: Path | None = None, *, study: str | None = None) -> StudyResult:
    """Read the N shard files of ``directory`` and write the study's results (to ``out``, default ``directory``):
    the same results.csv, results.md, history.json and plots as ``execute_study`` in one process. ``study``, if
    given, must be the shards' study."""
    shards = _read_shards(directory)
    described = shards[0]["study"]
    if study is not None and described["name"] != study:
        raise StudyError(f"the shards under {directory} are of study {described['name']!r}, not {study!r}")
    config = StudyConfig(
        study=described["name"],
        base=TrainConfig(**described["base"]),
        out=Path(out) if out is not None else Path(directory),
        quick=bool(described["quick"]),
        variants=tuple(described["variants"]) if described["variants"] is not None else None,
        seeds=tuple(described["seeds"]) if described["seeds"] is not None else None,
        deterministic=bool(described["deterministic"]),
    )
    spec = config.spec
    variants = spec.variants(config.quick, config.variants)
    wall = max(s["finished_at"] for s in shards) - min(s["started_at"] for s in shards)
    if spec.trains_once:
        by_seed = {t["seed"]: t for s in shards for t in s["trainings"]}
        seeds = list(config.seeds or (config.base.seed,))
        if sorted(by_seed) != sorted(seeds) or sum(len(s["trainings"]) for s in shards) != len(seeds):
            raise StudyError(f"the shards trained seeds {sorted(by_seed)}, the study needs each of {seeds} once")
        trainings = [_run_from_json(by_seed[seed]["run"]) for seed in seeds]
        outcomes = [
            AspectOutcomes(np.asarray(by_seed[seed]["aspects"], dtype=np.float64),
                           {m: np.asarray(c, dtype=bool) for m, c in by_seed[seed]["correct"].items()})
            for seed in seeds
        ]
        result = _study_result(config, variants, [], trainings, outcomes, wall)
    else:
        by_variant = {r["variant"]: r for s in shards for r in s["runs"]}
        names = [v.name for v in variants]
        if sorted(by_variant) != sorted(names) or sum(len(s["runs"]) for s in shards) != len(names):
            raise StudyError(f"the shards ran variants {sorted(by_variant)}, the study needs each of {names} once")
        runs = [_run_from_json(by_variant[name]) for name in names]
        result = _study_result(config, variants, runs, [], [], wall)
    files = write_results(result)
    return replace(result, files=tuple(files))


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "run"


# --------------------------------------------------------------------------------------------------------------------
# Writing results


def _rows(result: StudyResult) -> list[dict[str, Any]]:
    norm = normalized([r.test_accuracy for r in result.runs])
    rows = []
    for run, n in zip(result.runs, norm, strict=True):
        p = run.params
        rows.append(
            {
                "study": result.config.study,
                "variant": run.variant,
                "model": p.model,
                "weights": p.weights,
                "image_size": p.size,
                "batch_size": p.batch_size,
                "lr": p.lr,
                "optimizer": p.optimizer,
                "unfreeze": p.unfreeze,
                "per_class": "all" if run.per_class is None else run.per_class,
                "train_examples": run.train_examples,
                "val_accuracy": round(run.val_accuracy, 4),
                "test_accuracy": round(run.test_accuracy, 4),
                "normalized_accuracy": round(n, 4),
                "best_epoch": run.best_epoch,
                "epochs_run": run.epochs_run,
                "seconds_per_epoch": round(run.seconds_per_epoch, 3),
                "first_epoch_seconds": round(run.epoch_seconds[0], 3) if run.epoch_seconds else 0.0,
                "wall_seconds": round(run.wall_seconds, 2),
            }
        )
    return rows


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row[c] for c in columns})
    return path


def _plot_val_accuracy(path: Path, result: StudyResult) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    spec = result.config.spec
    # aspect-ratio: one training curve per seed, not one per evaluation mode
    curves = result.trainings if spec.trains_once and result.trainings else result.runs
    for run in curves:
        val = run.history.get("val_accuracy", [])
        ax.plot(range(1, len(val) + 1), val, marker="o", markersize=3, label=run.variant)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{spec.title} ({result.runs[0].params.dataset}, {result.runs[0].params.model})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title="training" if spec.trains_once else spec.varies, fontsize=8, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _plot_normalized(path: Path, rows: Sequence[Mapping[str, Any]], result: StudyResult) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    names = [str(r["variant"]) for r in rows]
    values = [float(r["normalized_accuracy"]) for r in rows]
    bars = ax.bar(names, values, color="#4c72b0")
    for b, r in zip(bars, rows, strict=True):
        ax.annotate(
            f"{float(r['test_accuracy']):.2f}",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("test accuracy / best")
    ax.set_xlabel(result.config.spec.varies)
    ax.set_title(f"{result.config.spec.title}: normalised accuracy (labels: test accuracy)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _plot_aspect(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    modes = list(dict.fromkeys(r["mode"] for r in rows))
    bins = list(dict.fromkeys(r["bin"] for r in rows))
    counts = {r["bin"]: r["count"] for r in rows}
    width = 0.8 / max(len(modes), 1)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for i, mode in enumerate(modes):
        acc = [next(float(r["accuracy"]) for r in rows if r["mode"] == mode and r["bin"] == b) for b in bins]
        xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(bins))]
        ax.bar(xs, [0 if math.isnan(a) else a for a in acc], width=width, label=mode)
    ax.set_xticks(range(len(bins)), [f"{b}\n(n={counts[b]})" for b in bins], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.set_xlabel("aspect ratio (width / height) of the original image")
    ax.legend(title="made square by", fontsize=8, title_fontsize=8)
    ax.set_title("Accuracy by aspect ratio", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}"


def _markdown(result: StudyResult, rows: Sequence[Mapping[str, Any]], images: Sequence[str]) -> str:
    spec = result.config.spec
    base = result.config.base
    lines = [
        f"# Study: {spec.title}",
        "",
        f"Dataset `{base.dataset}`, model `{base.model}` (weights {base.weights}), image size {base.size}, "
        f"batch {base.batch_size}, {base.optimizer} lr {base.lr}, up to {base.epochs} epochs (early stopping "
        f"patience {base.patience}), augment {base.augment}, seed {base.seed}"
        + (f", at most {base.max_examples} examples per split" if base.max_examples else "")
        + (" (quick)" if result.config.quick else "")
        + f". Wall time of the whole study: {result.wall_seconds:.0f} s.",
        "",
        f"Variants differ in: {spec.varies}. Normalised accuracy = test accuracy / best test accuracy of the study; "
        "epochs to converge = epoch of the best validation accuracy (weights restored from it); seconds per epoch "
        "excludes the first epoch (graph tracing), which is listed apart.",
        "",
        "| variant | normalised accuracy | test accuracy | val accuracy | epochs to converge | epochs run "
        "| s / epoch | first epoch s | train images |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['normalized_accuracy']:.3f} | {r['test_accuracy']:.3f} | {r['val_accuracy']:.3f} "
            f"| {r['best_epoch']} | {r['epochs_run']} | {r['seconds_per_epoch']:.2f} | {r['first_epoch_seconds']:.2f} "
            f"| {r['train_examples']} |"
        )
    if result.aspect_rows:
        modes = list(dict.fromkeys(r["mode"] for r in result.aspect_rows))
        bins = list(dict.fromkeys(r["bin"] for r in result.aspect_rows))
        seeds = result.config.seeds or (base.seed,)
        pooled_note = (
            f" pooled over the test splits of seeds {', '.join(map(str, seeds))} (one model per seed; val accuracy "
            "is their mean, the epoch columns are the first seed's)"
            if len(seeds) > 1
            else ""
        )
        lines += [
            "",
            f"Test accuracy by aspect-ratio bin (width / height of the original image){pooled_note}:",
            "",
            "| bin | n | " + " | ".join(modes) + " |",
            "|---|---|" + "---|" * len(modes),
        ]
        for b in bins:
            cells = [r for r in result.aspect_rows if r["bin"] == b]
            acc = {r["mode"]: r["accuracy"] for r in cells}
            lines.append(f"| {b} | {cells[0]['count']} | " + " | ".join(_fmt(acc[m], 2) for m in modes) + " |")
    lines += [""] + [f"![{name}]({name})" for name in images] + [""]
    return "\n".join(lines)


def write_results(result: StudyResult) -> list[Path]:
    """results.csv, results.md, history.json and the PNG plots of a study; returns the paths written."""
    if not result.runs:
        raise StudyError("a study without runs has no results")
    out = Path(result.config.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = _rows(result)
    files = [_write_csv(out / "results.csv", rows, RESULT_COLUMNS)]
    history = {
        run.variant: {
            "params": {**asdict(run.params), "image_size": run.params.size, "per_class": run.per_class},
            "history": run.history,
            "epoch_seconds": list(run.epoch_seconds),
        }
        for run in (result.trainings or result.runs)
    }
    (out / "history.json").write_text(json.dumps(history, indent=2))
    files.append(out / "history.json")
    images = [_plot_val_accuracy(out / "val_accuracy.png", result).name]
    images.append(_plot_normalized(out / "normalized_accuracy.png", rows, result).name)
    if result.aspect_rows:
        files.append(
            _write_csv(
                out / "aspect_ratio.csv",
                result.aspect_rows,
                ("mode", "bin", "low", "high", "count", "correct", "accuracy"),
            )
        )
        images.append(_plot_aspect(out / "accuracy_by_aspect_ratio.png", result.aspect_rows).name)
    files += [out / name for name in images]
    (out / "results.md").write_text(_markdown(result, rows, images))
    files.append(out / "results.md")
    return files


# --------------------------------------------------------------------------------------------------------------------
# CLI


def add_run_flags(p: argparse.ArgumentParser, *, model_default: str = "efficientnet_lite0") -> None:
    """Flags shared by ``study`` and ``tune``."""
    p.add_argument("--dataset", default="tuxpaint", help="tuxpaint, fashion_mnist, folder:PATH or tfds:NAME")
    p.add_argument(
        "--model",
        default=model_default,
        help="efficientnet_lite0, efficientnet_lite2 (offline pretrained), mobilenet_v2, resnet50, scratch, scratch_bn",
    )
    p.add_argument("--weights", default="imagenet", help="imagenet, none, or a weights file")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"input side in px (default: {STUDY_IMAGE_SIZE} pretrained models, 64 scratch, 28 scratch on "
        "fashion_mnist)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-examples", type=int, default=None, help="cap on each split (default: no cap)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny run for tests: {QUICK_IMAGE_SIZE} px, {QUICK_EPOCHS} epoch, {QUICK_MAX_EXAMPLES} examples per "
        "split, two variants",
    )


def configure_study(p: argparse.ArgumentParser) -> None:
    """Flags of ``glimpse study``; imports nothing heavy."""
    p.add_argument("name", choices=list(STUDIES), metavar="NAME", help="one of: " + ", ".join(STUDIES))
    add_run_flags(p)
    p.add_argument("--epochs", type=int, default=None, help="max epochs per run (default 10; quick 1)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--patience", type=int, default=3, help="early stopping patience on val_accuracy")
    p.add_argument("--unfreeze", type=float, default=0.0, help="fraction of backbone layers trainable (0 = frozen)")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--dense-units", type=int, default=256)
    p.add_argument("--augment", choices=AUGMENTATIONS, default="basic")
    p.add_argument(
        "--variants", default=None, help="comma-separated variants instead of the study's defaults, e.g. 0.01,0.001"
    )
    p.add_argument("--out", type=Path, default=None, help="output directory (default: out/studies/NAME)")
    p.add_argument(
        "--seeds",
        default=None,
        help="aspect-ratio only: comma-separated seeds; trains one model per seeded split and pools their test images",
    )
    p.add_argument(
        "--no-determinism",
        action="store_true",
        help="skip tf.config.experimental.enable_op_determinism (faster on some ops)",
    )
    p.add_argument("--verbose", choices=("auto", "0", "1", "2"), default="auto", help="Keras' per-run progress")
    fan_out = p.add_mutually_exclusive_group()
    fan_out.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run only shard I of N (counted from 0: every N-th run from the I-th) and write OUT/shards/"
        "shard-I-of-N.json; merge the N shards with --merge",
    )
    fan_out.add_argument(
        "--merge",
        type=Path,
        default=None,
        metavar="DIR",
        help="train nothing: merge the shard files of DIR (written by --shard) into the study's results, in --out "
        "(default DIR)",
    )


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise StudyError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _config_from_args(args: argparse.Namespace) -> StudyConfig:
    image_size = args.image_size or default_image_size(args.dataset, args.model, pretrained_size=STUDY_IMAGE_SIZE)
    base = TrainConfig(
        dataset=args.dataset,
        model=args.model,
        weights=args.weights,
        image_size=image_size,
        epochs=args.epochs or 10,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        patience=args.patience,
        unfreeze=args.unfreeze,
        dropout=args.dropout,
        dense_units=args.dense_units,
        augment=args.augment,
        seed=args.seed,
        max_examples=args.max_examples,
    )
    if args.quick:
        base = quick_params(base, image_size=args.image_size, epochs=args.epochs, max_examples=args.max_examples)
    variants = tuple(v for v in args.variants.split(",") if v.strip()) if args.variants else None
    seeds = _int_list(args.seeds, "--seeds") if args.seeds else None
    return StudyConfig(
        study=args.name,
        base=base,
        out=args.out or Path("out") / "studies" / args.name,
        quick=args.quick,
        variants=variants,
        seeds=seeds,
        deterministic=not args.no_determinism,
        verbose=args.verbose if args.verbose == "auto" else int(args.verbose),
        shard=parse_shard(args.shard) if getattr(args, "shard", None) else None,
    )


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a missing resource (one line on stderr, exit 2) rather than a bug."""
    return (ValueError, FileNotFoundError, NotADirectoryError, DatasetUnavailable, ModelUnavailable, ExportError)


def run_study(args: argparse.Namespace) -> int:
    """``glimpse study NAME ...``: 0 on success, 2 with a one-line message on bad input."""
    if getattr(args, "merge", None) is not None:
        try:
            result = merge_shards(args.merge, args.out, study=args.name)
        except user_errors() as e:
            print(f"glimpse study: {e}", file=sys.stderr)
            return 2
        return _report(result)
    try:
        config = _config_from_args(args)
    except ValueError as e:  # StudyError, or a TrainConfig value out of range
        print(f"glimpse study: {e}", file=sys.stderr)
        return 2
    try:
        result = execute_study(config)
    except user_errors() as e:
        print(f"glimpse study: {e}", file=sys.stderr)
        return 2
    if config.shard is not None:
        index, count = config.shard
        print(
            f"study {config.study} shard {index}/{count}: {len(result.runs or result.trainings)} runs in "
            f"{result.wall_seconds:.0f} s; wrote {result.files[0]}"
        )
        return 0
    return _report(result)


def _report(result: StudyResult) -> int:
    config = result.config
    best = max(result.runs, key=lambda r: r.test_accuracy)
    print(
        f"study {config.study}: {len(result.runs)} runs in {result.wall_seconds:.0f} s; best {best.variant} "
        f"(test accuracy {best.test_accuracy:.3f}); results in {config.out}/results.md"
    )
    return 0
