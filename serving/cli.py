"""`glimpse serve` / `python -m serving`: tensorflow_model_server's command line.

The flags are tensorflow_model_server's (``--flag=value`` and ``--flag value`` both work; booleans also accept a
bare ``--flag``, ``--flag=true`` and ``--flag=false``), so a command line written for TF Serving runs unchanged.
``--docker [--gpu] [--image ...]`` starts the real ``tensorflow/serving`` container with the same flags instead.
Nothing heavy is imported until :func:`run_serve` runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from serving.config import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT, ConfigError, ServerConfig

__all__ = ["configure_serve", "run_serve", "config_from_args", "main"]

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_bool(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    parser.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=False, metavar="BOOL", help=help_text)


def configure_serve(parser: argparse.ArgumentParser) -> None:
    """tensorflow_model_server's flags (plus the container launcher's and two Glimpse extensions)."""
    d = ServerConfig.__dataclass_fields__
    parser.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port (default 8500).")
    parser.add_argument("--rest_api_port", type=int, default=DEFAULT_REST_PORT,
                        help="REST port (default 8501; 0 turns the REST API off).")
    parser.add_argument("--rest_api_num_threads", type=int, default=None,
                        help="Threads serving REST requests (default 4 x CPUs).")
    parser.add_argument("--rest_api_timeout_in_ms", type=int, default=d["rest_api_timeout_in_ms"].default,
                        help="Timeout of a REST call in ms (default 30000; 0 = none).")
    parser.add_argument("--model_name", default="default", help="Name of the model (ignored with --model_config_file).")
    parser.add_argument("--model_base_path", default="",
                        help="Path holding the model's integer version directories (ignored with --model_config_file).")
    parser.add_argument("--model_config_file", default="",
                        help="A text ModelServerConfig: several models, version policies, labels.")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0,
                        help="Re-read --model_config_file every N seconds (0 = read once).")
    parser.add_argument("--file_system_poll_wait_seconds", type=int, default=1,
                        help="Poll the base paths for new and removed versions every N seconds (default 1).")
    _add_bool(parser, "enable_batching", "Merge concurrent requests into batches.")
    parser.add_argument("--batching_parameters_file", default="", help="A text BatchingParameters file.")
    parser.add_argument("--monitoring_config_file", default="",
                        help="A text MonitoringConfig (prometheus_config { enable: true path: ... }).")
    _add_bool(parser, "allow_version_labels_for_unavailable_models",
              "Allow a new version label to point at a version that is not loaded yet.")
    parser.add_argument("--grpc_max_threads", type=int, default=None, help="gRPC worker threads (default 4 x CPUs).")
    _add_bool(parser, "enable_signature_method_name_check",
              "Check signature method names for Predict/Classify/Regress (TF1 behaviour).")
    parser.add_argument("--grpc_channel_arguments", default="",
                        help="Comma-separated key=value gRPC channel arguments.")
    parser.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                        help="Intra-op threads of each model's session (0 = TensorFlow's choice).")
    parser.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                        help="Inter-op threads of each model's session (0 = TensorFlow's choice).")
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


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The parsed flags as a :class:`ServerConfig` (ConfigError on values TF Serving would refuse)."""
    kwargs: dict[str, Any] = {}
    for name in ServerConfig.__dataclass_fields__:
        value = getattr(args, name, None)
        if value is not None:
            kwargs[name] = value
    return ServerConfig(**kwargs)


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

    def on_signal(signum: int, frame: Any) -> None:
        log.info("Received %s", signal.Signals(signum).name)
        stop.set()

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
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    configure_serve(parser)
    return run_serve(parser.parse_args(argv))
