"""TF Serving's Prometheus metrics, kept by prometheus-client on a private registry.

TensorFlow Serving names its metrics with slashes (``/tensorflow/serving/request_count``) and its exporter turns
every character outside ``[a-zA-Z0-9_]`` into ``:``, so scrapers see ``:tensorflow:serving:request_count``.
prometheus-client accepts such names (``:`` is legal in metric names) but its text exposition renames counters to
``<name>_total`` (TYPE line and samples) and adds ``<name>_created`` series. Dashboards written against TF Serving
would not find those, so :func:`render` writes the exposition itself from the registry's samples: counters under
their own name, histograms as ``_bucket``/``_sum``/``_count``, no ``_created`` series, labels in declaration order,
a ``# TYPE`` line per metric (TF Serving writes no ``# HELP``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["Metrics", "exponential_buckets", "render", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    """TensorFlow's ``monitoring::Buckets::Exponential(scale, growth, count)`` upper bounds (+Inf is implicit)."""
    bounds, bound = [], float(scale)
    for _ in range(count):
        bounds.append(bound)
        bound *= growth
    return bounds


class Metrics:
    """The metrics TensorFlow Serving exports, with its names, labels and (microsecond) buckets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        latency_buckets = exponential_buckets(10, 1.8, 33)
        self.request_count = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.", ["model_name", "status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=latency_buckets, registry=self.registry,
        )
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"], buckets=latency_buckets, registry=self.registry,
        )
        self.request_example_counts = Histogram(
            ":tensorflow:serving:request_example_counts", "The number of tensorflow.Examples per request.",
            ["model"], buckets=exponential_buckets(1, 2, 15), registry=self.registry,
        )
        self.request_example_count_total = Counter(
            ":tensorflow:serving:request_example_count_total", "The total number of tensorflow.Examples.",
            ["model"], registry=self.registry,
        )
        self.queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ["thread_pool_name"], buckets=exponential_buckets(100, 1.2, 52), registry=self.registry,
        )
        self.wrapped_run_count = Counter(
            ":tensorflow:serving:batching_session:wrapped_run_count",
            "Total count of run calls on the wrapped session", registry=self.registry,
        )

    def record_request(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """One Predict/Classify/Regress call: its status counted, its latency recorded when it succeeded."""
        self.request_count.labels(model_name, status).inc()
        if status == "OK":
            self.request_latency.labels(model_name, api, entrypoint).observe(seconds * 1e6)

    def record_runtime(self, model_name: str, api: str, seconds: float) -> None:
        self.runtime_latency.labels(model_name, api, "TF1").observe(seconds * 1e6)

    def record_examples(self, model_name: str, count: int) -> None:
        self.request_example_counts.labels(model_name).observe(count)
        self.request_example_count_total.labels(model_name).inc(count)

    def record_queuing(self, thread_pool_name: str, seconds: float) -> None:
        self.queuing_latency.labels(thread_pool_name).observe(seconds * 1e6)

    def record_wrapped_run(self) -> None:
        self.wrapped_run_count.inc()

    def render(self) -> bytes:
        return render(self.registry)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _bucket_bound(text: str) -> str:
    # TF Serving prints bucket limits with absl::StrCat (six significant digits, like "%g").
    value = float(text)
    return "+Inf" if math.isinf(value) else f"{value:g}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text exposition of ``registry`` with TF Serving's metric names (see the module docstring)."""
    lines: list[str] = []
    for metric in registry.collect():
        name = metric.name
        kind = metric.type if metric.type in ("counter", "gauge", "histogram") else "untyped"
        lines.append(f"# TYPE {name} {kind}")
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            sample_name = name if kind == "counter" and sample.name == name + "_total" else sample.name
            pairs = [(k, v) for k, v in sample.labels.items() if k != "le"]
            if "le" in sample.labels:
                pairs.append(("le", _bucket_bound(sample.labels["le"])))
            label_text = _labels(pairs)
            lines.append(f"{sample_name}{{{label_text}}} {_number(sample.value)}" if label_text
                         else f"{sample_name} {_number(sample.value)}")
    return ("\n".join(lines) + "\n").encode("utf-8")
