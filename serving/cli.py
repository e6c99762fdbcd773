"""`glimpse serve` / `python -m serving`: tensorflow_model_server's command line.

Every flag of tensorflow_model_server (main.cc) is known here and gets one of three answers (:data:`FLAG_ANSWERS`,
the table in serving/README.md): implemented; accepted with a one-line warning where ignoring it cannot change an
answer; or refused, naming the flag and why (exit code 2). The syntax is TF Serving's: ``--flag=value`` and
``--flag value`` both work; booleans also accept a bare ``--flag``, ``--flag=true`` and ``--flag=false``.
``--docker [--gpu] [--image ...]`` starts the real ``tensorflow/serving`` container with the same flags instead.
Nothing heavy is imported until :func:`run_serve` runs.
"""

from __future__ import annotations

import argparse
import enum
import logging
import signal
import sys
import threading
from importlib import metadata
from typing import Any

from glimpse_wire.booleans import bool_arg
from serving.config import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT, ConfigError, ServerConfig

__all__ = ["Answer", "FLAG_ANSWERS", "configure_serve", "check_tf_only_flags", "run_serve", "config_from_args", "main"]


class Answer(enum.Enum):
    """What `glimpse serve` does with a tensorflow_model_server flag."""

    IMPLEMENTED = "implemented"
    WARNED = "accepted with a warning"
    REFUSED = "refused"


# Every flag of tensorflow_model_server's main.cc (tensorflow/serving at the commit serving/README.md names) with its
# answer and, for warned and refused flags, the reason given to the user.
FLAG_ANSWERS: dict[str, tuple[Answer, str]] = {
    "port": (Answer.IMPLEMENTED, ""),
    "grpc_socket_path": (Answer.IMPLEMENTED, ""),
    "rest_api_port": (Answer.IMPLEMENTED, ""),
    "rest_api_num_threads": (Answer.IMPLEMENTED, ""),
    "rest_api_timeout_in_ms": (Answer.IMPLEMENTED, ""),
    "rest_api_enable_cors_support": (Answer.IMPLEMENTED, ""),
    "enable_batching": (Answer.IMPLEMENTED, ""),
    "allow_version_labels_for_unavailable_models": (Answer.IMPLEMENTED, ""),
    "batching_parameters_file": (Answer.IMPLEMENTED, ""),
    "enable_per_model_batching_parameters": (
        Answer.REFUSED, "per-model batching_params.pbtxt files are not read; use --batching_parameters_file"),
    "model_config_file": (Answer.IMPLEMENTED, ""),
    "model_config_file_poll_wait_seconds": (Answer.IMPLEMENTED, ""),
    "model_name": (Answer.IMPLEMENTED, ""),
    "model_base_path": (Answer.IMPLEMENTED, ""),
    "num_load_threads": (Answer.WARNED, "versions load one at a time; the answers are the same"),
    "num_unload_threads": (Answer.WARNED, "versions unload one at a time; the answers are the same"),
    "max_num_load_retries": (Answer.IMPLEMENTED, ""),
    "load_retry_interval_micros": (Answer.IMPLEMENTED, ""),
    "file_system_poll_wait_seconds": (Answer.IMPLEMENTED, ""),
    "flush_filesystem_caches": (Answer.WARNED, "there are no file system caches to flush here"),
    "tensorflow_session_parallelism": (Answer.IMPLEMENTED, ""),
    "tensorflow_session_config_file": (Answer.IMPLEMENTED, ""),
    "tensorflow_intra_op_parallelism": (Answer.IMPLEMENTED, ""),
    "tensorflow_inter_op_parallelism": (Answer.IMPLEMENTED, ""),
    "use_alts_credentials": (Answer.REFUSED, "ALTS credentials exist only on Google Cloud; use --ssl_config_file"),
    "ssl_config_file": (Answer.IMPLEMENTED, ""),
    "platform_config_file": (
        Answer.REFUSED, "a PlatformConfigMap configures TF Serving's C++ source adapters, which are not here"),
    "per_process_gpu_memory_fraction": (Answer.IMPLEMENTED, ""),
    "saved_model_tags": (Answer.IMPLEMENTED, ""),
    "grpc_channel_arguments": (Answer.IMPLEMENTED, ""),
    "grpc_max_threads": (Answer.IMPLEMENTED, ""),
    "enable_model_warmup": (Answer.IMPLEMENTED, ""),
    "num_request_iterations_for_warmup": (Answer.IMPLEMENTED, ""),
    "version": (Answer.IMPLEMENTED, ""),
    "monitoring_config_file": (Answer.IMPLEMENTED, ""),
    "remove_unused_fields_from_bundle_metagraph": (
        Answer.WARNED, "only saves memory; the MetaGraph is kept whole here"),
    "prefer_tflite_model": (Answer.IMPLEMENTED, ""),
    "num_tflite_pools": (Answer.IMPLEMENTED, ""),
    "num_tflite_interpreters_per_pool": (
        Answer.WARNED, "each TFLite interpreter runs whole requests; the answers are the same"),
    "enable_signature_method_name_check": (Answer.IMPLEMENTED, ""),
    "xla_cpu_compilation_enabled": (
        Answer.WARNED, "XLA JIT follows TensorFlow's own default here (ops marked for XLA are compiled)"),
    "xla_gpu_compilation_enabled": (
        Answer.WARNED, "XLA JIT follows TensorFlow's own default here (ops marked for XLA are compiled)"),
    "enable_profiler": (Answer.IMPLEMENTED, ""),
    "thread_pool_factory_config_file": (
        Answer.REFUSED, "ThreadPoolFactoryConfig names C++ thread pool factories, which are not here"),
    "mixed_precision": (Answer.REFUSED, "mixed precision rewrites (bf16) of the graph are not available"),
    "skip_initialize_tpu": (Answer.WARNED, "there is no TPU system to initialize"),
    "enable_grpc_healthcheck_service": (Answer.IMPLEMENTED, ""),
    "enable_serialization_as_tensor_content": (Answer.IMPLEMENTED, ""),
}


