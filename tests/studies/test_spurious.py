"""The spurious-correlation demo (the chapter's snow story): the dataset's layout and its class-correlated and
swapped backgrounds, the Grad-CAM mass metric on hand-made maps, the config and CLI errors, and (slow) the quick
``glimpse spurious`` command end to end. Full figures: docs/spurious.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studies.localization import make_localization_set
from studies.spurious import (
    QUICK_CONFIG,
    TEXTURES,
    SpuriousConfig,
    background_of,
    build_dataset,
    configure_spurious,
    evaluate_split,
    object_share,
    run_spurious,
    texture,
    write_dataset,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _kind_of_background(image: np.ndarray, box: np.ndarray) -> str:
    """Which texture the pixels outside the box look like: snow is bright and grey-blue, grass green."""
    top, left, bottom, right = box
    outside = np.ones(image.shape[:2], bool)
    outside[top:bottom, left:right] = False
    r, g, b = (image[..., c][outside].astype(float).mean() for c in range(3))
    if min(r, g, b) > 200:
        return "snow"
    if g > r + 30 and g > b + 30:
        return "grass"
    if r > b + 40 and min(r, g, b) < 200:
        return "sand"
    return "unknown"


@pytest.fixture(scope="module")
def quick_data():
    return build_dataset(QUICK_CONFIG)


# ----------------------------------------------------------------------------------------------------------------
# Config and textures


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"classes": ("mammal", "dragon")}, "classes"),
        ({"classes": ("bird", "bird")}, "classes"),
        ({"backgrounds": ("snow",)}, "backgrounds"),
        ({"backgrounds": ("snow", "snow")}, "backgrounds"),
        ({"backgrounds": ("snow", "lava")}, "backgrounds"),
        ({"model": "resnet50"}, "model"),
        ({"image_size": 16}, "image_size"),
        ({"min_scale": 0.7, "max_scale": 0.5}, "scale"),
        ({"train_per_class": 5}, "train_per_class"),
        ({"epochs": 0}, "epochs"),
        ({"correlation": 1.5}, "correlation"),
        ({"name": "../x"}, "name"),
    ],
)
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        SpuriousConfig(**changes)


def test_class_ids_follow_sorted_names_and_keep_their_texture():
    config = SpuriousConfig(classes=("mammal", "bird", "fruit"), backgrounds=("snow", "grass", "sand"))
    assert config.class_names == ("bird", "fruit", "mammal")
    assert [config.texture_of(i) for i in range(3)] == ["grass", "sand", "snow"]
    assert [background_of(config, i, "train") for i in range(3)] == ["grass", "sand", "snow"]
    assert [background_of(config, i, "test_same") for i in range(3)] == ["grass", "sand", "snow"]
    assert [background_of(config, i, "test_swapped") for i in range(3)] == ["sand", "snow", "grass"]
    with pytest.raises(ValueError, match="split"):
        background_of(config, 0, "val")


def test_textures_are_seeded_and_tell_apart():
    for name in TEXTURES:
        a = texture(name, 32, np.random.default_rng(1))
        b = texture(name, 32, np.random.default_rng(1))
        c = texture(name, 32, np.random.default_rng(2))
        assert a.shape == (32, 32, 3) and a.dtype == np.float32
        assert a.min() >= 0.0 and a.max() <= 255.0
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
        no_box = np.array([0, 0, 0, 0])
        assert _kind_of_background(a.astype(np.uint8), no_box) == name
    with pytest.raises(ValueError, match="texture"):
        texture("lava", 8, np.random.default_rng(0))


def test_a_given_background_keeps_placements_and_is_checked():
    rgba = np.zeros((20, 10, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 255
    photos = {"a": [rgba], "b": [rgba]}
    white = make_localization_set(photos, 3, 32, seed=5, backgrounds=lambda label, k: np.full((32, 32, 3), 255.0))
    black = make_localization_set(photos, 3, 32, seed=5, backgrounds=lambda label, k: np.zeros((32, 32, 3)))
    np.testing.assert_array_equal(white.boxes, black.boxes)
    np.testing.assert_array_equal(white.labels, black.labels)
    assert (white.images[0, 0, 0] == 255).all() and (black.images[0, 0, 0] == 0).all()
    with pytest.raises(ValueError, match="background must have shape"):
        make_localization_set(photos, 1, 32, seed=5, backgrounds=lambda label, k: np.zeros((16, 16, 3)))


# ----------------------------------------------------------------------------------------------------------------
# The dataset


def test_train_backgrounds_follow_the_class_and_swapped_ones_are_swapped(quick_data):
    config = QUICK_CONFIG
    for split, part in quick_data.splits.items():
        seen = [_kind_of_background(im, box) for im, box in zip(part.images, part.boxes, strict=True)]
        expected = [background_of(config, int(y), split) for y in part.labels]
        assert seen == expected, split
        assert [TEXTURES[i] for i in quick_data.backgrounds[split]] == expected
    train_kinds = {(int(y), TEXTURES[b]) for y, b in zip(quick_data.splits["train"].labels,
                                                          quick_data.backgrounds["train"], strict=True)}
    assert train_kinds == {(0, "grass"), (1, "snow")}  # bird on grass, mammal on snow: one texture per class


def test_the_control_uncouples_backgrounds_from_classes():
    control = build_dataset(dataclasses.replace(QUICK_CONFIG, correlation=0.5))
    train = control.splits["train"]
    seen = [_kind_of_background(im, box) for im, box in zip(train.images, train.boxes, strict=True)]
    assert seen == [TEXTURES[b] for b in control.backgrounds["train"]]
    for label in (0, 1):  # both classes on both textures
        assert {kind for kind, y in zip(seen, train.labels, strict=True) if y == label} == {"grass", "snow"}
    own = np.mean([kind == QUICK_CONFIG.texture_of(int(y)) for kind, y in zip(seen, train.labels, strict=True)])
    assert 0.25 < own < 0.75
    same = control.splits["test_same"]  # the test sets stay by class
    assert [TEXTURES[b] for b in control.backgrounds["test_same"]] == [
        background_of(QUICK_CONFIG, int(y), "test_same") for y in same.labels
    ]


def test_same_and_swapped_differ_only_in_the_background(quick_data):
    same, swapped = quick_data.splits["test_same"], quick_data.splits["test_swapped"]
    np.testing.assert_array_equal(same.boxes, swapped.boxes)
    np.testing.assert_array_equal(same.labels, swapped.labels)
    inside_equal = []
    for a, b, (top, left, bottom, right) in zip(same.images, swapped.images, same.boxes, strict=True):
        equal = (np.abs(a.astype(int) - b.astype(int)) <= 2).all(axis=-1)
        inside = np.zeros(equal.shape, bool)
        inside[top:bottom, left:right] = True
        inside_equal.append(equal[inside].mean())
        assert equal[inside].mean() > 0.05  # the opaque object pixels are identical (thin objects fill little)
        assert equal[~inside].mean() < 0.02  # the background is not
    assert np.mean(inside_equal) > 0.15
    counts = {k: np.bincount(v.labels).tolist() for k, v in quick_data.splits.items()}
    assert counts == {"train": [16, 16], "test_same": [6, 6], "test_swapped": [6, 6]}


def test_the_dataset_is_seeded():
    small = dataclasses.replace(QUICK_CONFIG, train_per_class=10, test_per_class=2)
    first, again = build_dataset(small), build_dataset(small)
    other = build_dataset(dataclasses.replace(small, seed=1))
    for split in first.splits:
        np.testing.assert_array_equal(first.splits[split].images, again.splits[split].images)
        assert not np.array_equal(first.splits[split].images, other.splits[split].images)


def test_written_as_folder_datasets_with_a_manifest(quick_data, tmp_path):
    root = tmp_path / "data"
    manifest = write_dataset(quick_data, root)
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "test_same", "test_swapped", "train"]
    for split, part in quick_data.splits.items():
        assert sorted(p.name for p in (root / split).iterdir()) == ["bird", "mammal"]
        rows = manifest["splits"][split]
        assert len(rows) == len(part.labels)
        for i in (0, len(rows) - 1):
            row = rows[i]
            assert row["file"].startswith(f"{split}/{row['class']}/")
            with Image.open(root / row["file"]) as im:
                np.testing.assert_array_equal(np.asarray(im), part.images[i])
            assert row["box"] == part.boxes[i].tolist() and row["label"] == int(part.labels[i])
            assert row["background"] == background_of(QUICK_CONFIG, row["label"], split)
    write_dataset(quick_data, root)  # its own dataset is replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        write_dataset(quick_data, tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").exists()


# ----------------------------------------------------------------------------------------------------------------
# Measuring


def test_object_share_on_hand_made_maps():
    boxes = np.array([[0, 0, 2, 2]] * 4)  # a quarter of a 4x4 map
    maps = np.zeros((4, 4, 4))
    maps[0, :2, :2] = 1.0  # all inside
    maps[1] = 1.0  # uniform: the box's area fraction
    maps[2, 3, 3] = 2.0  # all outside
    maps[2, 0, 0] = 2.0  # ... half of it inside
    np.testing.assert_allclose(object_share(maps, boxes), [1.0, 0.25, 0.5, 0.25])  # a zero map counts as uniform


def test_evaluate_split_counts_background_following():
    config = SpuriousConfig()  # bird (0) on grass, mammal (1) on snow
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])  # swapped: bird on snow -> "mammal"
    maps = np.zeros((4, 4, 4))
    maps[:, 0, 0] = 1.0
    maps[3] = 0.0
    maps[3, 3, 3] = 1.0
    boxes = np.array([[0, 0, 2, 2]] * 4)
    m = evaluate_split("test_swapped", ("bird", "mammal"), config, labels, boxes, probs, maps)
    assert m.n == 4 and m.accuracy == 0.25 and m.follows_background == 0.75
    assert m.per_class_accuracy == {"bird": 0.0, "mammal": 0.5}
    assert m.gradcam_object_share == pytest.approx(0.75) and m.gradcam_background_share == pytest.approx(0.25)
    assert m.box_area_fraction == pytest.approx(0.25) and m.pointing_game == pytest.approx(0.75)
    same = evaluate_split("test_same", ("bird", "mammal"), config, labels, boxes, probs, maps)
    assert same.follows_background == same.accuracy == 0.25


# ----------------------------------------------------------------------------------------------------------------
# The command


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_spurious(parser)
    return parser.parse_args(list(argv))


def test_bad_flags_exit_2_with_a_message(tmp_path, capsys):
    assert run_spurious(_args("--out", str(tmp_path), "--quick", "--backgrounds", "snow,snow")) == 2
    assert "backgrounds" in capsys.readouterr().err
    assert run_spurious(_args("--out", str(tmp_path), "--classes", "mammal,unicorn")) == 2
    assert "classes" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``glimpse spurious --quick`` once, as a user runs it (a subprocess)."""
    out = tmp_path_factory.mktemp("spurious")
    proc = subprocess.run(
        [sys.executable, "-m", "glimpse", "spurious", "--out", str(out), "--quick", "--seed", "0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow
@pytest.mark.integration
def test_quick_command_end_to_end(quick_run):
    from training.export import expected_signatures
    from whatif.report import read_example_table

    out, stdout = quick_run
    results = json.loads((out / "results.json").read_text())
    assert "| test_swapped |" in stdout and (out / "results.md").read_text().startswith("# Spurious")
    assert results["counts"] == {"train": 32, "test_same": 12, "test_swapped": 12}
    for split in ("test_same", "test_swapped"):
        m = results["splits"][split]
        assert m["n"] == 12
        for key in ("accuracy", "follows_background", "gradcam_object_share", "box_area_fraction", "pointing_game"):
            assert 0.0 <= m[key] <= 1.0, key
        assert m["gradcam_object_share"] + m["gradcam_background_share"] == pytest.approx(1.0)
        assert m["accuracy"] == pytest.approx(np.mean(list(m["per_class_accuracy"].values())))
    same, swapped = results["splits"]["test_same"], results["splits"]["test_swapped"]
    assert same["follows_background"] == same["accuracy"]  # on the same backgrounds, right = background's class
    assert swapped["follows_background"] == pytest.approx(1.0 - swapped["accuracy"])  # two classes
    assert swapped["accuracy"] < same["accuracy"]  # even two epochs learn the shortcut

    version_dir = Path(results["model"]["version_dir"])
    assert version_dir == out / "models" / "spurious" / "1"
    card = json.loads((version_dir / "assets.extra" / "model_card.json").read_text())
    assert card["labels"] == ["bird", "mammal"] and card["input"]["height"] == 48
    assert card["signatures"] == list(expected_signatures()) and card["gradcam_layer"]
    assert (version_dir / "saved_model.pb").is_file()

    manifest = json.loads((out / "data" / "manifest.json").read_text())
    for split in ("test_same", "test_swapped"):
        table = read_example_table(Path(results["examples"][split]))
        rows = manifest["splits"][split]
        assert table.labels.tolist() == [r["label"] for r in rows]
        # brightness, a feature the report slices by, tells the backgrounds apart: snow is bright, grass dark
        bright = table.features["brightness"]
        snow = np.array([r["background"] == "snow" for r in rows])
        assert bright[snow].min() > bright[~snow].max()

    for path in results["figures"].values():
        with Image.open(out / path) as im:
            assert im.format == "PNG" and im.width > 96
        assert (out / path).stat().st_size < 200_000
