"""Datasets: offline sets, folders, splits, caps, and the clear error for TFDS offline."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from training.data import (
    FASHION_MNIST_CLASSES,
    TUXPAINT_CLASSES,
    DatasetUnavailable,
    load_dataset,
    load_tuxpaint_records,
    stratified_split,
)


def test_stratified_split_is_seeded_disjoint_and_keeps_every_class():
    labels = [0] * 20 + [1] * 10 + [2] * 3
    a = stratified_split(labels, (0.7, 0.15, 0.15), seed=5)
    b = stratified_split(labels, (0.7, 0.15, 0.15), seed=5)
    c = stratified_split(labels, (0.7, 0.15, 0.15), seed=6)
    assert a == b and a != c
    train, val, test = a
    assert sorted(train + val + test) == list(range(len(labels)))
    for part in (val, test):
        assert {labels[i] for i in part} == {0, 1, 2}


def test_tuxpaint_has_the_208_photos_in_8_classes():
    images, labels, names = load_tuxpaint_records()
    assert names == tuple(TUXPAINT_CLASSES)
    counts = Counter(names[y] for y in labels)
    assert counts == {"mammal": 65, "bird": 35, "fruit": 26, "flower": 25, "vehicle": 19, "vegetable": 18,
                      "fish": 11, "insect": 9}
    assert all(im.ndim == 3 and im.shape[-1] == 3 and im.dtype == np.uint8 for im in images)
    # alpha was composited onto grey: the corners of cut-outs are the background
    corners = np.array([im[0, 0] for im in images])
    assert np.mean(np.all(corners == 128, axis=1)) > 0.5


@pytest.mark.slow
def test_tuxpaint_splits_are_stratified_70_15_15_and_padded_to_size():
    s = load_dataset("tuxpaint", image_size=48, seed=1, batch_size=16)
    assert (s.num_train, s.num_val, s.num_test) == (144, 32, 32)
    x, y = next(iter(s.test))
    assert x.shape[1:] == (48, 48, 3) and x.dtype.name == "float32"
    assert 0.0 <= float(x.numpy().min()) and float(x.numpy().max()) <= 255.0
    records = list(s.test_records())
    assert len(records) == 32 and {r.label_name for r in records} == set(TUXPAINT_CLASSES)
    decoded = Image.open(io.BytesIO(records[0].encoded))
    assert decoded.format == "PNG" and decoded.mode == "RGB"
    test_labels = np.concatenate([yb.numpy() for _, yb in s.test])
    assert sorted(test_labels.tolist()) == sorted(r.label for r in records)


@pytest.mark.slow
def test_fashion_mnist_shapes_and_seeded_validation():
    s = load_dataset("fashion_mnist", image_size=28, seed=0, max_examples=64, augment="none")
    assert s.class_names == FASHION_MNIST_CLASSES and s.channels == 1
    assert (s.num_train, s.num_val, s.num_test) == (64, 64, 64)
    x, y = next(iter(s.train))
    assert x.shape[1:] == (28, 28, 1) and int(y.numpy().max()) < 10
    full = load_dataset("fashion_mnist", image_size=28, seed=0, augment="none")
    assert (full.num_train, full.num_val, full.num_test) == (54000, 6000, 10000)


@pytest.mark.slow
def test_folder_spec_reads_real_images_of_any_format(tmp_path):
    images, labels, names = load_tuxpaint_records()
    for cls in (0, 1):
        d = tmp_path / names[cls]
        d.mkdir()
        picks = [im for im, y in zip(images, labels, strict=True) if y == cls][:10]
        for i, im in enumerate(picks):
            fmt = ("PNG", "JPEG", "BMP", "GIF")[i % 4]
            Image.fromarray(im).save(d / f"{i}.{fmt.lower()}", format=fmt)
    s = load_dataset(f"folder:{tmp_path}", image_size=32, seed=0)
    assert s.class_names == tuple(sorted((names[0], names[1])))
    assert s.num_train + s.num_val + s.num_test == 20 and s.num_val >= 2 and s.num_test >= 2


@pytest.mark.slow
def test_max_examples_caps_every_split_and_randaugment_keeps_the_pixel_range():
    s = load_dataset("tuxpaint", image_size=32, seed=3, max_examples=10, batch_size=4, augment="randaugment")
    assert (s.num_train, s.num_val, s.num_test) == (10, 10, 10)
    assert sum(int(y.shape[0]) for _, y in s.train) == 10
    assert len(list(s.test_records())) == 10
    for x, _ in s.train:
        assert x.shape[1:] == (32, 32, 3)
        assert 0.0 <= float(x.numpy().min()) and float(x.numpy().max()) <= 255.0


def test_shift_augmentation_moves_the_object_by_at_most_a_tenth_of_the_side():
    from training.data import _augmenter

    images = np.zeros((16, 40, 40, 1), np.float32)
    images[:, 16:24, 16:24] = 255.0  # a centred square
    shifted = np.asarray(_augmenter("shift", 1, seed=5)(images, training=True))
    rows, cols = np.indices((40, 40))
    moves = []
    for out in shifted[..., 0]:
        mass = out.sum()
        assert mass == pytest.approx(images[0].sum(), rel=0.02)  # moved, not lost or brightened
        moves.append((abs((rows * out).sum() / mass - 19.5), abs((cols * out).sum() / mass - 19.5)))
    assert max(max(m) for m in moves) <= 4.0 + 1e-3  # a tenth of 40 px
    assert sum(1 for m in moves if max(m) > 0.5) >= 8  # most images were moved


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(DatasetUnavailable, match="not a directory"):
        load_dataset(f"folder:{tmp_path / 'missing'}", image_size=32)
    (tmp_path / "only").mkdir()
    with pytest.raises(DatasetUnavailable, match="one sub-folder per class"):
        load_dataset(f"folder:{tmp_path}", image_size=32)


def test_unknown_specs_and_augmentations_list_the_valid_ones():
    with pytest.raises(ValueError, match="tuxpaint, fashion_mnist"):
        load_dataset("cifar10", image_size=32)
    with pytest.raises(ValueError, match="basic, randaugment, none"):
        load_dataset("tuxpaint", image_size=32, augment="mixup")


def test_tfds_offline_is_a_clear_error_not_a_traceback():
    with pytest.raises(DatasetUnavailable, match="tensorflow-datasets|could not load"):
        load_dataset("tfds:oxford_flowers102", image_size=32)