def _add_bool(parser: Any, name: str, help_text: str, default: bool = False) -> None:
    parser.add_argument(f"--{name}", type=bool_arg, nargs="?", const=True, default=default, metavar="BOOL",
                        help=help_text)


def configure_serve(parser: argparse.ArgumentParser) -> None:
    """tensorflow_model_server's flags (plus the container launcher's and two Glimpse extensions)."""
    d = ServerConfig.__dataclass_fields__
    parser.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT,
                        help="gRPC port (default 8500; 0 = no TCP listener, then --grpc_socket_path is needed).")
    parser.add_argument("--grpc_socket_path", default="",
                        help="Also listen for gRPC on this Unix domain socket (clients use unix:PATH).")
    parser.add_argument("--rest_api_port", type=int, default=DEFAULT_REST_PORT,
                        help="REST port (default 8501; 0 turns the REST API off).")
    parser.add_argument("--rest_api_num_threads", type=int, default=None,
                        help="Threads serving REST requests (default 4 x CPUs).")
    parser.add_argument("--rest_api_timeout_in_ms", type=int, default=d["rest_api_timeout_in_ms"].default,
                        help="Timeout of a REST call in ms (default 30000; 0 = none).")
    _add_bool(parser, "rest_api_enable_cors_support", "Add CORS headers to REST responses.")
    parser.add_argument("--model_name", default="default", help="Name of the model (ignored with --model_config_file).")
    parser.add_argument("--model_base_path", default="",
                        help="Path holding the model's version directories (ignored with --model_config_file).")
    parser.add_argument("--model_config_file", default="",
                        help="A text ModelServerConfig: several models, version policies, labels.")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0,
                        help="Re-read --model_config_file every N seconds (0 = read once).")
    parser.add_argument("--file_system_poll_wait_seconds", type=int, default=1,
                        help="Poll the base paths for new and removed versions every N seconds (default 1).")
    parser.add_argument("--max_num_load_retries", type=int, default=d["max_num_load_retries"].default,
                        help="Retries of a failed load before giving up (default 5; 0 = one try).")
    parser.add_argument("--load_retry_interval_micros", type=int, default=d["load_retry_interval_micros"].default,
                        help="Microseconds between load retries (default one minute; negative = no wait).")
    _add_bool(parser, "enable_batching", "Merge concurrent requests into batches.")
    parser.add_argument("--batching_parameters_file", default="", help="A text BatchingParameters file.")
    parser.add_argument("--monitoring_config_file", default="",
                        help="A text MonitoringConfig (prometheus_config { enable: true path: ... }).")
    _add_bool(parser, "allow_version_labels_for_unavailable_models",
              "Allow a new version label to point at a version that is not loaded yet.")
    parser.add_argument("--grpc_max_threads", type=int, default=None, help="gRPC worker threads (default 4 x CPUs).")
    parser.add_argument("--grpc_channel_arguments", default="",
                        help="Comma-separated key=value gRPC channel arguments.")
    parser.add_argument("--ssl_config_file", default="",
                        help="A text SSLConfig (server_key, server_cert, custom_ca, client_verify): TLS on gRPC.")
    _add_bool(parser, "enable_grpc_healthcheck_service",
              "Also report ModelService and PredictionService in the gRPC health service.")
    _add_bool(parser, "enable_signature_method_name_check",
              "Check signature method names for Predict/Classify/Regress (TF1 behaviour).")
    _add_bool(parser, "enable_serialization_as_tensor_content",
              "Write Predict outputs as tensor_content instead of typed fields.")
    parser.add_argument("--tensorflow_session_parallelism", type=int, default=0,
                        help="Intra- and inter-op threads of each session (0 = TensorFlow's choice).")
    parser.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                        help="Intra-op threads of each model's session (0 = TensorFlow's choice).")
    parser.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                        help="Inter-op threads of each model's session (0 = TensorFlow's choice).")
    parser.add_argument("--tensorflow_session_config_file", default="",
                        help="A text tensorflow.ConfigProto for every model's session.")
    parser.add_argument("--per_process_gpu_memory_fraction", type=float, default=0.0,
                        help="Fraction of GPU memory each session may take (0 = TensorFlow's choice).")
    parser.add_argument("--saved_model_tags", default="serve",
                        help="Comma-separated tags of the MetaGraph to load (default serve).")
    _add_bool(parser, "enable_model_warmup", "Replay assets.extra/tf_serving_warmup_requests at load (default true).",
              default=True)
    parser.add_argument("--num_request_iterations_for_warmup", type=int, default=0,
                        help="Replay each warm-up record this many times (used when > 0).")
    _add_bool(parser, "prefer_tflite_model",
              "Serve model.tflite of a version directory (TFLite interpreter) when it has one.")
    parser.add_argument("--num_tflite_pools", type=int, default=None,
                        help="TFLite interpreters per model version (default: CPUs).")
    _add_bool(parser, "enable_profiler", "Serve TensorFlow's profiler service on the gRPC port (default true).",
              default=True)
    parser.add_argument("--version", action="store_true", help="Print the versions and exit.")
    tf_only = parser.add_argument_group("tensorflow_model_server flags accepted with a warning, or refused")
    for name, (answer, _why) in FLAG_ANSWERS.items():
        if answer is Answer.IMPLEMENTED:
            continue
        tf_only.add_argument(f"--{name}", default=None, nargs="?", const="true", metavar="VALUE",
                             help=f"{answer.value}: {_why}")
    glimpse = parser.add_argument_group("Glimpse extensions (not tensorflow_model_server flags)")
    glimpse.add_argument("--bind_address", default="0.0.0.0", help="Address both servers listen on (default 0.0.0.0).")
    glimpse.add_argument("--shutdown_grace_seconds", type=float, default=10.0,
                         help="On SIGTERM/SIGINT, how long in-flight requests may take to finish (default 10).")
    docker = parser.add_argument_group("container launcher")
    docker.add_argument("--docker", action="store_true",
                        help="Run the real tensorflow/serving container (Docker engine) with these flags instead.")
    docker.add_argument("--gpu", action="store_true", help="With --docker: the GPU image and all GPUs.")
    docker.add_argument("--image", default=None,
                        help="With --docker: the image (default tensorflow/serving[:latest-gpu]).")
    docker.add_argument("--wait_timeout_seconds", type=float, default=300.0,
                        help="With --docker: how long to wait for the model to become AVAILABLE.")


