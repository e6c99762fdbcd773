"""``glimpse api`` / ``python -m explain_api``: the explain API under gunicorn (gthread workers).

``configure_api`` only adds flags (it imports nothing heavy, so ``glimpse --help`` stays fast); ``run_api`` builds the
``ApiConfig`` from flags and the environment and runs gunicorn programmatically. Gunicorn shuts down gracefully on
SIGTERM: it stops accepting, lets requests in flight finish within ``--graceful-timeout``, then exits.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["configure_api", "gunicorn_options", "run_api"]


def configure_api(parser: argparse.ArgumentParser) -> None:
    """Flags of ``glimpse api``. Defaults of None fall back to the environment, then to ``ApiConfig``'s defaults."""
    parser.add_argument("--host", default="0.0.0.0", help="interface to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    parser.add_argument(
        "--serving-address",
        default=None,
        metavar="HOST:PORT",
        help="gRPC address of TF Serving or `glimpse serve` (env SERVING_ADDRESS, default localhost:8500)",
    )
    parser.add_argument(
        "--default-model",
        default=None,
        metavar="NAME",
        help="model used by /readyz and the page (env GLIMPSE_DEFAULT_MODEL)",
    )
    parser.add_argument(
        "--models", default=None, metavar="A,B", help="more model names listed by GET /v1/models (env GLIMPSE_MODELS)"
    )
    parser.add_argument("--workers", type=int, default=1, help="gunicorn worker processes (default 1)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker (default 8)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds allowed for each call to the model server (default 30)"
    )
    parser.add_argument(
        "--graceful-timeout", type=int, default=20, help="seconds in-flight requests get at shutdown (default 20)"
    )
    parser.add_argument("--max-body-bytes", type=int, default=None, help="request body limit (default 20 MB)")
    parser.add_argument("--max-pixels", type=int, default=None, help="pixel limit per image (default 40 MP)")
    parser.add_argument("--max-images", type=int, default=None, help="images per request (default 16)")
    parser.add_argument("--top-k", type=int, default=None, help="predictions returned per image (default 5)")
    parser.add_argument(
        "--cors-origins", default=None, metavar="ORIGINS", help="comma-separated origins or '*' (default: CORS off)"
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--access-log", action="store_true", help="log every request to stdout")


def _csv(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Any:
    """The ``ApiConfig`` of parsed flags (flags win over the environment)."""
    from explain_api.config import ApiConfig

    return ApiConfig.from_env(
        os.environ if env is None else env,
        serving_address=args.serving_address,
        default_model=args.default_model,
        models=_csv(args.models),
        cors_origins=_csv(args.cors_origins),
        timeout_s=args.timeout,
        max_body_bytes=args.max_body_bytes,
        max_pixels=args.max_pixels,
        max_images=args.max_images,
        top_k=args.top_k,
    )


def gunicorn_options(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    """Gunicorn settings for ``glimpse api``."""
    if args.workers < 1 or args.threads < 1:
        raise ValueError("--workers and --threads must be >= 1")
    return {
        "bind": f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}",
        "workers": args.workers,
        "threads": args.threads,
        "worker_class": "gthread",
        # The worker timeout must outlast the slowest legitimate request (several serving calls).
        "timeout": int(max(30, config.timeout_s * 2 + 10)),
        "graceful_timeout": args.graceful_timeout,
        "keepalive": 5,
        "loglevel": args.log_level,
        "errorlog": "-",
        "accesslog": "-" if args.access_log else None,
        "proc_name": "glimpse-api",
        "preload_app": False,  # each worker opens its own gRPC channel after the fork
        "limit_request_field_size": 16384,
    }


def _gunicorn_app(factory: Callable[[], Any], options: Mapping[str, Any]) -> Any:
    from gunicorn.app.base import BaseApplication

    class GlimpseApi(BaseApplication):
        """Gunicorn driven from code: settings from ``options``, the app built in each worker."""

        def __init__(self) -> None:
            self._options = dict(options)
            super().__init__()

        def load_config(self) -> None:
            for key, value in self._options.items():
                if value is not None and key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return factory()

    return GlimpseApi()


def run_api(args: argparse.Namespace) -> int:
    """Run the API until SIGTERM/SIGINT."""
    from explain_api.config import ConfigError

    try:
        config = config_from_args(args)
        options = gunicorn_options(args, config)
    except (ConfigError, ValueError) as e:
        print(f"glimpse api: {e}")
        return 2

    def factory() -> Any:
        from explain_api.allocator import tune_allocator
        from explain_api.app import create_app

        tune_allocator()  # in the worker, before its threads start

        return create_app(config)

    print(
        f"glimpse api: http://{args.host}:{args.port}/ -> model server {config.serving_address}"
        + (f", default model {config.default_model}" if config.default_model else ""),
        flush=True,
    )
    try:
        _gunicorn_app(factory, options).run()
    except SystemExit as e:  # gunicorn's arbiter exits through sys.exit
        return int(e.code or 0) if isinstance(e.code, int) or e.code is None else 1
    return 0
