"""TensorFlow's start-up chatter is filtered by default and kept with GLIMPSE_TF_LOG=1 (a real TensorFlow import)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from glimpse.tf_startup import VERBOSE_ENV, is_noise

# What a command does: the quiet load first, then its own TensorFlow work (devices already initialised).
CODE = (
    "from glimpse.tf_startup import load_tensorflow_quietly\n"
    "load_tensorflow_quietly()\n"
    "import tensorflow as tf\n"
    "tf.config.list_physical_devices()\n"
    "print(float(tf.reduce_sum(tf.ones((2, 2)))))\n"
    "print('LOADED')\n"
)


def _run(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", VERBOSE_ENV)}
    env.update(extra_env)
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=180,
                          check=False)


@pytest.mark.parametrize(
    "line",
    [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "E0000 00:00:1796503528.749259    7111 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
        "Failed call to cuInit: UNKNOWN ERROR (303)",
        "I0000 00:00:1796503524.558035    7111 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU "
        "will not be used.",
        "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
        "appropriate compiler flags.",
    ],
)
def test_known_start_up_lines_are_noise(line: str) -> None:
    assert is_noise(line)


def test_other_lines_are_kept() -> None:
    assert not is_noise("E0000 00:00:1.0 1 op_kernel.cc:1] OP_REQUIRES failed: Not found: libfoo.so")
    assert not is_noise("Traceback (most recent call last):")


@pytest.mark.slow
def test_a_quiet_start_prints_none_of_it_and_verbose_keeps_it() -> None:
    quiet = _run({})
    assert quiet.returncode == 0 and "LOADED" in quiet.stdout, quiet.stderr[-2000:]
    assert "absl::InitializeLog" not in quiet.stderr and "cuInit" not in quiet.stderr, quiet.stderr[-2000:]
    assert [line for line in quiet.stderr.splitlines() if line.strip()] == []

    verbose = _run({VERBOSE_ENV: "1"})
    assert verbose.returncode == 0 and "LOADED" in verbose.stdout
    assert "absl::InitializeLog" in verbose.stderr  # the capture above really removed something
