"""Regenerate a package's protobuf modules from its ``protos/*.proto`` with grpcio-tools' protoc.

protoc names each module after its .proto path (``<package>.protos.x_pb2``); the modules live in
``<package>._proto``, so module references are rewritten to that package. No service stubs are generated.
Used by ``python -m glimpse_wire._regen`` and ``python -m serving._regen`` (``make protos``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProtoPackage", "generate", "stale", "main"]


@dataclass(frozen=True)
class ProtoPackage:
    package_dir: Path  # the Python package holding protos/ and _proto/
    init_doc: str  # content of the generated _proto/__init__.py
    header: str = ""  # prepended to every generated module

    @property
    def name(self) -> str:
        return self.package_dir.name

    @property
    def proto_dir(self) -> Path:
        return self.package_dir / "protos"

    @property
    def out_dir(self) -> Path:
        return self.package_dir / "_proto"

    def rewrite(self, text: str) -> str:
        text = text.replace(f"{self.name}.protos.", f"{self.name}._proto.")
        return self.header + text.replace(f"from {self.name}.protos import", f"from {self.name}._proto import")


def generate(pkg: ProtoPackage) -> dict[str, str]:
    """Run protoc on every .proto of ``pkg``; return {file name: content} of the generated modules."""
    from importlib import resources

    from grpc_tools import protoc

    protos = sorted(pkg.proto_dir.glob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files under {pkg.proto_dir}")
    root = pkg.package_dir.parent
    well_known = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{well_known}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                *(str(p.relative_to(root)) for p in protos),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc}")
        generated = Path(tmp) / pkg.name / "protos"
        files = {p.name: pkg.rewrite(p.read_text()) for p in sorted(generated.iterdir()) if p.suffix in (".py", ".pyi")}
    files["__init__.py"] = pkg.init_doc
    return files


def stale(pkg: ProtoPackage, files: dict[str, str]) -> list[str]:
    """Generated files that differ from (or are missing in, or are extra in) ``pkg``'s committed modules."""
    out = pkg.out_dir
    present = {p.name for p in out.glob("*.py*")} if out.is_dir() else set()
    changed = [n for n, text in files.items() if not (out / n).is_file() or (out / n).read_text() != text]
    return sorted(changed) + sorted(present - set(files))


def main(pkg: ProtoPackage, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {pkg.name}._regen",
                                     description=f"Regenerate {pkg.name}/_proto from {pkg.name}/protos.")
    parser.add_argument("--check", action="store_true", help="only report whether the generated modules are stale")
    args = parser.parse_args(argv)
    files = generate(pkg)
    changed = stale(pkg, files)
    if args.check:
        if changed:
            print("stale generated modules: " + ", ".join(changed), file=sys.stderr)
            return 1
        return 0
    pkg.out_dir.mkdir(exist_ok=True)
    for name in (n for n in changed if n not in files):
        (pkg.out_dir / name).unlink()
    for name, text in files.items():
        (pkg.out_dir / name).write_text(text)
    print(f"wrote {len(files)} files to {pkg.out_dir}")
    return 0
