"""Wire compatibility with TensorFlow and tensorflow-serving-api, proven in a subprocess that imports TF.

The subprocess (tf_compat_worker) compares every descriptor of ours with TensorFlow's, round-trips messages both
ways, reads TF-made tensors/Examples/TFRecords and feeds ours to TF's Python and C++ readers, and parses a real
SavedModel's signatures. This process never imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.glimpse_wire.tf_compat_worker import CHECKS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def compat_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    out = tmp_path_factory.mktemp("compat") / "results.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.glimpse_wire.tf_compat_worker", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_the_worker_ran_every_check(compat_results: dict[str, list[str]]) -> None:
    assert list(compat_results) == list(CHECKS)


@pytest.mark.parametrize("check", CHECKS)
def test_compatible(compat_results: dict[str, list[str]], check: str) -> None:
    assert compat_results[check] == []
