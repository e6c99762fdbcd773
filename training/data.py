"""Datasets for ``glimpse train``: offline sets by default, folders, and TFDS for users who are online.

Specs:
- ``tuxpaint``: the 208 real photos of Debian's tuxpaint-stamps-default in 8 classes, alpha composited onto grey,
  split stratified 70/15/15 by seed.
- ``fashion_mnist``: Debian's dataset-fashion-mnist (60k train, a seeded 10% of it validation, 10k test), grey.
- ``folder:PATH``: one sub-folder per class, any common image format, split stratified 80/10/10 by seed.
- ``tfds:NAME[:TRAIN,VAL,TEST]``: tensorflow_datasets with percent splits (default the chapter's 80/10/10 of
  ``train``); needs the package and internet, and says so clearly otherwise.

Every split yields float32 pixels 0-255 resized with padding to the requested size (the models scale them), and
labels as int32. The pipeline is the chapter's: ``map -> cache -> shuffle -> batch -> augment -> prefetch``.
"""

from __future__ import annotations

import gzip
import io
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "AUGMENTATIONS",
    "DATASET_SPECS",
    "DatasetSplits",
    "DatasetUnavailable",
    "ExamplePool",
    "Record",
    "TUXPAINT_CLASSES",
    "TUXPAINT_ROOT",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "load_dataset",
    "load_pool",
    "load_tuxpaint_records",
    "stratified_split",
]

TUXPAINT_ROOT = Path("/usr/share/tuxpaint/stamps")
# class -> sub-folder of the stamps tree (photos only: paths with "cartoon" are skipped)
TUXPAINT_CLASSES: dict[str, str] = {
    "mammal": "animals/mammals",
    "bird": "animals/birds",
    "fruit": "food/fruit",
    "flower": "plants/flowers",
    "vehicle": "vehicles",
    "vegetable": "food/vegetables",
    "fish": "animals/fish",
    "insect": "animals/insects",
}
TUXPAINT_BACKGROUND = (128, 128, 128)
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
DATASET_SPECS = ("tuxpaint", "fashion_mnist", "folder:PATH", "tfds:NAME[:TRAIN,VAL,TEST]")
AUGMENTATIONS = ("basic", "randaugment", "none", "shift", "flip")


class DatasetUnavailable(RuntimeError):
    """The dataset cannot be had here (missing package, no internet, missing Debian package, empty folder)."""


@dataclass(frozen=True)
class Record:
    """One original example: the image file as encoded bytes, its label and class name."""

    encoded: bytes
    label: int
    label_name: str


@dataclass(frozen=True)
class DatasetSplits:
    train: Any  # tf.data.Dataset of (float32 [B,S,S,C] 0-255, int32 [B])
    val: Any
    test: Any
    class_names: tuple[str, ...]
    num_train: int
    num_val: int
    num_test: int
    channels: int
    image_size: int
    spec: str
    _test_records: Callable[[], Iterator[Record]] = field(repr=False, compare=False, default=lambda: iter(()))
    _train_and_val: Callable[[], Any] | None = field(repr=False, compare=False, default=None)

    def test_records(self) -> Iterator[Record]:
        """The held-out split's original images (encoded), for the exporter's examples TFRecord."""
        return self._test_records()

    def train_and_val(self) -> Any:
        """The training and validation examples together, shuffled and augmented like ``train`` (for a refit)."""
        if self._train_and_val is None:
            raise ValueError(f"dataset {self.spec!r} cannot merge its training and validation splits")
        return self._train_and_val()

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "class_names": list(self.class_names),
            "num_train": self.num_train,
            "num_val": self.num_val,
            "num_test": self.num_test,
            "channels": self.channels,
            "image_size": self.image_size,
        }


# ---------------------------------------------------------------------------------------------------------------
# Splitting