# The value of a warned or refused flag that means "not used" (main.cc's defaults).
_UNUSED: dict[str, Any] = {
    "enable_per_model_batching_parameters": False,
    "num_load_threads": 0,
    "num_unload_threads": 0,
    "flush_filesystem_caches": True,
    "use_alts_credentials": False,
    "platform_config_file": "",
    "remove_unused_fields_from_bundle_metagraph": True,
    "num_tflite_interpreters_per_pool": 1,
    "xla_cpu_compilation_enabled": False,
    "xla_gpu_compilation_enabled": False,
    "thread_pool_factory_config_file": "",
    "mixed_precision": "",
    "skip_initialize_tpu": False,
}


def _is_unused(name: str, text: str) -> bool:
    default = _UNUSED[name]
    if isinstance(default, bool):
        try:
            return bool_arg(text) == default
        except argparse.ArgumentTypeError:
            return False
    if isinstance(default, int):
        try:
            return int(text) == default
        except ValueError:
            return False
    return text == default


def check_tf_only_flags(args: argparse.Namespace, log: logging.Logger | None = None) -> list[str]:
    """Warn about the accepted-but-ignored flags that were set; ConfigError naming the first refused one set."""
    warnings: list[str] = []
    for name, (answer, why) in FLAG_ANSWERS.items():
        if answer is Answer.IMPLEMENTED:
            continue
        value = getattr(args, name, None)
        if value is None or _is_unused(name, value):
            continue
        if answer is Answer.REFUSED:
            raise ConfigError(f"--{name}={value} is not supported: {why}")
        warnings.append(f"--{name}={value} is accepted and ignored: {why}")
    for line in warnings:
        (log or logging.getLogger("serving")).warning("%s", line)
    return warnings


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The parsed flags as a :class:`ServerConfig` (ConfigError on values TF Serving would refuse, and on refused
    flags); set flags that are accepted and ignored are logged as warnings."""
    check_tf_only_flags(args)
    kwargs: dict[str, Any] = {}
    for name in ServerConfig.__dataclass_fields__:
        value = getattr(args, name, None)
        if value is not None:
            kwargs[name] = value
    return ServerConfig(**kwargs)


def _versions() -> str:
    """``--version``: this server's and TensorFlow's versions, in tensorflow_model_server's two lines."""
    lines = []
    for label, dist in (("TensorFlow ModelServer", "glimpse"), ("TensorFlow Library", "tensorflow")):
        try:
            lines.append(f"{label}: {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{label}: unknown")
    return "\n".join(lines)


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d: %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )


