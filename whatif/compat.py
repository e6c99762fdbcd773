"""Make witwidget 1.8.1 (the What-If Tool) run on today's stack, without editing site-packages.

witwidget 1.8.1 was released for protobuf 3, grpcio's beta API and IPython < 9. Four things break on this stack;
:func:`install` fixes each of them where witwidget looks, and nowhere else:

1. Its vendored ``witwidget._vendor.tensorflow_serving`` protos are too old for protobuf >= 4 ("Descriptors cannot
   be created directly"). Each vendored module name is served by a module that re-exports tensorflow-serving-api's
   modern one (same messages, same descriptors as the rest of the process).
2. It builds its gRPC stub with ``prediction_service_pb2.beta_create_PredictionService_stub``, removed from
   tensorflow-serving-api in 2020. The re-exported ``prediction_service_pb2`` adds
   :func:`beta_create_PredictionService_stub`, which wraps a real ``PredictionServiceStub``.
3. ``witwidget.notebook.jupyter.wit`` imports ``display`` from ``IPython.core.display``, which IPython 9 removed (it
   lives in ``IPython.core.display_functions``, re-exported by ``IPython.display``). Right before that module runs,
   the name is put back where IPython <= 8 had it (the same function object).
4. ``inference_utils.run_inference_for_inference_results`` calls ``json_format.MessageToJson(...,
   including_default_value_fields=True)``, a keyword protobuf 5 removed. ``inference_utils``' own ``json_format``
   name is pointed at a proxy whose ``MessageToJson`` translates it to ``always_print_fields_with_no_presence``.

:func:`install` only puts an import hook on ``sys.meta_path`` (nothing heavy is imported): the fixes apply when
witwidget is imported, whether before or after ``import whatif``'s caller imports it. Modules of witwidget that were
already imported are patched in place.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "VENDORED_PACKAGE",
    "MODERN_PACKAGE",
    "RELOCATED",
    "install",
    "installed",
    "modern_name",
    "vendored_modules",
    "beta_create_PredictionService_stub",
    "message_to_json",
]

VENDORED_PACKAGE = "witwidget._vendor.tensorflow_serving"
MODERN_PACKAGE = "tensorflow_serving"
# Vendored modules that tensorflow-serving-api keeps under another package (relative names).
RELOCATED: dict[str, str] = {
    "util.status_pb2": "apis.status_pb2",
    "sources.storage_path.file_system_storage_path_source_pb2": "config.file_system_storage_path_source_pb2",
}

_PREDICTION_SERVICE = "apis.prediction_service_pb2"
_INFERENCE_UTILS = "witwidget._utils.inference_utils"
_WIDGET_MODULES = ("witwidget.notebook.jupyter.wit", "witwidget.notebook.colab.wit")
_ALIAS_DOC = "Re-exports {modern} for witwidget (installed by whatif.compat; the vendored copy needs protobuf 3)."
_lock = threading.Lock()
_finder: _WitwidgetFinder | None = None


# ----------------------------------------------------------------------------------------------------------------
# The replacements


def beta_create_PredictionService_stub(  # noqa: N802 - the name witwidget calls
    channel: Any,
    host: Any = None,
    metadata_transformer: Any = None,
    pool: Any = None,
    pool_size: Any = None,
) -> Any:
    """A real ``PredictionServiceStub`` on ``channel``, standing in for the removed beta factory.

    ``channel`` is what witwidget passes: a ``grpc.beta.implementations.Channel`` (its ``_channel`` is the real
    ``grpc.Channel``) or a plain ``grpc.Channel``. The stub's methods take ``(request, timeout)`` positionally, as the
    beta stub's did. The beta-only arguments (host, metadata transformer, thread pool) have no counterpart; passing
    any of them raises TypeError rather than silently ignoring it.
    """
    import grpc
    from grpc.beta import implementations
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    if any(arg is not None for arg in (host, metadata_transformer, pool, pool_size)):
        raise TypeError("beta_create_PredictionService_stub: host, metadata_transformer and pools are not supported")
    inner = channel._channel if isinstance(channel, implementations.Channel) else channel
    if not isinstance(inner, grpc.Channel):
        raise TypeError(f"expected a grpc channel (or grpc.beta Channel), got {type(channel).__name__}")
    return prediction_service_pb2_grpc.PredictionServiceStub(inner)


def message_to_json(message: Any, *args: Any, including_default_value_fields: bool | None = None, **kwargs: Any) -> str:
    """``json_format.MessageToJson`` that also accepts protobuf < 5's ``including_default_value_fields``.

    It maps to ``always_print_fields_with_no_presence`` (its protobuf 5 name: print fields that have no presence,
    such as a score of 0.0, instead of dropping them). Passing both names raises TypeError.
    """
    from google.protobuf import json_format

    if including_default_value_fields is not None:
        if "always_print_fields_with_no_presence" in kwargs:
            raise TypeError("pass including_default_value_fields or always_print_fields_with_no_presence, not both")
        kwargs["always_print_fields_with_no_presence"] = bool(including_default_value_fields)
    return json_format.MessageToJson(message, *args, **kwargs)


def _json_format_proxy() -> types.ModuleType:
    """A module that is ``google.protobuf.json_format`` except for :func:`message_to_json` as ``MessageToJson``."""
    from google.protobuf import json_format

    proxy = types.ModuleType("google.protobuf.json_format", "json_format with protobuf < 5's MessageToJson keyword")
    proxy.MessageToJson = message_to_json  # type: ignore[attr-defined]
    proxy.__getattr__ = lambda name: getattr(json_format, name)  # type: ignore[attr-defined]
    proxy.__wrapped__ = json_format  # type: ignore[attr-defined]
    return proxy


def _ensure_ipython_display() -> None:
    """Put ``display`` back into ``IPython.core.display`` (IPython 9 moved it to ``display_functions``)."""
    try:
        import IPython.core.display as core_display
    except ImportError:  # no IPython at all: witwidget's own import error is the clearest message
        return
    if not hasattr(core_display, "display"):
        from IPython.core.display_functions import display

        core_display.display = display  # type: ignore[attr-defined]


def _patch_inference_utils(module: types.ModuleType) -> None:
    current = getattr(module, "json_format", None)
    if current is not None and getattr(current, "MessageToJson", None) is not message_to_json:
        module.json_format = _json_format_proxy()  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------------------------
# Vendored module names -> modern modules


def modern_name(vendored: str) -> str | None:
    """The tensorflow-serving-api module that replaces a ``witwidget._vendor.tensorflow_serving`` module, or None.

    Only generated modules (``*_pb2``, ``*_pb2_grpc``) are replaced; the vendored packages themselves (whose
    ``__init__`` holds only a licence) load as they are.
    """
    prefix = VENDORED_PACKAGE + "."
    if not vendored.startswith(prefix):
        return None
    relative = vendored[len(prefix) :]
    leaf = relative.rsplit(".", 1)[-1]
    if not (leaf.endswith("_pb2") or leaf.endswith("_pb2_grpc")):
        return None
    return f"{MODERN_PACKAGE}.{RELOCATED.get(relative, relative)}"


def _alias_module(vendored: str, modern: str) -> types.ModuleType:
    """A new module named ``vendored`` holding every public name of ``modern`` (the real one is not touched)."""
    real = importlib.import_module(modern)
    alias = types.ModuleType(vendored, _ALIAS_DOC.format(modern=modern))
    alias.__dict__.update({k: v for k, v in vars(real).items() if not (k.startswith("__") and k.endswith("__"))})
    alias.__wrapped__ = real  # type: ignore[attr-defined]
    if modern == f"{MODERN_PACKAGE}.{_PREDICTION_SERVICE}":
        alias.beta_create_PredictionService_stub = beta_create_PredictionService_stub  # type: ignore[attr-defined]
    return alias


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, modern: str) -> None:
        self._modern = modern

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _alias_module(spec.name, self._modern)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _HookedLoader(importlib.abc.Loader):
    """Runs ``before`` and ``after`` around another loader's ``exec_module``."""

    def __init__(self, inner: Any, before: Any = None, after: Any = None) -> None:
        self._inner = inner
        self._before = before
        self._after = after

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        if self._before is not None:
            self._before()
        self._inner.exec_module(module)
        if self._after is not None:
            self._after(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_code, is_package ... of the real loader
        return getattr(self._inner, name)


class _WitwidgetFinder(importlib.abc.MetaPathFinder):
    """Answers imports of the few witwidget modules that need a fix; every other import passes through."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("witwidget."):
            return None
        modern = modern_name(fullname)
        if modern is not None:
            if importlib.util.find_spec(modern) is None:
                return None  # no modern counterpart: leave the vendored module (it was never used by the tool)
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(modern))
        if fullname == _INFERENCE_UTILS:
            return self._hooked(fullname, path, target, after=_patch_inference_utils)
        if fullname in _WIDGET_MODULES:
            return self._hooked(fullname, path, target, before=_ensure_ipython_display)
        return None

    def _hooked(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None, **hooks: Any
    ) -> importlib.machinery.ModuleSpec | None:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _HookedLoader(spec.loader, **hooks)
        return spec


# ----------------------------------------------------------------------------------------------------------------
# Installing


def _patch_loaded_modules() -> None:
    """Fix witwidget modules imported before :func:`install` (only the in-place fixes can apply to them)."""
    inference_utils = sys.modules.get(_INFERENCE_UTILS)
    if inference_utils is not None:
        _patch_inference_utils(inference_utils)
    platform_utils = sys.modules.get("witwidget._utils.platform_utils")
    stubs = getattr(platform_utils, "prediction_service_pb2", None)
    if stubs is not None and not hasattr(stubs, "beta_create_PredictionService_stub"):
        stubs.beta_create_PredictionService_stub = beta_create_PredictionService_stub


def install() -> None:
    """Install the fixes (idempotent, thread-safe, cheap: nothing is imported until witwidget is).

    Called explicitly in two places and nowhere else: ``whatif/__init__.py`` at import, so that a notebook that does
    ``import whatif`` before importing witwidget gets a working widget, and :func:`whatif.config.builder_from_settings`
    right before it imports witwidget itself (for code that imported ``whatif.config`` alone). The generated
    notebooks' first cell calls it too. It adds one finder to ``sys.meta_path`` and patches already-imported
    witwidget modules; nothing else in the process changes.
    """
    global _finder
    with _lock:
        if _finder is None:
            _finder = _WitwidgetFinder()
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        _patch_loaded_modules()


def installed() -> bool:
    """Whether the import hook is on ``sys.meta_path``."""
    return _finder is not None and _finder in sys.meta_path


def vendored_modules() -> list[str]:
    """Every generated module witwidget vendors under ``_vendor/tensorflow_serving`` (found without importing it)."""
    spec = importlib.util.find_spec("witwidget")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations))) / "_vendor" / "tensorflow_serving"
    names = []
    for file in sorted(root.rglob("*.py")):
        relative = file.relative_to(root).with_suffix("")
        if relative.name.endswith(("_pb2", "_pb2_grpc")):
            names.append(".".join((VENDORED_PACKAGE, *relative.parts)))
    return names
