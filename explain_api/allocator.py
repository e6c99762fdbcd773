"""glibc's allocator, tuned for a worker that decodes large images from many threads.

Measured on a gunicorn gthread worker (8 threads): with glibc's defaults the resident size kept growing under
ordinary Grad-CAM load and stayed hundreds of MB high after a few large images, although Python had freed everything.
Two of glibc's adaptive behaviours hold the memory:

- arenas: every thread that allocates under contention gets its own heap arena (up to 8 per core), and freed chunks
  stay in the arena of the thread that freed them; with 8 request threads plus gRPC's, pages spread over many arenas
  that are each rarely empty enough to be trimmed. ``M_ARENA_MAX`` = 2 keeps them few.
- the mmap threshold: blocks above it (128 KiB at start) are mmapped and go back to the system when freed, but
  freeing one raises the threshold to that block's size (up to 32 MiB), so the next image buffers, numpy arrays and
  Pillow's 16 MiB blocks come from the heap, where fragmentation pins them. A fixed ``M_MMAP_THRESHOLD`` turns the
  adaptation off; ``M_TRIM_THRESHOLD`` returns the heap's free top sooner.

After a request that held a lot (a large decode), ``release_free_memory`` asks glibc to give the free pages of every
arena back (``malloc_trim``), so that the worker's resident size returns to its warmed level instead of keeping the
high-water mark of its largest request.

``tune_allocator`` applies this with ``mallopt`` in the worker before its threads start (``glimpse api`` does it in
each worker; ``explain_api.wsgi`` too). It does nothing where the C library is not glibc. The environment variables
``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set before the process starts win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["ALLOCATOR_SETTINGS", "release_free_memory", "tune_allocator"]

# mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# parameter -> (value, the environment variable that overrides it)
ALLOCATOR_SETTINGS: dict[int, tuple[int, str]] = {
    _M_ARENA_MAX: (2, "MALLOC_ARENA_MAX"),
    _M_MMAP_THRESHOLD: (256 * 1024, "MALLOC_MMAP_THRESHOLD_"),
    _M_TRIM_THRESHOLD: (1024 * 1024, "MALLOC_TRIM_THRESHOLD_"),
}


_libc: ctypes.CDLL | None = None
_loaded = False


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has mallopt and malloc_trim), else None."""
    global _libc, _loaded
    if not _loaded:
        _loaded = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
                _libc = libc
        except OSError:
            _libc = None
    return _libc


def release_free_memory() -> bool:
    """Give the allocator's free pages back to the system (glibc ``malloc_trim(0)``); False without glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    libc.malloc_trim(0)
    return True


def tune_allocator() -> bool:
    """Apply ``ALLOCATOR_SETTINGS`` with glibc's ``mallopt``; False where that is not possible (no glibc)."""
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = True
    for param, (value, env) in ALLOCATOR_SETTINGS.items():
        if os.environ.get(env):
            continue  # the operator's setting, already read by glibc at start-up
        ok = bool(mallopt(param, value)) and ok
    return ok
