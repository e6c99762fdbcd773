"""Regenerate ``serving/_proto`` from ``serving/protos/*.proto`` (grpcio-tools' protoc).

    python -m serving._regen            # rewrite the generated modules
    python -m serving._regen --check    # exit 1 when the committed modules are stale

The two messages tensorflow-serving-api does not ship (BatchingParameters, MonitoringConfig) are declared in
``serving/protos`` under our own proto package ``glimpse.serving_config`` with TF Serving's field names and numbers,
so their text-format config files parse unchanged. protoc names each module after its .proto path
(``serving.protos.x_pb2``); the modules live in ``serving._proto``, so module references are rewritten.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

__all__ = ["PROTO_DIR", "OUT_DIR", "generate", "main"]

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parent
PROTO_DIR = _PACKAGE_DIR / "protos"
OUT_DIR = _PACKAGE_DIR / "_proto"

_HEADER = "# ruff: noqa\n"
_INIT = '"""Generated protobuf modules (``python -m serving._regen``). Do not edit."""\n'


def _rewrite(text: str) -> str:
    text = text.replace("serving.protos.", "serving._proto.")
    return _HEADER + text.replace("from serving.protos import", "from serving._proto import")


def generate() -> dict[str, str]:
    """Run protoc on every .proto under ``serving/protos``; return {file name: content} of the generated modules."""
    from importlib import resources

    from grpc_tools import protoc

    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files under {PROTO_DIR}")
    include = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{_REPO_ROOT}",
                f"-I{include}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                *(str(p.relative_to(_REPO_ROOT)) for p in protos),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc}")
        out = Path(tmp) / "serving" / "protos"
        files = {p.name: _rewrite(p.read_text()) for p in sorted(out.iterdir()) if p.suffix in (".py", ".pyi")}
    files["__init__.py"] = _INIT
    return files


def _stale(files: dict[str, str]) -> list[str]:
    present = {p.name for p in OUT_DIR.glob("*.py*")} if OUT_DIR.is_dir() else set()
    changed = [n for n, t in files.items() if not (OUT_DIR / n).is_file() or (OUT_DIR / n).read_text() != t]
    return sorted(changed) + sorted(present - set(files))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving._regen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the generated modules are stale")
    args = parser.parse_args(argv)
    files = generate()
    stale = _stale(files)
    if args.check:
        if stale:
            print("stale generated modules: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    OUT_DIR.mkdir(exist_ok=True)
    for name in (n for n in stale if n not in files):
        (OUT_DIR / name).unlink()
    for name, text in files.items():
        (OUT_DIR / name).write_text(text)
    print(f"wrote {len(files)} files to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
