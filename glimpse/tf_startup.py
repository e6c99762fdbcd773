"""TensorFlow's start-up chatter, kept off a newcomer's console.

Importing TensorFlow and initialising its devices prints a block of C++ log lines on every command, twice (two shared
libraries each log before absl is initialised), and on a machine without a GPU an error-level line
``E0000 ... cuda_platform.cc:52] failed call to cuInit: ... UNKNOWN ERROR (303)`` that reads like a failure. None of it
is actionable, and none of it can be silenced by ``TF_CPP_MIN_LOG_LEVEL`` alone.

:func:`load_tensorflow_quietly` imports TensorFlow and lists its devices with file descriptor 2 pointed at a temporary
file, then gives stderr back and replays every captured line that is not known start-up noise, so a real problem
(a missing library, a failed kernel registration) still shows. ``glimpse --verbose`` or ``GLIMPSE_TF_LOG=1`` keeps
TensorFlow's log exactly as it is.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

__all__ = ["VERBOSE_ENV", "NOISE", "is_noise", "load_tensorflow_quietly"]

VERBOSE_ENV = "GLIMPSE_TF_LOG"

# Lines TensorFlow prints while it loads on any machine, GPU or not; each names the C++ source that logs it.
NOISE: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
        r"\] oneDNN custom operations are on",
        r"cudart_stub\.cc:\d+\] Could not find cuda drivers",
        r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
        r"^To enable the following instructions: .* rebuild TensorFlow",
        r"cuda_platform\.cc:\d+\] failed call to cuInit",
        r"Unable to register cu(DNN|FFT|BLAS) factory",
        r"computation_placer\.cc:\d+\] computation placer already registered",
    )
)


def is_noise(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's known start-up messages (blank lines count as noise)."""
    return not line.strip() or any(p.search(line) for p in NOISE)


def load_tensorflow_quietly(verbose: bool = False) -> None:
    """Import TensorFlow and initialise its devices, replaying to stderr only the lines that are not start-up noise.

    With ``verbose`` (or ``GLIMPSE_TF_LOG`` set to anything but empty/0) nothing is captured. Also defaults
    ``TF_CPP_MIN_LOG_LEVEL`` to 1 (no INFO lines) unless the user set it.
    """
    if verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
    kept = [line for line in text.splitlines() if not is_noise(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)
