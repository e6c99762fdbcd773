"""Fixtures of the deployment tests: kustomize builds, the compose model, and a served model for the process tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import support as s


@pytest.fixture(scope="session")
def manifests() -> dict[str, list[dict[str, Any]]]:
    """``kubectl kustomize`` of each overlay (skipped, saying why, when kubectl is not installed)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the kustomize builds and their Kubernetes schema checks cannot run")
    return {overlay: s.kustomize(overlay) for overlay in s.OVERLAYS}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose reads it (tags kept), interpolated with the defaults."""
    return s.interpolate(s.plain(s.load_compose(s.COMPOSE)))


@pytest.fixture(scope="session")
def compose_cpu() -> dict[str, Any]:
    """docker-compose.yml merged with docker-compose.cpu.yml, interpolated with the defaults."""
    return s.interpolate(s.merge_compose(s.load_compose(s.COMPOSE), s.load_compose(s.COMPOSE_CPU)))


@pytest.fixture(scope="session")
def model_root(exported_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory like the compose volume, <root>/<MODEL_NAME>/1/: the suite's exported tiny model."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(exported_model.version_dir, root / s.MODEL_NAME / "1")
    return root


@pytest.fixture(scope="session")
def served(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[s.ServedStack]:
    """The serve image's entrypoint run here with docker-compose.yml's serving flags and config files."""
    stack = s.ServedStack.start(model_root, tmp_path_factory.mktemp("served"))
    try:
        yield stack
    finally:
        stack.stop()
