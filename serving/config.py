"""The server's configuration: flags in a frozen :class:`ServerConfig`, config files as TF Serving's protobufs.

Flag names and defaults are tensorflow_model_server's (main.cc, server.h). The text-proto files it reads are parsed
with ``google.protobuf.text_format`` into the real messages: ``ModelServerConfig`` from tensorflow-serving-api's
``tensorflow_serving.config``, ``BatchingParameters``, ``MonitoringConfig`` and ``SSLConfig`` from ``serving/_proto``
(same field names and numbers as TF Serving's; the wheel lacks them), the session ``ConfigProto`` from TensorFlow.
A file that does not parse is reported as TF Serving's protobuf parser reports it:
``Error parsing text-format tensorflow.serving.ModelServerConfig: LINE:COLUMN: ...``. This module imports only the
standard library at import time; the protobuf modules are imported by the functions that need them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_REST_PORT",
    "DEFAULT_PROMETHEUS_PATH",
    "DEFAULT_BATCH_THREAD_POOL",
    "ConfigError",
    "ServerConfig",
    "BatchingOptions",
    "MonitoringOptions",
    "read_text_proto",
    "load_model_server_config",
    "single_model_config",
    "load_batching_options",
    "load_monitoring_options",
    "load_ssl_config",
    "parse_channel_arguments",
]

DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
DEFAULT_BATCH_THREAD_POOL = "model_server_batch_threads"
_TENSORFLOW_PLATFORM = "tensorflow"


class ConfigError(ValueError):
    """A flag or config file tensorflow_model_server would also refuse."""


def _cpus() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class ServerConfig:
    """tensorflow_model_server's flags (same names, same defaults), plus a few Glimpse extensions at the end."""

    port: int = DEFAULT_GRPC_PORT
    rest_api_port: int = DEFAULT_REST_PORT
    rest_api_num_threads: int = field(default_factory=lambda: 4 * _cpus())
    rest_api_timeout_in_ms: int = 30000
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    allow_version_labels_for_unavailable_models: bool = False
    grpc_max_threads: int = field(default_factory=lambda: 4 * _cpus())
    enable_signature_method_name_check: bool = False
    grpc_channel_arguments: str = ""
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    grpc_socket_path: str = ""
    rest_api_enable_cors_support: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    tensorflow_session_parallelism: int = 0
    tensorflow_session_config_file: str = ""
    ssl_config_file: str = ""
    per_process_gpu_memory_fraction: float = 0.0
    saved_model_tags: str = "serve"
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    prefer_tflite_model: bool = False
    num_tflite_pools: int = field(default_factory=_cpus)
    enable_profiler: bool = True
    enable_grpc_healthcheck_service: bool = False
    enable_serialization_as_tensor_content: bool = False
    # Glimpse extensions (not tensorflow_model_server flags).
    bind_address: str = "0.0.0.0"
    shutdown_grace_seconds: float = 10.0

    def __post_init__(self) -> None:
        for name in ("port", "rest_api_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ConfigError(f"--{name} must be a TCP port (0-65535), got {value}")
        for name in ("rest_api_num_threads", "grpc_max_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.rest_api_timeout_in_ms < 0:
            raise ConfigError(f"--rest_api_timeout_in_ms must be >= 0, got {self.rest_api_timeout_in_ms}")
        if self.shutdown_grace_seconds < 0:
            raise ConfigError(f"--shutdown_grace_seconds must be >= 0, got {self.shutdown_grace_seconds}")
        # Server::BuildAndStart's checks, in its order and with its messages.
        if self.port == 0 and not self.grpc_socket_path:
            raise ConfigError(
                "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.")
        if not self.model_config_file and not self.model_base_path:
            raise ConfigError("Both server_options.model_base_path and server_options.model_config_file are empty!")
        if self.batching_parameters_file and not self.enable_batching:
            raise ConfigError("server_options.batching_parameters_file is set without setting "
                              "server_options.enable_batching to true.")
        if (self.tensorflow_intra_op_parallelism > 0 and self.tensorflow_inter_op_parallelism > 0
                and self.tensorflow_session_parallelism > 0):
            raise ConfigError("Either configure server_options.tensorflow_session_parallelism or "
                              "(server_options.tensorflow_intra_op_parallelism, "
                              "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all.")
        if not 0.0 <= self.per_process_gpu_memory_fraction <= 1.0:
            raise ConfigError("--per_process_gpu_memory_fraction must be between 0.0 and 1.0, got "
                              f"{self.per_process_gpu_memory_fraction}")
        if self.num_tflite_pools < 1:
            raise ConfigError(f"--num_tflite_pools must be at least 1, got {self.num_tflite_pools}")

    @property
    def load_retry_interval_seconds(self) -> float:
        """--load_retry_interval_micros in seconds (negative: no wait, as TF Serving)."""
        return max(0.0, self.load_retry_interval_micros / 1e6)

    @property
    def tags(self) -> list[str]:
        """--saved_model_tags as the MetaGraph tag set to load."""
        return [t for t in self.saved_model_tags.split(",") if t]

    def session_config(self) -> Any:
        """The session ConfigProto of every TensorFlow model (Server::BuildAndStart's precedence)."""
        from tensorflow.core.protobuf import config_pb2

        config = config_pb2.ConfigProto()
        if self.tensorflow_session_config_file:
            read_text_proto(self.tensorflow_session_config_file, config)
        config.gpu_options.per_process_gpu_memory_fraction = self.per_process_gpu_memory_fraction
        if self.tensorflow_intra_op_parallelism > 0 or self.tensorflow_inter_op_parallelism > 0:
            config.intra_op_parallelism_threads = self.tensorflow_intra_op_parallelism
            config.inter_op_parallelism_threads = self.tensorflow_inter_op_parallelism
        else:
            config.intra_op_parallelism_threads = self.tensorflow_session_parallelism
            config.inter_op_parallelism_threads = self.tensorflow_session_parallelism
        return config

    def model_server_config(self) -> Any:
        """The ``ModelServerConfig`` to serve: the config file's, or one model from --model_name/--model_base_path."""
        if self.model_config_file:
            return load_model_server_config(self.model_config_file)
        return single_model_config(self.model_name, self.model_base_path)


def _tf_serving_name(message: Any) -> str:
    """The message's name as TF Serving's parser prints it (our copies live in another proto package)."""
    full_name = message.DESCRIPTOR.full_name
    if full_name.startswith("glimpse.serving_config."):
        return "tensorflow.serving." + message.DESCRIPTOR.name
    return full_name


def read_text_proto(path: str | Path, message: Any) -> Any:
    """Parse a text-format protobuf file into ``message`` (a fresh message instance) and return it.

    A parse error reads like TF Serving's ParseProtoTextFile: protobuf's
    ``Error parsing text-format <message>: LINE:COLUMN: <what>`` line, then ``Invalid protobuf file: '<path>'``."""
    from google.protobuf import text_format

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as e:
        line, column = e.GetLine(), e.GetColumn()
        what = str(e)
        prefix = f"{line}:{column} : "
        if what.startswith(prefix):
            what = what[len(prefix):]
        where = f"{line}:{column}: " if line is not None else ""
        raise ConfigError(f"Error parsing text-format {_tf_serving_name(message)}: {where}{what}\n"
                          f"Invalid protobuf file: '{path}'") from e


def load_model_server_config(path: str | Path) -> Any:
    """A ``--model_config_file`` as ``tensorflow.serving.ModelServerConfig``."""
    from tensorflow_serving.config import model_server_config_pb2

    return read_text_proto(path, model_server_config_pb2.ModelServerConfig())


def single_model_config(name: str, base_path: str) -> Any:
    """The config tensorflow_model_server builds from --model_name and --model_base_path."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = _TENSORFLOW_PLATFORM
    return config


@dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters resolved to values (TF Serving's BasicBatchScheduler defaults where a field is unset)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=_cpus)
    thread_pool_name: str = DEFAULT_BATCH_THREAD_POOL
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be positive; was {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise ConfigError(f"batch_timeout_micros must be non-negative; was {self.batch_timeout_micros}")
        if self.num_batch_threads < 1:
            raise ConfigError(f"num_batch_threads must be positive; was {self.num_batch_threads}")
        if self.max_enqueued_batches < 1:
            raise ConfigError(f"max_enqueued_batches must be positive; was {self.max_enqueued_batches}")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] < 1:
                raise ConfigError("allowed_batch_sizes entries must be monotonically increasing")
            if sizes[-1] != self.max_batch_size:
                raise ConfigError("Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                                  f"{sizes[-1]}; expected {self.max_batch_size}")


def load_batching_options(path: str | Path | None) -> BatchingOptions:
    """``--batching_parameters_file`` (text ``BatchingParameters``) resolved to :class:`BatchingOptions`."""
    if not path:
        return BatchingOptions()
    from serving._proto import session_bundle_config_pb2

    params = read_text_proto(path, session_bundle_config_pb2.BatchingParameters())
    defaults = BatchingOptions()
    kwargs: dict[str, Any] = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
                 "thread_pool_name"):
        kwargs[name] = getattr(params, name).value if params.HasField(name) else getattr(defaults, name)
    kwargs["allowed_batch_sizes"] = tuple(int(v) for v in params.allowed_batch_sizes)
    kwargs["pad_variable_length_inputs"] = bool(params.pad_variable_length_inputs)
    return BatchingOptions(**kwargs)


@dataclass(frozen=True)
class MonitoringOptions:
    """MonitoringConfig resolved: whether Prometheus text is exposed, and at which REST path."""

    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


def load_monitoring_options(path: str | Path | None) -> MonitoringOptions:
    """``--monitoring_config_file`` (text ``MonitoringConfig``) resolved to :class:`MonitoringOptions`."""
    if not path:
        return MonitoringOptions()
    from serving._proto import monitoring_config_pb2

    config = read_text_proto(path, monitoring_config_pb2.MonitoringConfig())
    prom = config.prometheus_config
    path_value = prom.path or DEFAULT_PROMETHEUS_PATH
    if not path_value.startswith("/"):
        raise ConfigError(f"prometheus_config.path must start with '/', got {path_value!r}")
    return MonitoringOptions(prometheus_enabled=bool(prom.enable), prometheus_path=path_value)


def load_ssl_config(path: str | Path) -> Any:
    """``--ssl_config_file`` (text ``SSLConfig``: server_key, server_cert, custom_ca, client_verify)."""
    from serving._proto import ssl_config_pb2

    return read_text_proto(path, ssl_config_pb2.SSLConfig())


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """``--grpc_channel_arguments`` ("key=value,key2=value2"): values that parse as int are passed as int."""
    result: list[tuple[str, int | str]] = []
    for item in (s for s in text.split(",") if s.strip()):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        value = value.strip()
        try:
            result.append((key.strip(), int(value)))
        except ValueError:
            result.append((key.strip(), value))
    return result
