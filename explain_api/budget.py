"""The memory budget of one API process: the bytes that the requests in flight may hold at once.

A request's images cost far more decoded than uploaded (a 4.9 KB PNG of 6300x6300 one-bit pixels is 40 MB in
Pillow, 160 MB as RGBA), so the process bounds what its requests hold together, not only what each may send. Every
request gets a ``Lease`` (``MemoryBudget.lease``); it grows the lease before the work that allocates (its body, each
image's decode at the size ``rendering.images.inspect_image`` predicts) and shrinks it to what it keeps (the shrunk
working copies and one overlay's rendering) once a decode is done; the lease is released when the request ends.

When the budget is full a request waits at most ``wait_s`` for others to finish, then gets ``Overloaded`` (a 503 with
``Retry-After`` at the HTTP edge): a clear "try again" instead of a process that swaps or is killed. A request whose
own needs exceed the whole budget is refused at once (waiting would not help).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from explain_api.exceptions import Overloaded
from rendering.errors import ImageTooLarge
from rendering.images import ImageHeader, fit_size

__all__ = ["KEPT_BYTES_PER_PIXEL", "RENDER_BYTES_PER_PIXEL", "Lease", "MemoryBudget", "image_reservations"]

_MB = 1024 * 1024
# Bytes per kept pixel while a request holds its images: the RGB copy, and (once per request, for its largest image)
# the rendering of one overlay or grid: float maps, colours, the blend.
KEPT_BYTES_PER_PIXEL = 3
RENDER_BYTES_PER_PIXEL = 24


class MemoryBudget:
    """``capacity`` bytes shared by the requests of a process (thread-safe)."""

    def __init__(self, capacity: int, *, wait_s: float = 2.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 byte, got {capacity}")
        self.capacity = int(capacity)
        self.wait_s = float(wait_s)
        self._used = 0
        self._peak = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        """Bytes held by the leases now."""
        with self._cond:
            return self._used

    @property
    def peak(self) -> int:
        """The most bytes ever held at once."""
        with self._cond:
            return self._peak

    def lease(self) -> Lease:
        """A new, empty lease for one request."""
        return Lease(self)

    def _change(self, held: int, wanted: int) -> None:
        """Move a lease from ``held`` to ``wanted`` bytes; waits for room when it grows (``Overloaded`` after
        ``wait_s``, or at once when ``wanted`` alone is over the capacity)."""
        with self._cond:
            delta = wanted - held
            if delta > 0:
                if wanted > self.capacity:
                    raise Overloaded(
                        f"this request needs {wanted / _MB:.0f} MB of decoded images at once; the process's budget is "
                        f"{self.capacity / _MB:.0f} MB: send fewer or smaller images"
                    )
                deadline = time.monotonic() + self.wait_s
                while self._used + delta > self.capacity:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Overloaded(
                            f"the server is busy: the images in flight use its memory budget "
                            f"({self._used / _MB:.0f} of {self.capacity / _MB:.0f} MB); try again shortly"
                        )
                    self._cond.wait(left)
            self._used += delta
            self._peak = max(self._peak, self._used)
            if delta < 0:
                self._cond.notify_all()


class Lease:
    """The bytes one request holds in a ``MemoryBudget``; ``release`` (or the context manager) gives them back."""

    def __init__(self, budget: MemoryBudget) -> None:
        self._budget = budget
        self._held = 0
        self._peak = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    @property
    def peak(self) -> int:
        """The most this lease ever held."""
        return self._peak

    def resize(self, wanted: int) -> None:
        """Hold ``wanted`` bytes from now on (waiting for room when that is more)."""
        wanted = max(0, int(wanted))
        with self._lock:
            self._budget._change(self._held, wanted)
            self._held = wanted
            self._peak = max(self._peak, wanted)

    def grow(self, extra: int) -> None:
        self.resize(self._held + max(0, int(extra)))

    def release(self) -> None:
        self.resize(0)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def image_reservations(
    lease: Lease, *, max_decode_bytes: int, max_side: int | None
) -> Callable[[ImageHeader | None], AbstractContextManager[None]]:
    """The ``reserve`` of ``rendering.images.decode_images`` for one request: before each decode, refuse an image
    whose decode would allocate more than ``max_decode_bytes`` (``ImageTooLarge``), then grow ``lease`` by that
    cost; after it, shrink the lease to what the request keeps (its images at ``max_side`` and one rendering)."""
    base = lease.held
    kept: list[int] = []

    def held() -> int:
        render = RENDER_BYTES_PER_PIXEL * max(kept) if kept else 0
        return base + KEPT_BYTES_PER_PIXEL * sum(kept) + render

    @contextmanager
    def reserve(header: ImageHeader | None) -> Iterator[None]:
        cost = header.decode_bytes if header is not None else 0
        if header is not None and cost > max_decode_bytes:
            raise ImageTooLarge(
                f"decoding this {header.width}x{header.height} {header.format} image ({header.mode}) needs "
                f"{cost / _MB:.0f} MB; the limit is {max_decode_bytes / _MB:.0f} MB"
            )
        lease.resize(held() + cost)
        try:
            yield
        finally:
            if header is not None:
                width, height = fit_size(header.width, header.height, max_side)
                kept.append(width * height)
            lease.resize(held())

    return reserve
