"""Regenerate ``serving/_proto`` from ``serving/protos/*.proto`` (grpcio-tools' protoc).

    python -m serving._regen            # rewrite the generated modules
    python -m serving._regen --check    # exit 1 when the committed modules are stale

The two messages tensorflow-serving-api does not ship (BatchingParameters, MonitoringConfig) are declared in
``serving/protos`` under our own proto package ``glimpse.serving_config`` with TF Serving's field names and numbers,
so their text-format config files parse unchanged. protoc names each module after its .proto path
(``serving.protos.x_pb2``); the modules live in ``serving._proto``, so module references are rewritten.
"""

from __future__ import annotations

from pathlib import Path

from glimpse_wire._protogen import ProtoPackage, main

__all__ = ["PACKAGE", "main"]

_INIT = '"""Generated protobuf modules (``python -m serving._regen``). Do not edit."""\n'
PACKAGE = ProtoPackage(Path(__file__).resolve().parent, _INIT, header="# ruff: noqa\n")

if __name__ == "__main__":
    raise SystemExit(main(PACKAGE))
