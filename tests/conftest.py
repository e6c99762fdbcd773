"""Shared test fixtures. Expensive ones (trained models, exported versions) are session-scoped."""

from __future__ import annotations

import io
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# gRPC core's fork handlers stop and restart its pollers around every fork() of a process that holds a channel, and
# the tests fork (ffmpeg, servers) from such processes: a restart raced a new pipe for its file descriptor (epoll_wait:
# "Bad file descriptor", then ffmpeg's stdin pipe broken). Every child here calls exec at once and never uses gRPC
# across the fork, so the handlers are not needed; the variable must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


_SHARED_NODE_ID = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a pytest-xdist worker, flag items that share a node id: xdist tells tests apart by node id, so all but one
    of them would be dropped without a word. The one that runs then fails (``pytest_runtest_setup``). Such tests carry
    the ``serial`` mark, which ``make test`` runs in one process after the parallel run."""
    if not hasattr(config, "workerinput"):
        return
    seen: dict[str, int] = {}
    for item in items:
        seen[item.nodeid] = seen.get(item.nodeid, 0) + 1
    for item in items:
        if seen[item.nodeid] > 1:
            item.stash[_SHARED_NODE_ID] = seen[item.nodeid]


def pytest_runtest_setup(item: pytest.Item) -> None:
    shared = item.stash.get(_SHARED_NODE_ID, 0)
    if shared:
        pytest.fail(f"{shared} tests share the node id {item.nodeid}: pytest-xdist runs only one of them; "
                    "mark the test serial", pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return _free_port()


# ----------------------------------------------------------------------------------------------------------------
# A small trained classifier and its exported versions (the model contract), shared by every test package.

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
TINY_CLASSES: tuple[tuple[str, str], ...] = (
    ("bird", "animals/birds"),
    ("fruit", "food/fruit"),
    ("vehicle", "vehicles"),
)
TINY_SIZE = 64
TINY_PER_CLASS = 15
TINY_EPOCHS = 30
TINY_BACKGROUND = (128, 128, 128)


@dataclass(frozen=True)
class TinyModel:
    """``model``: functional CNN, float32 pixels 0-255 [B,64,64,3] in (Rescaling inside), softmax over 3 classes.

    ``images``: uint8 [N,64,64,3], the training photos (Tux Paint cut-outs on grey, resized with pad); ``labels``:
    int [N]; ``encoded``: the same images as PNG bytes (decoding one gives ``images[i]`` exactly).
    """

    model: Any
    class_names: list[str]
    images: np.ndarray
    labels: np.ndarray
    encoded: list[bytes]
    gradcam_layer: str = "last_conv"


@dataclass(frozen=True)
class ExportedModel:
    """One exported version. ``base_path`` is the export base (it holds ``name/``); TF Serving's
    ``--model_base_path`` is ``model_base_path`` = ``base_path / name``."""

    base_path: Path
    name: str
    version_dir: Path
    class_names: list[str]

    @property
    def model_base_path(self) -> Path:
        return self.base_path / self.name

    @property
    def version(self) -> int:
        return int(self.version_dir.name)


def _tux_photo(path: Path, size: int) -> Image.Image:
    """An RGBA cut-out composited on grey, fitted into size x size with grey padding (aspect kept)."""
    with Image.open(path) as raw:
        rgba = raw.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*TINY_BACKGROUND, 255))
    photo = Image.alpha_composite(canvas, rgba).convert("RGB")
    scale = size / max(photo.size)
    fitted = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.BILINEAR)
    out = Image.new("RGB", (size, size), TINY_BACKGROUND)
    out.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
    return out


def load_tiny_photos(
    per_class: int = TINY_PER_CLASS, size: int = TINY_SIZE
) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """The first ``per_class`` photos (sorted paths, no cartoons) of each tiny class: images, labels, PNG bytes."""
    images, labels, encoded = [], [], []
    for label, (_, folder) in enumerate(TINY_CLASSES):
        paths = sorted(p for p in (TUXPAINT_STAMPS / folder).rglob("*.png") if "cartoon" not in str(p))[:per_class]
        if len(paths) < per_class:
            pytest.skip(f"Tux Paint stamps not installed under {TUXPAINT_STAMPS / folder}")
        for path in paths:
            photo = _tux_photo(path, size)
            buffer = io.BytesIO()
            photo.save(buffer, format="PNG")
            images.append(np.asarray(photo, dtype=np.uint8))
            labels.append(label)
            encoded.append(buffer.getvalue())
    return np.stack(images), np.asarray(labels, dtype=np.int64), encoded


def build_tiny_cnn(num_classes: int = len(TINY_CLASSES), size: int = TINY_SIZE) -> Any:
    import keras

    inputs = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def _train(model: Any, images: np.ndarray, labels: np.ndarray, epochs: int) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images.astype(np.float32), labels, batch_size=16, epochs=epochs, shuffle=True, verbose=0)


@pytest.fixture(scope="session")
def tiny_model() -> TinyModel:
    """A small CNN trained (seeded, a few epochs) on 45 real Tux Paint photos: bird, fruit, vehicle."""
    import keras

    images, labels, encoded = load_tiny_photos()
    keras.utils.set_random_seed(0)
    model = build_tiny_cnn()
    _train(model, images, labels, epochs=TINY_EPOCHS)
    return TinyModel(model, [name for name, _ in TINY_CLASSES], images, labels, encoded)


def _tiny_examples(tiny: TinyModel) -> list[Any]:
    from training.export import ExampleRecord

    return [
        ExampleRecord(data, int(label), tiny.class_names[int(label)])
        for data, label in zip(tiny.encoded, tiny.labels, strict=True)
    ]


def _export_tiny(
    model: Any, tiny: TinyModel, base: Path, name: str, examples: list[Any] | None, epochs: int
) -> Path:
    from training.export import export_classifier

    predicted = np.argmax(model.predict(tiny.images.astype(np.float32), verbose=0), axis=-1)

    return export_classifier(
        model,
        tiny.class_names,
        base,
        name,
        image_size=TINY_SIZE,
        channels=3,
        preprocessing="scale_0_1",
        gradcam_layer=tiny.gradcam_layer,
        card={
            "metrics": {"train_accuracy": float(np.mean(predicted == tiny.labels))},
            "training": {"epochs": epochs, "seed": 0, "dataset": "tuxpaint:bird,fruit,vehicle"},
            "dataset": {"spec": "tuxpaint", "class_names": tiny.class_names, "num_train": len(tiny.labels)},
        },
        examples=examples,
    )


@pytest.fixture(scope="session")
def exported_model(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    """``tiny_model`` exported once through ``export_classifier`` (with its examples TFRecord): version 1."""
    base = tmp_path_factory.mktemp("models")
    version_dir = _export_tiny(tiny_model.model, tiny_model, base, "tiny", _tiny_examples(tiny_model), TINY_EPOCHS)
    return ExportedModel(base, "tiny", version_dir, list(tiny_model.class_names))


@pytest.fixture(scope="session")
def exported_two_versions(
    tiny_model: TinyModel, exported_model: ExportedModel, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ExportedModel, ExportedModel]:
    """The same name twice in its own base: v1 = ``tiny_model`` (a copy of ``exported_model``'s version, which
    ``export_classifier`` wrote; copying saves one export), v2 = exported on top of it from a copy of the model trained
    one epoch more (so the exporter itself picks version 2)."""
    import keras

    base = tmp_path_factory.mktemp("models_two")
    v1 = base / exported_model.name / "1"
    shutil.copytree(exported_model.version_dir, v1)
    keras.utils.set_random_seed(1)
    copy = keras.models.clone_model(tiny_model.model)
    copy.set_weights(tiny_model.model.get_weights())
    _train(copy, tiny_model.images, tiny_model.labels, epochs=1)
    v2 = _export_tiny(copy, tiny_model, base, exported_model.name, None, TINY_EPOCHS + 1)
    names = list(tiny_model.class_names)
    return ExportedModel(base, exported_model.name, v1, names), ExportedModel(base, exported_model.name, v2, names)
