"""The wire package never imports TensorFlow (explain_api's image depends on it staying small)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
import glimpse_wire, glimpse_wire.client, glimpse_wire.contract, glimpse_wire.errors, glimpse_wire.examples
import glimpse_wire.messages, glimpse_wire.tensors
from glimpse_wire.client import ServingClient
ServingClient("127.0.0.1:1").close()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving", "keras", "tf_keras"))
print(json.dumps(heavy))
"""


@pytest.mark.integration
def test_importing_the_client_does_not_import_tensorflow() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
