"""Fixtures of the serving tests: the shared exported model (tests/conftest.py) and a shared `glimpse serve`.

Versions are copies of ``exported_model``'s real export (with its warm-up records); corrupt versions are such a
copy with a broken saved_model.pb.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ExportedModel
from tests.serving.support import ServerProcess, add_version, png_bytes

MODEL = "glimpse"


@pytest.fixture(scope="session")
def image() -> bytes:
    return png_bytes("chelsea")


@pytest.fixture(scope="session")
def export_dir(exported_model: ExportedModel) -> Path:
    """One exported version of the contract (with warm-up records), copied wherever a version is needed."""
    return exported_model.version_dir


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, export_dir: Path) -> Iterator[ServerProcess]:
    """A `python -m serving` with versions 1 and 2 of MODEL (policy: all; labels stable=1, canary=2), shared by the
    gRPC and REST tests."""
    root = tmp_path_factory.mktemp("served")
    base = root / MODEL
    base.mkdir()
    add_version(base, export_dir, 1)
    add_version(base, export_dir, 2, warmup=True)  # the export's warm-up records are replayed when 2 loads
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "{MODEL}" base_path: "{base}" model_platform: "tensorflow"\n'
        "    model_version_policy { all {} }\n"
        '    version_labels { key: "stable" value: 1 }\n'
        '    version_labels { key: "canary" value: 2 } }\n'
        "}\n"
    )
    server = ServerProcess(
        [f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models=true",
         "--file_system_poll_wait_seconds=0"],
        log_path=root / "server.log",
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
