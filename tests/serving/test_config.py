"""Flags, config files and metric names (unit tests; no server)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from serving.cli import config_from_args, configure_serve
from serving.config import (
    ConfigError,
    ServerConfig,
    load_batching_options,
    load_model_server_config,
    load_monitoring_options,
    parse_channel_arguments,
)
from serving.monitoring import Metrics
from tests.serving.support import REPO_ROOT


def parse(*argv: str) -> ServerConfig:
    parser = argparse.ArgumentParser()
    configure_serve(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_defaults_are_tensorflow_model_server_defaults() -> None:
    config = parse("--model_base_path=/models/m")
    assert (config.port, config.rest_api_port, config.model_name) == (8500, 8501, "default")
    assert config.file_system_poll_wait_seconds == 1 and config.model_config_file_poll_wait_seconds == 0
    assert config.rest_api_timeout_in_ms == 30000 and not config.enable_batching
    assert config.grpc_max_threads >= 4 and config.rest_api_num_threads >= 4


def test_both_flag_spellings_and_boolean_forms() -> None:
    a = parse("--port=9000", "--model_name=m", "--model_base_path=/b", "--enable_batching")
    b = parse("--port", "9000", "--model_name", "m", "--model_base_path", "/b", "--enable_batching=true")
    assert a == b and a.port == 9000 and a.enable_batching
    c = parse("--model_base_path=/b", "--enable_batching=false", "--allow_version_labels_for_unavailable_models", "1")
    assert not c.enable_batching and c.allow_version_labels_for_unavailable_models


def test_bad_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="model_base_path and server_options.model_config_file are empty"):
        parse()
    with pytest.raises(ConfigError, match="--port must be a TCP port"):
        parse("--model_base_path=/b", "--port=70000")
    with pytest.raises(SystemExit):
        parse("--model_base_path=/b", "--enable_batching=maybe")


def test_model_config_file(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(
        'model_config_list { config { name: "a" base_path: "/m/a" model_platform: "tensorflow"\n'
        "  model_version_policy { specific { versions: 1 versions: 3 } }\n"
        '  version_labels { key: "stable" value: 1 } } }\n'
    )
    config = load_model_server_config(path)
    model = config.model_config_list.config[0]
    assert list(model.model_version_policy.specific.versions) == [1, 3]
    assert dict(model.version_labels) == {"stable": 1}
    path.write_text("model_config_list { config { nme: 1 } }")
    with pytest.raises(ConfigError, match="Invalid protobuf file"):
        load_model_server_config(path)


def test_batching_parameters_file(tmp_path: Path) -> None:
    path = tmp_path / "batching.config"
    path.write_text(
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 5000 }\nnum_batch_threads { value: 2 }\n"
        "max_enqueued_batches { value: 4 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 32\n"
        "pad_variable_length_inputs: true\n"
    )
    options = load_batching_options(path)
    assert (options.max_batch_size, options.batch_timeout_micros, options.num_batch_threads) == (32, 5000, 2)
    assert options.max_enqueued_batches == 4 and options.allowed_batch_sizes == (8, 32)
    assert options.pad_variable_length_inputs and options.thread_pool_name == "model_server_batch_threads"
    assert load_batching_options(None).max_batch_size == 1000  # TF Serving's scheduler default
    path.write_text("max_batch_size: 32\n")  # not the Int64Value wrapper TF Serving's format uses
    with pytest.raises(ConfigError, match="Invalid protobuf file"):
        load_batching_options(path)


def test_monitoring_config_file(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.config"
    path.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    assert load_monitoring_options(path).prometheus_enabled
    assert load_monitoring_options(path).prometheus_path == "/metrics"
    path.write_text("prometheus_config { enable: true }\n")
    assert load_monitoring_options(path).prometheus_path == "/monitoring/prometheus/metrics"


def test_channel_arguments() -> None:
    assert parse_channel_arguments("grpc.max_concurrent_streams=100,grpc.primary_user_agent=x") == [
        ("grpc.max_concurrent_streams", 100), ("grpc.primary_user_agent", "x")]
    with pytest.raises(ConfigError):
        parse_channel_arguments("novalue")


def test_metric_names_are_tf_servings() -> None:
    metrics = Metrics()
    metrics.record_request("m", "Predict", "GRPC", "OK", 0.002)
    metrics.record_request("m", "Predict", "GRPC", "NOT_FOUND", 0.001)
    metrics.record_wrapped_run()
    metrics.record_queuing("model_server_batch_threads", 0.0001)
    text = metrics.render().decode()
    lines = text.splitlines()
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 1' in lines
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 1' in lines
    assert ":tensorflow:serving:batching_session:wrapped_run_count 1" in lines
    assert ':tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",le="+Inf"} 1' \
        in lines
    assert ':tensorflow:serving:request_latency_sum{model_name="m",API="Predict",entrypoint="GRPC"} 2000' in lines
    assert any(line.startswith(":tensorflow:serving:batching_session:queuing_latency_count") for line in lines)
    assert "_total" not in text and "_created" not in text


def test_configure_serve_imports_nothing_heavy() -> None:
    code = ("import argparse, sys; from serving.cli import configure_serve; configure_serve(argparse.ArgumentParser());"
            "heavy = [m for m in ('tensorflow', 'grpc', 'numpy', 'tensorflow_serving') if m in sys.modules];"
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_reports_bad_flags_without_starting() -> None:
    result = subprocess.run([sys.executable, "-m", "serving", "--port=8500"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "Both server_options.model_base_path and server_options.model_config_file are empty!" in result.stderr
