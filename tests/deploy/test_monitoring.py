"""deploy/grafana: the dashboard queries metrics both services really export, with labels they really carry."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.deploy import support as s

DASHBOARD = s.DEPLOY_DIR / "grafana" / "glimpse-dashboard.json"
# Metric names in PromQL: ours start with ":tensorflow:serving:" (TF Serving's) or "glimpse_api_" (the API's).
_METRIC = re.compile(r"(:tensorflow:serving:[A-Za-z0-9_:]+|glimpse_api_[A-Za-z0-9_]+)")
_BY = re.compile(r"by \(([^)]*)\)")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


def _samples(exposition: str) -> dict[str, set[str]]:
    """{sample name: label names} of a Prometheus text exposition."""
    found: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        name = name.split()[0]
        labels = set(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', rest.rpartition("}")[0])) if rest else set()
        found.setdefault(name, set()).update(labels)
    return found


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Every sample the two services export once they have served a request (real registries, no servers)."""
    from explain_api.metrics import ApiMetrics
    from serving.monitoring import Metrics

    serving = Metrics()
    serving.record_request("tuxpaint", "Predict", "GRPCServer", "OK", 0.01)
    serving.record_runtime("tuxpaint", "Predict", 0.005)
    serving.record_examples("tuxpaint", 2)
    serving.record_queuing("model_server_batch_threads", 0.001)
    serving.record_wrapped_run()
    api = ApiMetrics()
    api.observe_request("explain", "POST", 200, 0.2)
    api.observe_grpc("Predict", "explain_gradcam", "OK", 0.1)
    api.observe_image(20_000)
    api.in_flight.inc()
    text, _ = api.exposition()
    return {**_samples(serving.render().decode()), **_samples(text.decode()), "up": {"job", "instance"}}


def _targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "model")
    found.append(("$model", variable["definition"]))
    return found


def test_every_queried_metric_is_exported(exported: dict[str, set[str]]) -> None:
    missing = [(title, name) for title, expr in _targets() for name in _METRIC.findall(expr) if name not in exported]
    assert missing == []
    queried = {name for _, expr in _targets() for name in _METRIC.findall(expr)}
    # Both services are on the dashboard, each with its main series.
    assert {":tensorflow:serving:request_count", ":tensorflow:serving:request_latency_bucket",
            "glimpse_api_requests_total", "glimpse_api_request_duration_seconds_bucket"} <= queried


def test_grouping_and_matcher_labels_exist_on_the_queried_metrics(exported: dict[str, set[str]]) -> None:
    problems = []
    for title, expr in _targets():
        names = _METRIC.findall(expr)
        labels = set().union(*(exported.get(n, set()) for n in names)) | {"le"}
        used = {label.strip() for group in _BY.findall(expr) for label in group.split(",")}
        used |= {m for block in re.findall(r"\{([^}]*)\}", expr) for m in _MATCHER.findall(block)}
        used.discard("__name__")
        if names and not used <= labels:
            problems.append((title, sorted(used - labels)))
    assert problems == []


def test_the_check_notices_a_wrong_metric_name(exported: dict[str, set[str]]) -> None:
    wrong = "sum(rate(:tensorflow:serving:request_count_total[5m]))"  # prometheus-client's name, not TF Serving's
    assert any(name not in exported for name in _METRIC.findall(wrong))


def test_dashboard_structure_and_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    provisioned = yaml.safe_load((s.DEPLOY_DIR / "grafana" / "provisioning" / "datasources" /
                                  "prometheus.yml").read_text())
    source = provisioned["datasources"][0]
    datasource = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert datasource["current"]["value"] == source["uid"]
    assert source["url"] == "http://prometheus:9090"
