"""`glimpse serve`: the model server assembled from its parts, started and stopped like tensorflow_model_server.

Start-up follows TF Serving's order: the initial ModelServerConfig is applied (models loaded, warmed up; a model
with versions none of which becomes AVAILABLE fails the start), then the gRPC server and the REST server start, then
the base paths and the config file are polled. ``stop(grace)`` stops accepting requests, lets in-flight ones finish
within the grace period, drains the batch queues and unloads every version.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from glimpse_wire.errors import ServingError
from serving.batching import BatchScheduler
from serving.config import (
    ConfigError,
    ServerConfig,
    load_batching_options,
    load_model_server_config,
    load_monitoring_options,
    load_ssl_config,
    parse_channel_arguments,
)
from serving.grpc_service import GrpcServer
from serving.manager import ModelManager
from serving.monitoring import Metrics
from serving.rest import RestApp, RestServer
from serving.service import InferenceService

__all__ = ["ModelServer", "ServerStartError", "session_loader"]

log = logging.getLogger("serving.server")


class ServerStartError(RuntimeError):
    """The server could not start (bad config, a model that did not load, a port in use)."""


def session_loader(config: ServerConfig) -> Any:
    """``path -> servable``: a SessionModel with the session options and tags of the flags, or with
    --prefer_tflite_model and a ``model.tflite`` in the version directory, a TfLiteModel."""
    from serving.session import SessionModel
    from serving.tflite import TfLiteModel, has_tflite_model

    session_config = config.session_config()
    tags = config.tags

    def load(path: str) -> Any:
        if config.prefer_tflite_model and has_tflite_model(path):
            return TfLiteModel(path, num_interpreters=config.num_tflite_pools)
        return SessionModel(path, session_config=session_config, tags=tags)

    return load


@dataclass
class _Parts:
    grpc: GrpcServer | None = None
    rest: RestServer | None = None


class ModelServer:
    """One server process's worth of serving: manager, batching, metrics, gRPC and REST."""

    def __init__(self, config: ServerConfig, *, loader: Any = None) -> None:
        self.config = config
        try:
            self.monitoring = load_monitoring_options(config.monitoring_config_file)
            self.batching = load_batching_options(config.batching_parameters_file) if config.enable_batching else None
            self.channel_arguments = parse_channel_arguments(config.grpc_channel_arguments)
            self.ssl = load_ssl_config(config.ssl_config_file) if config.ssl_config_file else None
            self._initial_config = config.model_server_config()
            self._loader = loader or session_loader(config)
        except ConfigError as e:
            raise ServerStartError(str(e)) from e
        self.metrics = Metrics()
        self.batcher = (
            BatchScheduler(
                self.batching,
                on_queued=lambda s: self.metrics.record_queuing(self.batching.thread_pool_name, s),  # type: ignore
                on_run=self.metrics.record_wrapped_run,
            )
            if self.batching is not None
            else None
        )
        self._parts = _Parts()
        self.manager = ModelManager(
            self._loader,
            warmup=(lambda name, version, servable, path: self.service.warmup(name, version, servable, path))
            if config.enable_model_warmup else None,
            on_change=self._on_change,
            file_system_poll_wait_seconds=config.file_system_poll_wait_seconds,
            allow_version_labels_for_unavailable_models=config.allow_version_labels_for_unavailable_models,
            max_num_load_retries=config.max_num_load_retries,
            load_retry_interval_seconds=config.load_retry_interval_seconds,
        )
        self.service = InferenceService(
            self.manager,
            batcher=self.batcher,
            metrics=self.metrics,
            method_name_check=config.enable_signature_method_name_check,
            warmup_iterations=config.num_request_iterations_for_warmup,
            tensor_content=config.enable_serialization_as_tensor_content,
        )
        self._stop_polling = threading.Event()
        self._config_thread: threading.Thread | None = None
        self._config_text: str | None = None
        self.grpc_port: int | None = None
        self.rest_port: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.manager.reload_config(self._initial_config)
        except ServingError as e:
            self._shutdown_workers()
            raise ServerStartError(f"Failed to start server. Error: {e.code}: {e.message}") from e
        if self.config.model_config_file:
            self._config_text = self._initial_config.SerializeToString(deterministic=True)
        host = self.config.bind_address
        grpc_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        try:
            addresses = [f"{grpc_host}:{self.config.port}"] if self.config.port else []
            if self.config.grpc_socket_path:
                addresses.append(f"unix:{self.config.grpc_socket_path}")
            self._parts.grpc = GrpcServer(
                self.service,
                addresses,
                max_workers=self.config.grpc_max_threads,
                channel_arguments=self.channel_arguments,
                ssl=self.ssl,
                profiler=self.config.enable_profiler,
            )
            if self.config.rest_api_port and self.config.rest_api_port == self.config.port:
                log.error("server_options.http_port cannot be same as grpc_port. Please use a different port for "
                          "HTTP/REST API. Skipped exporting HTTP/REST API.")
            elif self.config.rest_api_port:
                app = RestApp(
                    self.service,
                    timeout_in_ms=self.config.rest_api_timeout_in_ms,
                    metrics_path=self.monitoring.prometheus_path if self.monitoring.prometheus_enabled else None,
                    render_metrics=self.metrics.render,
                    cors=self.config.rest_api_enable_cors_support,
                )
                self._parts.rest = RestServer(app, host, self.config.rest_api_port, self.config.rest_api_num_threads)
        except (OSError, RuntimeError) as e:
            self._shutdown_workers()
            raise ServerStartError(f"Failed to start server. Error: {e}") from e
        if self.monitoring.prometheus_enabled and not self.config.rest_api_port:
            log.warning("Prometheus metrics are served on the REST port; --rest_api_port=0 leaves them unexposed")
        grpc_server = self._parts.grpc
        grpc_server.set_serving("", True)
        if self.config.enable_grpc_healthcheck_service:
            for service_name in ("ModelService", "PredictionService"):
                grpc_server.set_serving(service_name, True)
        for name in self.manager.model_names():
            grpc_server.set_serving(name, self.manager.is_available(name))
        grpc_server.start()
        self.grpc_port = grpc_server.port
        if self.config.port:
            log.info("Running gRPC ModelServer at %s:%d ...", host, grpc_server.port)
        if self.config.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", self.config.grpc_socket_path)
        if self._parts.rest is not None:
            self._parts.rest.start()
            self.rest_port = self._parts.rest.port
            log.info("Exporting HTTP/REST API at:%s:%d ...", host, self._parts.rest.port)
        self.manager.start()
        if self.config.model_config_file and self.config.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(target=self._poll_config, name="config-poller", daemon=True)
            self._config_thread.start()

    def stop(self, grace: float | None = None) -> bool:
        """Graceful stop; True when every in-flight request finished within the grace period."""
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        log.info("Shutting down: no new requests, %.1f s for the ones in flight", grace)
        self._stop_polling.set()
        drained = True
        if self._parts.rest is not None:
            drained &= self._parts.rest.stop(grace)
        if self._parts.grpc is not None:
            drained &= self._parts.grpc.stop(grace)
        self._shutdown_workers()
        log.info("Server stopped%s", "" if drained else " (some requests did not finish in time)")
        return drained

    def _shutdown_workers(self) -> None:
        self._stop_polling.set()
        if self.batcher is not None:
            self.batcher.close()
        self.manager.stop(unload=True)

    # -- callbacks and pollers ----------------------------------------------------------------------------------
    def _on_change(self, name: str) -> None:
        if self._parts.grpc is not None:
            self._parts.grpc.set_serving(name, self.manager.is_available(name))

    def _poll_config(self) -> None:
        wait = self.config.model_config_file_poll_wait_seconds
        while not self._stop_polling.wait(wait):
            try:
                config = load_model_server_config(self.config.model_config_file)
            except ConfigError as e:
                log.error("Failed to read the model config file: %s", e)
                continue
            text = config.SerializeToString(deterministic=True)
            if text == self._config_text:
                continue
            self._config_text = text
            try:
                self.manager.reload_config(config)
                for name in self.manager.model_names():
                    self._on_change(name)
            except ServingError as e:
                log.error("ReloadConfig failed: %s: %s", e.code, e.message)
