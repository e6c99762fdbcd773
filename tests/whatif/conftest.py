"""Fixtures of the What-If Tool tests: a real `glimpse serve` with two versions of the tiny model, and examples.

The examples are the original Tux Paint photos (RGBA PNGs of many sizes and aspect ratios, not the 64x64 training
copies), written by the exporter's own ``write_examples_tfrecord`` into ``<model_base_path>/examples/test.tfrecord``.
The server (``tests.serving.support.ServerProcess``) serves ``tiny`` versions 1 and 2 (policy all) and ``other``,
a copy of version 2 as version 7 in a directory without examples (its labels come from the server).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TINY_CLASSES, TUXPAINT_STAMPS, ExportedModel
from tests.serving.support import ServerProcess

PHOTOS_PER_CLASS = 10
MODEL = "tiny"
OTHER = "other"
OTHER_VERSION = 7


@dataclass(frozen=True)
class WitStack:
    server: ServerProcess
    base: Path  # <root>/tiny, the model base path (versions 1, 2 and examples/)
    examples: Path
    class_names: list[str]
    labels: list[int]

    @property
    def address(self) -> str:
        return self.server.grpc_address


def original_photos(per_class: int = PHOTOS_PER_CLASS) -> list[tuple[bytes, int]]:
    """(PNG bytes as shipped, class id) of the first ``per_class`` photos of each tiny class."""
    photos = []
    for label, (_, folder) in enumerate(TINY_CLASSES):
        paths = sorted(p for p in (TUXPAINT_STAMPS / folder).rglob("*.png") if "cartoon" not in str(p))[:per_class]
        if len(paths) < per_class:
            pytest.skip(f"Tux Paint stamps not installed under {TUXPAINT_STAMPS / folder}")
        photos += [(path.read_bytes(), label) for path in paths]
    return photos


@pytest.fixture(scope="session")
def wit_stack(
    exported_two_versions: tuple[ExportedModel, ExportedModel], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WitStack]:
    from glimpse_wire.client import ServingClient
    from training.export import EXAMPLES_FILE, ExampleRecord, write_examples_tfrecord

    v1, v2 = exported_two_versions
    names = list(v1.class_names)
    root = tmp_path_factory.mktemp("whatif")
    base = root / MODEL
    shutil.copytree(v1.version_dir, base / "1")
    shutil.copytree(v2.version_dir, base / "2")
    shutil.copytree(v2.version_dir, root / OTHER / str(OTHER_VERSION))
    photos = original_photos()
    examples = base / EXAMPLES_FILE
    write_examples_tfrecord(examples, [ExampleRecord(data, label, names[label]) for data, label in photos])
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "{MODEL}" base_path: "{base}" model_platform: "tensorflow"\n'
        "    model_version_policy { all {} } }\n"
        f'  config {{ name: "{OTHER}" base_path: "{root / OTHER}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    server = ServerProcess(
        [f"--model_config_file={config}", "--file_system_poll_wait_seconds=0"], log_path=root / "server.log"
    )
    try:
        server.start(timeout=180)
        with ServingClient(server.grpc_address) as client:
            for model, version in ((MODEL, 1), (MODEL, 2), (OTHER, OTHER_VERSION)):
                client.wait_until_available(model, 120, version=version)
        yield WitStack(server, base, examples, names, [label for _, label in photos])
    finally:
        server.stop()
