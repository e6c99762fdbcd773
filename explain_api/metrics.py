"""Prometheus metrics of the explain API, on a private registry (served at ``GET /metrics``).

- ``glimpse_api_requests_total{route,method,status}`` and ``glimpse_api_request_duration_seconds{route,method,status}``
  (route = the URL rule, e.g. ``/v1/models/<name>:explain``, never the raw path);
- ``glimpse_api_grpc_duration_seconds{rpc,signature,code}`` for every call to the model server;
- ``glimpse_api_requests_in_flight``;
- ``glimpse_api_image_bytes`` (size of each uploaded image).

With several gunicorn workers each worker has its own registry; the default is one worker with threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from glimpse_wire import contract as c

__all__ = ["ApiMetrics", "InstrumentedClient"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BYTES_BUCKETS = tuple(float(2**k) for k in range(10, 26, 2))  # 1 KiB ... 32 MiB


class ApiMetrics:
    """The API's instruments; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None, *, namespace: str = "glimpse_api") -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "requests", "HTTP requests answered.", ("route", "method", "status"), namespace=namespace, registry=r
        )
        self.request_seconds = Histogram(
            "request_duration_seconds",
            "HTTP request latency.",
            ("route", "method", "status"),
            namespace=namespace,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.grpc_seconds = Histogram(
            "grpc_duration_seconds",
            "Latency of calls to the model server, by RPC, signature and status code.",
            ("rpc", "signature", "code"),
            namespace=namespace,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("requests_in_flight", "HTTP requests being handled.", namespace=namespace, registry=r)
        self.image_bytes = Histogram(
            "image_bytes", "Size of uploaded images in bytes.", namespace=namespace, buckets=_BYTES_BUCKETS, registry=r
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        labels = (route, method, str(status))
        self.requests.labels(*labels).inc()
        self.request_seconds.labels(*labels).observe(seconds)

    def observe_grpc(self, rpc: str, signature: str, code: str, seconds: float) -> None:
        self.grpc_seconds.labels(rpc, signature, code).observe(seconds)

    def observe_image(self, n_bytes: int) -> None:
        self.image_bytes.observe(n_bytes)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class InstrumentedClient:
    """Wraps a serving client: same methods, each call timed into ``grpc_duration_seconds``."""

    def __init__(self, client: Any, metrics: ApiMetrics) -> None:
        self._client = client
        self._metrics = metrics

    @property
    def wrapped(self) -> Any:
        return self._client

    @contextmanager
    def _timed(self, rpc: str, signature: str) -> Iterator[None]:
        start = time.perf_counter()
        code = "OK"
        try:
            yield
        except Exception as e:
            code = str(getattr(e, "code", None) or type(e).__name__)
            raise
        finally:
            self._metrics.observe_grpc(rpc, signature, code, time.perf_counter() - start)

    def _call(self, rpc: str, signature: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        with self._timed(rpc, signature):
            return fn(*args, **kwargs)

    def predict(self, model: str, inputs: Any, **kwargs: Any) -> Any:
        return self._call(
            "Predict", kwargs.get("signature") or c.SIG_DEFAULT, self._client.predict, model, inputs, **kwargs
        )

    def explain(self, model: str, method: str, images: Any, **kwargs: Any) -> Any:
        signature = c.explain_signature(method) if method in c.EXPLAIN_METHODS else str(method)
        return self._call("Predict", signature, self._client.explain, model, method, images, **kwargs)

    def classify(self, model: str, examples: Any, **kwargs: Any) -> Any:
        return self._call(
            "Classify", kwargs.get("signature") or c.SIG_DEFAULT, self._client.classify, model, examples, **kwargs
        )

    def metadata(self, model: str, **kwargs: Any) -> Any:
        return self._call("GetModelMetadata", "", self._client.metadata, model, **kwargs)

    def status(self, model: str, **kwargs: Any) -> Any:
        return self._call("GetModelStatus", "", self._client.status, model, **kwargs)

    def health(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("Check", "", self._client.health, *args, **kwargs)

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()
