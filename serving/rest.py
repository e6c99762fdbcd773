"""TF Serving's REST API (``--rest_api_port``) as a WSGI app, and a pooled HTTP server for it.

Routes and messages are those of TF Serving's http_rest_api_handler.cc / http_rest_api_util.cc:
``GET /v1/models/{m}[/versions/{v}|/labels/{l}]`` (status), ``GET .../metadata``,
``POST /v1/models/{m}[/versions/{v}|/labels/{l}]:(predict|classify|regress)``; anything else under ``/v1/`` is
``Malformed request``. Errors are ``{"error": "<message>"}`` with the HTTP status of the gRPC code
(``glimpse_wire.errors.http_status_for``). The Prometheus page, when enabled, is served on the same port. An
``OPTIONS`` request (a CORS preflight) is answered 200 when it carries an ``Origin`` of ``http(s)://...`` and 400
otherwise, as http_server.cc does; with ``--rest_api_enable_cors_support`` every API answer carries TF Serving's
three ``Access-Control-Allow-*`` headers.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from glimpse_wire.errors import InvalidArgument, ServingError, http_status_for
from serving import json_tensor
from serving.service import METADATA_SIGNATURE_DEF, InferenceService

__all__ = ["RestApp", "RestServer"]

log = logging.getLogger("serving.rest")

_PREDICTION = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE
)
_STATUS = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE
)
_V1 = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_INT64_MAX = 2**63 - 1
_JSON = "application/json"
_ORIGIN = re.compile(r"https?://")
_CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)


def _print_options() -> dict[str, Any]:
    return {"always_print_fields_with_no_presence": True, "indent": 1}


class RestApp:
    """The REST API over an :class:`InferenceService` (a WSGI callable)."""

    def __init__(
        self,
        service: InferenceService,
        *,
        timeout_in_ms: int = 30000,
        metrics_path: str | None = None,
        render_metrics: Callable[[], bytes] | None = None,
        cors: bool = False,
    ) -> None:
        self.service = service
        self.timeout_in_ms = timeout_in_ms
        self.metrics_path = metrics_path
        self.render_metrics = render_metrics
        self.cors = cors

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path, method = request.path, request.method
        if self.metrics_path and self.render_metrics and path == self.metrics_path and method == "GET":
            from serving.monitoring import CONTENT_TYPE

            return Response(self.render_metrics(), status=200, content_type=CONTENT_TYPE)
        if not _V1.fullmatch(path):
            return Response(b"", status=404)
        response = self._answer(request, method, path)
        if self.cors:
            for key, value in _CORS_HEADERS:
                response.headers[key] = value
        return response

    def _answer(self, request: Request, method: str, path: str) -> Response:
        if method == "OPTIONS":
            if _ORIGIN.search(request.headers.get("Origin", "")):
                return Response(b"", status=200)
            return Response(b"", status=http_status_for("FAILED_PRECONDITION"))
        try:
            body = self._route(method, path, request.get_data(cache=False))
        except ServingError as e:
            payload = json.dumps({"error": e.message}, ensure_ascii=False)
            return Response(payload, status=http_status_for(e.code), content_type=_JSON)
        except Exception as e:  # a bug must still answer in the API's error shape
            log.exception("Unexpected failure on %s %s", method, path)
            payload = json.dumps({"error": f"{type(e).__name__}: {e}"}, ensure_ascii=False)
            return Response(payload, status=500, content_type=_JSON)
        return Response(body, status=200, content_type=_JSON)

    # -- routing ----------------------------------------------------------------------------------------------
    def _route(self, method: str, path: str, body: bytes) -> str:
        malformed = InvalidArgument(f"Malformed request: {method} {path}")
        if method == "POST":
            match = _PREDICTION.fullmatch(path)
            if match is None:
                raise malformed
            name, version, label, verb = match.groups()
            spec = self._spec(name, version, label)
            verb = verb.lower()
            if verb == "predict":
                return self._predict(spec, body)
            if verb == "classify":
                return self._classify(spec, body)
            return self._regress(spec, body)
        if method == "GET":
            match = _STATUS.fullmatch(path)
            if match is None:
                raise malformed
            name, version, label, sub = match.groups()
            if not name:
                raise InvalidArgument("Missing model name in request.")
            spec = self._spec(name, version, label)
            if sub:
                return self._metadata(spec)
            return self._status(spec)
        raise malformed

    @staticmethod
    def _spec(name: str, version: str | None, label: str | None) -> Any:
        spec = predict_pb2.PredictRequest().model_spec
        spec.name = name
        if version:
            number = int(version)
            if number > _INT64_MAX:
                raise InvalidArgument(f"Failed to convert version: {version} to numeric.")
            spec.version.value = number
        elif label:
            spec.version_label = label
        return spec

    def _deadline(self) -> float | None:
        return time.monotonic() + self.timeout_in_ms / 1000.0 if self.timeout_in_ms > 0 else None

    # -- APIs -------------------------------------------------------------------------------------------------
    def _predict(self, spec: Any, body: bytes) -> str:
        request = predict_pb2.PredictRequest()
        request.model_spec.CopyFrom(spec)
        doc = json_tensor.parse_json(body)

        def input_dtypes(signature_name: str) -> dict[str, int]:
            lookup = predict_pb2.PredictRequest().model_spec
            lookup.CopyFrom(request.model_spec)
            lookup.signature_name = signature_name
            return self.service.signature_inputs(lookup)

        fmt = json_tensor.fill_predict_request(doc, input_dtypes, request)
        response = self.service.predict(request, deadline=self._deadline(), entrypoint="REST")
        return json_tensor.predict_response_json(response.outputs, fmt)

    def _classify(self, spec: Any, body: bytes) -> str:
        request = classification_pb2.ClassificationRequest()
        request.model_spec.CopyFrom(spec)
        json_tensor.fill_classify_regress_request(json_tensor.parse_json(body), request)
        response = self.service.classify(request, deadline=self._deadline(), entrypoint="REST")
        return json_tensor.classification_json(response.result)

    def _regress(self, spec: Any, body: bytes) -> str:
        request = regression_pb2.RegressionRequest()
        request.model_spec.CopyFrom(spec)
        json_tensor.fill_classify_regress_request(json_tensor.parse_json(body), request)
        response = self.service.regress(request, deadline=self._deadline(), entrypoint="REST")
        return json_tensor.regression_json(response.result)

    def _status(self, spec: Any) -> str:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.CopyFrom(spec)
        response = self.service.get_model_status(request)
        return json_format.MessageToJson(response, **_print_options())

    def _metadata(self, spec: Any) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[METADATA_SIGNATURE_DEF])
        request.model_spec.CopyFrom(spec)
        response = self.service.get_model_metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[METADATA_SIGNATURE_DEF].Unpack(signature_map)
        options = dict(_print_options(), preserving_proto_field_name=True)
        model_spec = json_format.MessageToJson(response.model_spec, **options)
        signatures = json_format.MessageToJson(signature_map, **options)
        return '{\n"model_spec":' + model_spec + ',\n"metadata": {"signature_def": ' + signatures + "}\n}\n"


class _Handler(WSGIRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a pooled thread is never held by an idle client
    timeout = 60  # seconds a read or write may stall before the connection is dropped (a silent client)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s %s", self.command, self.path, code)


class _PooledServer(BaseWSGIServer):
    """werkzeug's WSGI server with requests handled on a fixed pool (``--rest_api_num_threads``)."""

    multithread = True

    def __init__(self, host: str, port: int, app: Any, threads: int) -> None:
        super().__init__(host, port, app, handler=_Handler)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rest")
        self.inflight = 0
        self.idle = threading.Condition()
        self._open: set[Any] = set()  # sockets of the connections being handled

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.idle:
            self.inflight += 1
            self._open.add(request)
        self.pool.submit(self._work, request, client_address)

    def abort_open(self) -> None:
        """End the connections still open (e.g. a client that never finishes its request), so their threads
        return; the pool's threads are joined at interpreter exit, and a blocked read would hold the process."""
        with self.idle:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self.idle:
                self._open.discard(request)
                self.inflight -= 1
                self.idle.notify_all()


class RestServer:
    """Serves a WSGI app on ``host:port`` with ``threads`` workers; ``stop(grace)`` drains in-flight requests."""

    def __init__(self, app: Any, host: str, port: int, threads: int) -> None:
        self._server = _PooledServer(host, port, app, threads)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rest-accept", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace: float) -> bool:
        """Stop accepting, wait up to ``grace`` seconds for in-flight requests; True when all finished."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        deadline = time.monotonic() + grace
        with self._server.idle:
            while self._server.inflight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._server.idle.wait(remaining)
            drained = self._server.inflight == 0
        if not drained:
            self._server.abort_open()
        self._server.pool.shutdown(wait=drained)
        return drained