def stratified_split(
    labels: Sequence[int], fractions: tuple[float, float, float], seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Indices of train/val/test, stratified by label and reproducible for a seed.

    Every class with at least three examples gets at least one validation and one test example.
    """
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for y in sorted(by_class):
        idx = by_class[y]
        rng.shuffle(idx)
        n = len(idx)
        n_val = round(n * fractions[1])
        n_test = round(n * fractions[2])
        if n >= 3:
            n_val, n_test = max(1, n_val), max(1, n_test)
        val += idx[:n_val]
        test += idx[n_val : n_val + n_test]
        train += idx[n_val + n_test :]
    for part in (train, val, test):
        rng.shuffle(part)
    return train, val, test


def _cap(indices: list[int], max_examples: int | None) -> list[int]:
    return indices if max_examples is None else indices[:max_examples]


# ---------------------------------------------------------------------------------------------------------------
# Image files (tuxpaint, folder)


def _composite_rgb(image: Image.Image, background: tuple[int, int, int] = TUXPAINT_BACKGROUND) -> np.ndarray:
    """RGB uint8 array; transparency composited onto ``background``; first frame of animations."""
    image.seek(0)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return np.asarray(canvas.convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[-1] == 1 else array).save(buf, format="PNG")
    return buf.getvalue()


@lru_cache(maxsize=8)
def _load_image_folder(root: str, class_dirs: tuple[tuple[str, str], ...], skip: str | None) -> tuple[
    tuple[np.ndarray, ...], tuple[int, ...]
]:
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, (_, sub) in enumerate(class_dirs):
        folder = Path(root) / sub
        files = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not (skip and skip in str(p))
        )
        for path in files:
            try:
                with Image.open(path) as im:
                    images.append(_composite_rgb(im))
            except (OSError, ValueError) as e:
                raise DatasetUnavailable(f"cannot read image {path}: {e}") from e
            labels.append(label)
    return tuple(images), tuple(labels)


def load_tuxpaint_records() -> tuple[tuple[np.ndarray, ...], tuple[int, ...], tuple[str, ...]]:
    """All Tux Paint photos as RGB arrays (grey background), labels and class names (cached per process)."""
    if not TUXPAINT_ROOT.is_dir():
        raise DatasetUnavailable(
            f"{TUXPAINT_ROOT} is missing: install the Debian package "
            "(sudo apt-get install --no-install-recommends tuxpaint-stamps-default)"
        )
    images, labels = _load_image_folder(str(TUXPAINT_ROOT), tuple(TUXPAINT_CLASSES.items()), "cartoon")
    return images, labels, tuple(TUXPAINT_CLASSES)


def _folder_records(path: Path) -> tuple[tuple[np.ndarray, ...], tuple[int, ...], tuple[str, ...]]:
    if not path.is_dir():
        raise DatasetUnavailable(f"folder:{path}: not a directory")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DatasetUnavailable(f"folder:{path}: needs one sub-folder per class (at least 2), found {classes}")
    images, labels = _load_image_folder(str(path), tuple((c, c) for c in classes), None)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes)) if labels else np.zeros(1)
    if not labels or counts.min() == 0:
        empty = [c for c, n in zip(classes, counts, strict=False) if n == 0]
        raise DatasetUnavailable(f"folder:{path}: no readable images in {empty or classes}")
    return images, labels, tuple(classes)


# ---------------------------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DatasetUnavailable(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise DatasetUnavailable(f"{path}: truncated IDX file")
    return array.reshape(dims)


@lru_cache(maxsize=1)
def _fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    files = {k: FASHION_MNIST_DIR / f"{k}-ubyte.gz" for k in
             ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise DatasetUnavailable(
            f"Fashion-MNIST files missing ({missing[0]}): install the Debian package "
            "(sudo apt-get install --no-install-recommends dataset-fashion-mnist)"
        )
    return (
        _read_idx(files["train-images-idx3"]),
        _read_idx(files["train-labels-idx1"]),
        _read_idx(files["t10k-images-idx3"]),
        _read_idx(files["t10k-labels-idx1"]),
    )


# ---------------------------------------------------------------------------------------------------------------
# Pipelines


def _augmenter(kind: str, channels: int, seed: int) -> Any:
    import keras

    if kind == "none":
        return None
    if kind == "basic":  # the chapter's: flips, brightness, contrast
        layers = [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomBrightness(0.2, value_range=(0.0, 255.0), seed=seed + 1),
            keras.layers.RandomContrast(0.2, seed=seed + 2),
        ]
    elif kind == "flip":  # mirror images only: pixel values and positions as photographed
        layers = [keras.layers.RandomFlip("horizontal", seed=seed)]
    elif kind == "shift":  # flips and shifts of up to a tenth of the side, edges extended: the pad-and-crop of
        # small-image training, which teaches position invariance and leaves brightness and contrast alone
        layers = [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 1),
        ]
    elif kind == "randaugment":  # the modern form of AutoAugment
        if channels != 3:
            raise ValueError("--augment randaugment needs RGB images")
        layers = [keras.layers.RandAugment(value_range=(0.0, 255.0), seed=seed)]
    else:
        raise ValueError(f"unknown augmentation {kind!r}; expected one of {', '.join(AUGMENTATIONS)}")
    return keras.Sequential(layers, name=f"augment_{kind}")


def _parallel_calls(stateful: bool) -> int | None:
    """AUTOTUNE, or sequential for a stateful map under op determinism.

    A map is stateful when it runs random layers or reads from a Python generator upstream; TF would run it
    sequentially anyway under determinism, after logging an error about rewriting the parallel map.
    """
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    deterministic = getattr(tf_config, "is_op_determinism_enabled", lambda: False)()
    return None if stateful and deterministic else tf.data.AUTOTUNE


def _pipeline(ds: Any, image_size: int, *, batch_size: int, seed: int, shuffle: bool, augment: Any,
              from_generator: bool = False) -> Any:
    import tensorflow as tf

    def prepare(image: Any, label: Any) -> tuple[Any, Any]:
        image = tf.cast(image, tf.float32)
        image = tf.image.resize_with_pad(image, image_size, image_size)
        return tf.clip_by_value(image, 0.0, 255.0), tf.cast(label, tf.int32)

    ds = ds.map(prepare, num_parallel_calls=_parallel_calls(from_generator)).cache()
    if shuffle:
        ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(lambda x, y: (tf.clip_by_value(augment(x, training=True), 0.0, 255.0), y),
                    num_parallel_calls=_parallel_calls(True))
    return ds.prefetch(tf.data.AUTOTUNE)


def _ragged_dataset(images: Sequence[np.ndarray], labels: Sequence[int]) -> Any:
    import tensorflow as tf

    channels = images[0].shape[-1] if images else 3

    def gen() -> Iterator[tuple[np.ndarray, int]]:
        yield from zip(images, labels, strict=True)

    ds = tf.data.Dataset.from_generator(
        gen,
        output_signature=(
            tf.TensorSpec(shape=(None, None, channels), dtype=tf.uint8),
            tf.TensorSpec(shape=(), dtype=tf.int64),
        ),
    )
    return ds.apply(tf.data.experimental.assert_cardinality(len(labels)))


def _from_arrays(
    spec: str,
    images: Sequence[np.ndarray],
    labels: Sequence[int],
    class_names: tuple[str, ...],
    fractions: tuple[float, float, float],
    *,
    image_size: int,
    seed: int,
    max_examples: int | None,
    batch_size: int,
    augment: str,
) -> DatasetSplits:
    tr, va, te = (_cap(p, max_examples) for p in stratified_split(labels, fractions, seed))
    channels = images[0].shape[-1]
    aug = _augmenter(augment, channels, seed)

    def make(idx: list[int], train: bool) -> Any:
        ds = _ragged_dataset([images[i] for i in idx], [labels[i] for i in idx])
        return _pipeline(ds, image_size, batch_size=batch_size, seed=seed, shuffle=train,
                         augment=aug if train else None, from_generator=True)

    def test_records() -> Iterator[Record]:
        for i in te:
            yield Record(_encode_png(images[i]), int(labels[i]), class_names[labels[i]])

    return DatasetSplits(make(tr, True), make(va, False), make(te, False), class_names, len(tr), len(va), len(te),
                         channels, image_size, spec, test_records, lambda: make(tr + va, True))


def _load_fashion_mnist(*, image_size: int, seed: int, max_examples: int | None, batch_size: int,
                        augment: str) -> DatasetSplits:
    import tensorflow as tf

    x_train, y_train, x_test, y_test = _fashion_mnist()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    n_val = len(x_train) // 10
    va, tr = order[:n_val], order[n_val:]
    te = np.arange(len(x_test))
    tr, va, te = (_cap(list(p), max_examples) for p in (tr, va, te))
    aug = _augmenter(augment, 1, seed)

    def make(x: np.ndarray, y: np.ndarray, train: bool) -> Any:
        ds = tf.data.Dataset.from_tensor_slices((x[..., None], y.astype(np.int64)))
        return _pipeline(ds, image_size, batch_size=batch_size, seed=seed, shuffle=train,
                         augment=aug if train else None)

    def test_records() -> Iterator[Record]:
        for i in te:
            yield Record(_encode_png(x_test[i]), int(y_test[i]), FASHION_MNIST_CLASSES[int(y_test[i])])

    return DatasetSplits(
        make(x_train[tr], y_train[tr], True),
        make(x_train[va], y_train[va], False),
        make(x_test[te], y_test[te], False),
        FASHION_MNIST_CLASSES, len(tr), len(va), len(te), 1, image_size, "fashion_mnist", test_records,
        lambda: make(x_train[tr + va], y_train[tr + va], True),
    )


def _load_tfds(spec: str, *, image_size: int, seed: int, max_examples: int | None, batch_size: int,
               augment: str) -> DatasetSplits:
    parts = spec.split(":", 2)
    if len(parts) < 2 or not parts[1]:
        raise ValueError("tfds spec is tfds:NAME[:TRAIN,VAL,TEST], e.g. tfds:oxford_flowers102")
    name = parts[1]
    splits = parts[2].split(",") if len(parts) == 3 else ["train[:80%]", "train[80%:90%]", "train[90%:]"]
    if len(splits) != 3:
        raise ValueError(f"tfds split spec needs three comma-separated splits (train,val,test), got {parts[2]!r}")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DatasetUnavailable(
            "tfds datasets need the tensorflow-datasets package (pip install tensorflow-datasets) and internet "
            "access to download; offline, use --dataset tuxpaint, fashion_mnist or folder:PATH"
        ) from e
    try:
        datasets, info = tfds.load(name, split=splits, as_supervised=True, with_info=True,
                                   shuffle_files=True, read_config=tfds.ReadConfig(shuffle_seed=seed))
    except Exception as e:  # tfds raises many kinds (network, not found, checksum); all mean "unavailable"
        raise DatasetUnavailable(f"could not load tfds dataset {name!r} ({type(e).__name__}: {e})") from e
    import tensorflow as tf

    image_key, label_key = info.supervised_keys or ("image", "label")
    try:
        class_names = tuple(info.features[label_key].names)
        channels = int(info.features[image_key].shape[-1] or 3)
    except (KeyError, AttributeError, TypeError) as e:
        raise DatasetUnavailable(f"tfds dataset {name!r} is not an (image, class label) dataset: {e}") from e
    aug = _augmenter(augment, channels, seed)
    made = []
    counts = []
    for i, ds in enumerate(datasets):
        if max_examples is not None:
            ds = ds.take(max_examples)
        counts.append(int(ds.cardinality().numpy()) if ds.cardinality() >= 0 else -1)
        made.append(_pipeline(ds, image_size, batch_size=batch_size, seed=seed, shuffle=i == 0,
                              augment=aug if i == 0 else None))
    test_raw = datasets[2].take(max_examples) if max_examples is not None else datasets[2]

    def test_records() -> Iterator[Record]:
        for image, label in test_raw.as_numpy_iterator():
            yield Record(tf.io.encode_png(image).numpy(), int(label), class_names[int(label)])

    def train_and_val() -> Any:
        first, second = (ds.take(max_examples) if max_examples is not None else ds for ds in datasets[:2])
        return _pipeline(first.concatenate(second), image_size, batch_size=batch_size, seed=seed, shuffle=True,
                         augment=aug)

    return DatasetSplits(made[0], made[1], made[2], class_names, counts[0], counts[1], counts[2], channels,
                         image_size, spec, test_records, train_and_val)


def load_dataset(
    spec: str,
    *,
    image_size: int,
    seed: int = 42,
    max_examples: int | None = None,
    batch_size: int = 32,
    augment: str = "basic",
) -> DatasetSplits:
    """Load a dataset by spec (see the module docstring). ``max_examples`` caps each split."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; expected one of {', '.join(AUGMENTATIONS)}")
    if image_size < 8:
        raise ValueError(f"image size must be at least 8, got {image_size}")
    kwargs = dict(image_size=image_size, seed=seed, max_examples=max_examples, batch_size=batch_size, augment=augment)
    if spec == "tuxpaint":
        images, labels, names = load_tuxpaint_records()
        return _from_arrays(spec, images, labels, names, (0.70, 0.15, 0.15), **kwargs)
    if spec == "fashion_mnist":
        return _load_fashion_mnist(**kwargs)
    if spec.startswith("folder:"):
        images, labels, names = _folder_records(Path(spec[len("folder:") :]).expanduser())
        return _from_arrays(spec, images, labels, names, (0.80, 0.10, 0.10), **kwargs)
    if spec.startswith("tfds:"):
        return _load_tfds(spec, **kwargs)
    raise ValueError(f"unknown dataset {spec!r}; expected one of {', '.join(DATASET_SPECS)}")


