"""The layer contracts of pyproject.toml (docs/architecture.md), checked with import-linter itself.

The real tree must keep them; a copy of the tree with one wrong-way import added must break them, so the check is
known to bite. Each case copies only the packages' Python files into a temporary directory and runs ``lint-imports``
there with the project's own configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"
LINT = Path(sys.executable).with_name("lint-imports")
PACKAGES: list[str] = tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]["root_packages"]


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "250"}  # one line per contract in the report
    return subprocess.run([str(LINT), "--no-cache", "--no-logo", str(tree / "pyproject.toml")], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(CONFIG, tmp_path / "pyproject.toml")
    return tmp_path


def test_every_top_level_package_is_under_a_contract() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert on_disk == set(PACKAGES)


def test_the_tree_keeps_its_layers(tree_copy: Path) -> None:
    result = _lint(tree_copy)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: " in result.stdout and " broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("explain_api/__init__.py", "import training.data", "Layers"),
        ("training/__init__.py", "import studies", "Layers"),
        ("serving/__init__.py", "import explain_api", "Layers"),
        ("rendering/__init__.py", "import tensorflow", "never import TensorFlow"),
        ("glimpse_wire/__init__.py", "import flask", "nothing of HTTP"),
        ("glimpse_wire/contract.py", "import glimpse_wire.client", "No import cycles"),
    ],
)
def test_a_wrong_way_import_breaks_a_contract(tree_copy: Path, module: str, line: str, contract: str) -> None:
    target = tree_copy / module
    target.write_text(target.read_text() + f"\n{line}  # the wrong way\n")
    result = _lint(tree_copy)
    assert result.returncode != 0, result.stdout[-4000:]
    broken = [ln for ln in result.stdout.splitlines() if "BROKEN" in ln]
    assert any(contract in ln for ln in broken), result.stdout[-4000:]