def run_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT (then stop gracefully and return 0), or the container launcher."""
    _configure_logging()
    log = logging.getLogger("serving")
    if getattr(args, "version", False):
        print(_versions())
        return 0
    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"glimpse serve: {e}", file=sys.stderr)
        return 2
    if getattr(args, "docker", False):
        from serving.docker_launch import DockerError, launch_from_config

        try:
            launch_from_config(config, gpu=args.gpu, image=args.image, wait_timeout=args.wait_timeout_seconds)
        except DockerError as e:
            print(f"glimpse serve --docker: {e}", file=sys.stderr)
            return 1
        return 0

    from serving.server import ModelServer, ServerStartError

    stop = threading.Event()
    server: ModelServer | None = None

    def on_signal(signum: int, frame: Any) -> None:
        log.info("Received %s", signal.Signals(signum).name)
        stop.set()
        if server is not None:  # a start still waiting for a model's first version gives up
            server.manager.stop(unload=False, timeout=0)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            server = ModelServer(config)
            server.start()
        except ServerStartError as e:
            log.error("%s", e)
            return 1
        while not stop.wait(0.5):
            pass
        server.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """``python -m serving``: parse tensorflow_model_server's flags and run."""
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    configure_serve(parser)
    return run_serve(parser.parse_args(argv))