# ---------------------------------------------------------------------------------------------------------------
# Every example at once (cross-validation)

POOL_SPECS = ("tuxpaint", "fashion_mnist", "folder:PATH")


@dataclass(frozen=True)
class ExamplePool:
    """Every example of a dataset, its training, validation and test splits pooled, for cross-validation: the folds
    are index arrays into ``labels``, and :meth:`dataset` makes the same pipeline as :func:`load_dataset` for any of
    them. ``images`` is a sequence of arrays of any size (Tux Paint, folders) or one uint8 array [N,H,W,C]."""

    images: Any
    labels: np.ndarray
    class_names: tuple[str, ...]
    channels: int
    spec: str
    image_size: int
    batch_size: int
    seed: int
    augment: str

    def __len__(self) -> int:
        return len(self.labels)

    def dataset(self, indices: Sequence[int] | np.ndarray, *, train: bool) -> Any:
        """Batched (float32 pixels 0-255, int32 label) pipeline of the examples at ``indices``; ``train``: shuffled
        (seeded) and augmented by a fresh augmenter, so that every fold sees the same augmentation stream."""
        import tensorflow as tf

        idx = [int(i) for i in indices]
        labels = self.labels[idx].astype(np.int64)
        if isinstance(self.images, np.ndarray):
            ds = tf.data.Dataset.from_tensor_slices((self.images[idx], labels))
            from_generator = False
        else:
            ds = _ragged_dataset([self.images[i] for i in idx], labels.tolist())
            from_generator = True
        augment = _augmenter(self.augment, self.channels, self.seed) if train else None
        return _pipeline(ds, self.image_size, batch_size=self.batch_size, seed=self.seed, shuffle=train,
                         augment=augment, from_generator=from_generator)

    def records(self, indices: Sequence[int] | np.ndarray) -> Iterator[Record]:
        """The original images at ``indices`` as PNG records (the exporter's examples)."""
        for i in indices:
            image = self.images[int(i)]
            label = int(self.labels[int(i)])
            yield Record(_encode_png(np.asarray(image)), label, self.class_names[label])

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "class_names": list(self.class_names), "num_examples": len(self),
                "channels": self.channels, "image_size": self.image_size}


def load_pool(spec: str, *, image_size: int, seed: int = 42, batch_size: int = 32, augment: str = "basic"
              ) -> ExamplePool:
    """All examples of ``tuxpaint``, ``fashion_mnist`` (its 60k training and 10k test images) or ``folder:PATH``."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; expected one of {', '.join(AUGMENTATIONS)}")
    if image_size < 8:
        raise ValueError(f"image size must be at least 8, got {image_size}")
    images: Any
    if spec == "tuxpaint":
        images, labels, names = load_tuxpaint_records()
    elif spec.startswith("folder:"):
        images, labels, names = _folder_records(Path(spec[len("folder:") :]).expanduser())
    elif spec == "fashion_mnist":
        x_train, y_train, x_test, y_test = _fashion_mnist()
        images = np.concatenate([x_train, x_test])[..., None]
        labels, names = np.concatenate([y_train, y_test]), FASHION_MNIST_CLASSES
    elif spec.startswith("tfds:"):
        raise ValueError(f"cross-validation pools every example in memory; {spec!r} is not supported "
                         f"(use one of {', '.join(POOL_SPECS)})")
    else:
        raise ValueError(f"unknown dataset {spec!r}; expected one of {', '.join(DATASET_SPECS)}")
    channels = int(images[0].shape[-1])
    return ExamplePool(images, np.asarray(labels, dtype=np.int64), tuple(names), channels, spec, image_size,
                       batch_size, seed, augment)
