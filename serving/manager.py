"""Model versions the way TF Serving's ServerCore manages them.

For every model of the ``ModelServerConfig`` the manager polls ``base_path`` for version directories: any child
whose name parses as an integer, as file_system_storage_path_source.cc's ``absl::SimpleAtoi`` does (``00000123`` is
version 123), and a version keeps loading from the directory it was found in. It picks the aspired versions by the
model's policy (``latest { num_versions }``, default 1; ``all {}``; ``specific { versions }``) and loads and unloads
versions with TF Serving's AvailabilityPreservingPolicy: a new version is loaded (and warmed up) before an old one
is unloaded. A load that fails is retried ``max_num_load_retries`` times, ``load_retry_interval_seconds`` apart, as
LoaderHarness does (the version stays LOADING meanwhile; retries stop when it is no longer aspired); a version whose
last try failed is reported (state END with its error) while the versions already loaded keep serving. Version
states follow ``ModelVersionStatus`` (START, LOADING, AVAILABLE, UNLOADING, END); unloaded versions stay listed as
END, as TF Serving's state monitor keeps them. Requests hold a :class:`ServableHandle`; a version being unloaded
stops taking new requests and waits for the ones in flight. Version labels follow
``ServerCore::UpdateModelVersionLabelMap`` (a label may only point at an AVAILABLE version unless
``allow_version_labels_for_unavailable_models``, and then only a new label or an unchanged one). Loading runs on one
manager thread, serially, like TF Serving's default of one load thread.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from glimpse_wire.errors import (
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServingError,
    Unknown,
    error_for,
)

__all__ = [
    "State",
    "VersionStatus",
    "ServableHandle",
    "ModelManager",
    "validate_model_server_config",
    "parse_version_dir",
    "DEFAULT_MAX_NUM_LOAD_RETRIES",
    "DEFAULT_LOAD_RETRY_INTERVAL_SECONDS",
]

log = logging.getLogger("serving.manager")

_TENSORFLOW_PLATFORM = "tensorflow"
_UNLOAD_WAIT_SECONDS = 60.0
_INT64_MAX = 2**63 - 1
# absl::SimpleAtoi: optional ASCII whitespace around an optional sign and decimal digits.
_VERSION_NAME = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)[ \t\n\v\f\r]*")
DEFAULT_MAX_NUM_LOAD_RETRIES = 5
DEFAULT_LOAD_RETRY_INTERVAL_SECONDS = 60.0


def parse_version_dir(name: str) -> int | None:
    """The version a base-path child names (``"00000123"`` -> 123), or None when it names none.

    TF Serving parses child names with ``absl::SimpleAtoi`` into an int64; negative numbers, which it would also
    accept, are left out here (no exporter writes them and ``Latest`` could never pick them)."""
    match = _VERSION_NAME.fullmatch(name)
    if match is None:
        return None
    number = int(match.group(1))
    if number < 0 or number > _INT64_MAX:
        return None
    return number


class State(enum.IntEnum):
    """``tensorflow.serving.ModelVersionStatus.State`` numbers."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error: ServingError | None  # None = OK


@dataclass(eq=False)
class _Version:
    name: str
    version: int
    path: str
    state: State = State.START
    error: ServingError | None = None
    servable: Any = None
    inflight: int = 0
    aspired: bool = True


@dataclass(frozen=True)
class ServableHandle:
    """A loaded version held for one request."""

    name: str
    version: int
    servable: Any


@dataclass(eq=False)
class _Model:
    name: str
    base_path: str
    policy: Any  # tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy
    in_config: bool = True
    warned: str = ""


def _servable_id(name: str, version: int) -> str:
    return f"{{name: {name} version: {version}}}"


def _error_from(exc: BaseException) -> ServingError:
    """A load failure as a status: TF errors keep their code and message."""
    if isinstance(exc, ServingError):
        return exc
    code = getattr(exc, "error_code", None)
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(code, int) and code:
        try:
            return error_for(code, message)
        except ValueError:
            pass
    return Unknown(f"{type(exc).__name__}: {message}")


def validate_model_server_config(config: Any) -> None:
    """TF Serving's checks of a ModelServerConfig (ServerCore::ReloadConfig), with its messages."""
    if config.WhichOneof("config") != "model_config_list":
        raise InvalidArgument(
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently "
            "supported"
        )
    names: set[str] = set()
    for model in config.model_config_list.config:
        if model.name in names:
            raise InvalidArgument(f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
    for model in config.model_config_list.config:
        if "://" not in model.base_path and not os.path.isabs(model.base_path):
            raise InvalidArgument(
                f"Expected model {model.name} to have an absolute path or URI; got base_path()={model.base_path}"
            )
    for model in config.model_config_list.config:
        if model.model_type:  # deprecated enum: 1 = TENSORFLOW
            if model.model_platform:
                raise InvalidArgument(
                    "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                    "ModelServerConfig::model_platform."
                )
            platform = _TENSORFLOW_PLATFORM if model.model_type == 1 else ""
        else:
            platform = model.model_platform
        if not platform:
            raise InvalidArgument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                "ModelServerConfig::model_platform."
            )
        if platform != _TENSORFLOW_PLATFORM:
            raise InvalidArgument(f"Model {model.name} requests unsupported platform {platform}")


class ModelManager:
    """Loads, serves and unloads model versions. ``loader(path) -> servable``; ``warmup(name, version, servable,
    path)`` runs before a version becomes AVAILABLE (an exception fails the load); ``on_change(name)`` is called
    after any state change of that model."""

    def __init__(
        self,
        loader: Callable[[str], Any],
        *,
        warmup: Callable[[str, int, Any, str], None] | None = None,
        unloader: Callable[[Any], None] | None = None,
        on_change: Callable[[str], None] | None = None,
        file_system_poll_wait_seconds: float = 1.0,
        allow_version_labels_for_unavailable_models: bool = False,
        max_num_load_retries: int = 0,
        load_retry_interval_seconds: float = 0.0,
    ) -> None:
        self._loader = loader
        self._warmup = warmup
        self._unloader = unloader or (lambda servable: getattr(servable, "close", lambda: None)())
        self._on_change = on_change or (lambda name: None)
        self._poll_seconds = file_system_poll_wait_seconds
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._max_load_retries = max(0, int(max_num_load_retries))
        self._retry_interval = max(0.0, float(load_retry_interval_seconds))
        self._lock = threading.Condition(threading.RLock())
        self._actions = threading.RLock()  # one reconcile at a time (poll thread or config reload)
        self._models: dict[str, _Model] = {}
        self._versions: dict[str, dict[int, _Version]] = {}
        self._labels: dict[str, dict[str, int]] | None = None
        self._config: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- configuration ------------------------------------------------------------------------------------------
    def reload_config(self, config: Any) -> None:
        """Apply a ModelServerConfig: labels, new and removed models, policies; wait until new models are loaded."""
        with self._actions:
            if config.WhichOneof("config") is None:
                log.info("Taking no action for empty config.")
                return
            validate_model_server_config(config)
            with self._lock:
                new_labels = self._updated_labels(config)
                self._labels = new_labels
                self._config = config
                wanted = {m.name: m for m in config.model_config_list.config}
                new_models = [n for n in wanted if n not in self._models or not self._models[n].in_config]
                for name, model in self._models.items():
                    model.in_config = name in wanted
                for name, mc in wanted.items():
                    policy = mc.model_version_policy
                    self._models[name] = _Model(name, mc.base_path, policy, True)
                    self._versions.setdefault(name, {})
            log.info("Adding/updating models.")
            self._reconcile()
            self._await_available(new_models)
            log.info("Finished reloading config")

    def _updated_labels(self, config: Any) -> dict[str, dict[str, int]]:
        labels: dict[str, dict[str, int]] = {}
        for mc in config.model_config_list.config:
            versions = self._versions.get(mc.name, {})
            for label, version in mc.version_labels.items():
                allow = False
                if self._allow_unavailable_labels:
                    existing = (self._labels or {}).get(mc.name, {}).get(label)
                    allow = existing is None or existing == version
                record = versions.get(version)
                if not allow and (record is None or record.state != State.AVAILABLE):
                    raise FailedPrecondition(
                        f"Request to assign label to version {version} of model {mc.name}, which is not currently "
                        "available for inference"
                    )
                labels.setdefault(mc.name, {})[label] = version
        return labels

    def _await_available(self, names: list[str]) -> None:
        """ServerCore::WaitUntilModelsAvailable with its default (infinite) timeout: a new model whose base path
        holds no version yet is waited for, the base paths polled meanwhile, until a version loads or fails, or
        ``stop()`` is called. Without polling (``file_system_poll_wait_seconds`` <= 0) nothing can change the
        answer, so the wait lasts until ``stop()``, as TF Serving's does."""
        while True:
            with self._lock:
                empty = [n for n in names if n in self._models and self._models[n].in_config
                         and not self._versions.get(n)]
            for name in empty:
                log.warning("No versions of servable %s found under base path %s. Did you forget to name your leaf "
                            "directory as a number (eg. '/1/')?", name, self._models[name].base_path)
            if not empty:
                break
            if self._stop.wait(self._poll_seconds if self._poll_seconds > 0 else None):
                raise Cancelled(f"Stopped while waiting for a version of {', '.join(empty)}")
            self._reconcile()
        failed: list[str] = []
        with self._lock:
            for name in names:
                versions = self._versions.get(name, {})
                if not versions:
                    continue
                if any(v.state == State.AVAILABLE for v in versions.values()):
                    continue
                for v in sorted(versions.values(), key=lambda r: -r.version):
                    if v.aspired:
                        detail = f" due to error: {v.error.code}: {v.error.message}" if v.error else ""
                        failed.append(f"{{{_servable_id(name, v.version)}{detail}}}, ")
                        break
        if failed:
            raise Unknown(f"{len(failed)} model(s) did not become available: {{{''.join(failed)}}}")

    # -- polling ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Poll the base paths every ``file_system_poll_wait_seconds`` (0: the initial load only; < 0: never)."""
        if self._poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll_loop, name="model-manager", daemon=True)
            self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self._reconcile()
            except Exception:  # never let a bad poll kill the manager
                log.exception("Polling the model base paths failed")

    def poll(self) -> None:
        """One poll of every base path, and the loads/unloads it implies (the poll thread calls this)."""
        self._reconcile()

    def _scan(self, model: _Model) -> dict[int, str] | None:
        """Version -> directory name of the base path's children (None when the base path cannot be listed)."""
        try:
            entries = sorted(os.listdir(model.base_path))
        except OSError as e:
            message = f"Could not find base path {model.base_path} for servable {model.name} with error {e}"
            if model.warned != message:
                log.error("File system storage path source: %s", message)
                model.warned = message
            return None
        model.warned = ""
        versions: dict[int, str] = {}
        for entry in entries:
            number = parse_version_dir(entry)
            if number is None or not os.path.isdir(os.path.join(model.base_path, entry)):
                continue
            if number in versions:
                # IndexChildrenByVersion: the later child wins, with a warning. A canonical name ("123") is
                # preferred over padded ones, as AspireSpecificVersionsFastPath does when every name is canonical.
                keep, drop = (versions[number], entry) if versions[number] == str(number) else (entry, versions[number])
                log.warning("Duplicate version directories detected. Version %d will be loaded from %s, %s will be "
                            "ignored.", number, keep, drop)
                versions[number] = keep
                continue
            versions[number] = entry
        return versions

    def _aspired(self, model: _Model, on_disk: set[int]) -> set[int]:
        choice = model.policy.WhichOneof("policy_choice")
        if choice == "all":
            return set(on_disk)
        if choice == "specific":
            wanted = set(int(v) for v in model.policy.specific.versions)
            if not wanted:
                log.warning("No specific versions requested for servable %s.", model.name)
            for number in sorted(wanted - on_disk):
                log.warning("Version %d of servable %s, which was requested to be served as a 'specific' version in "
                            "the servable's version policy, was not found in the file system", number, model.name)
            return wanted & on_disk
        count = max(1, int(model.policy.latest.num_versions)) if choice == "latest" else 1
        return set(sorted(on_disk, reverse=True)[:count])

    def _reconcile(self) -> None:
        if self._stop.is_set():
            return
        with self._actions:
            with self._lock:
                models = list(self._models.values())
            for model in models:
                on_disk = self._scan(model) if model.in_config else {}
                if on_disk is None:
                    continue
                aspired = self._aspired(model, set(on_disk)) if model.in_config else set()
                with self._lock:
                    versions = self._versions.setdefault(model.name, {})
                    for number, record in versions.items():
                        was = record.aspired
                        record.aspired = number in aspired
                        if record.aspired and record.state in (State.START, State.END):
                            record.path = os.path.join(model.base_path, on_disk[number])
                        if record.aspired and not was and record.state == State.END:
                            record.state, record.error = State.START, None
                    for number in aspired - set(versions):
                        versions[number] = _Version(model.name, number, os.path.join(model.base_path, on_disk[number]))
                        log.info("Aspiring version %s", _servable_id(model.name, number))
                self._act(model.name)

    def _act(self, name: str) -> None:
        """Apply the availability-preserving policy until it asks for nothing more."""
        while not self._stop.is_set():
            with self._lock:
                versions = list(self._versions.get(name, {}).values())
                aspired = [v for v in versions if v.aspired]
                unaspired_ready = sorted((v for v in versions if not v.aspired and v.state == State.AVAILABLE),
                                         key=lambda v: v.version)
                aspired_ready = any(v.state == State.AVAILABLE for v in aspired)
                to_unload = None
                if unaspired_ready and (not aspired or aspired_ready or len(unaspired_ready) > 1):
                    to_unload = unaspired_ready[0]
                to_load = None
                if to_unload is None:
                    new = [v for v in aspired if v.state == State.START]
                    to_load = max(new, key=lambda v: v.version) if new else None
            if to_unload is not None:
                self._unload(to_unload)
            elif to_load is not None:
                self._load(to_load)
            else:
                return

    def _set_state(self, record: _Version, state: State, error: ServingError | None = None) -> None:
        with self._lock:
            record.state = state
            record.error = error
            self._lock.notify_all()
        self._on_change(record.name)

    def _try_load(self, record: _Version, sid: str) -> tuple[Any, ServingError | None]:
        servable = None
        try:
            servable = self._loader(record.path)
            if self._warmup is not None:
                self._warmup(record.name, record.version, servable, record.path)
        except Exception as e:
            error = _error_from(e)
            if servable is not None:
                try:
                    self._unloader(servable)
                except Exception:
                    log.exception("Releasing a failed load of %s failed", sid)
            return None, error
        return servable, None

    def _load(self, record: _Version) -> None:
        sid = _servable_id(record.name, record.version)
        log.info("Approving load for servable version %s", sid)
        self._set_state(record, State.LOADING)
        log.info("Loading servable version %s", sid)
        started = time.monotonic()
        attempt = 0
        while True:
            servable, error = self._try_load(record, sid)
            if error is None:
                break
            log.error("Loading servable: %s failed: %s: %s", sid, error.code, error.message)
            if attempt >= self._max_load_retries or self._stop.is_set():
                self._set_state(record, State.END, error)
                return
            attempt += 1
            if self._retry_interval > 0 and self._stop.wait(self._retry_interval):
                self._set_state(record, State.END, error)
                return
            if not self._still_aspired(record):
                log.info("Load retry cancelled for servable %s: it is no longer aspired", sid)
                self._set_state(record, State.END, error)
                return
            log.info("Retrying load on servable version: %s retry: %d", sid, attempt)
        with self._lock:
            record.servable = servable
        self._set_state(record, State.AVAILABLE)
        log.info("Successfully loaded servable version %s (%.1f s)", sid, time.monotonic() - started)

    def _still_aspired(self, record: _Version) -> bool:
        """Between retries: is the version still in the config, on disk and picked by the policy? (Loads run on the
        thread that polls, so the retry looks itself; the directory it loads from is refreshed too.)"""
        with self._lock:
            model = self._models.get(record.name)
        if model is None or not model.in_config:
            record.aspired = False
            return False
        on_disk = self._scan(model)
        if on_disk is None:
            return record.aspired
        with self._lock:
            record.aspired = record.version in self._aspired(model, set(on_disk))
            if record.aspired:
                record.path = os.path.join(model.base_path, on_disk[record.version])
            return record.aspired

    def _unload(self, record: _Version) -> None:
        sid = _servable_id(record.name, record.version)
        log.info("Quiescing servable version %s", sid)
        self._set_state(record, State.UNLOADING)
        deadline = time.monotonic() + _UNLOAD_WAIT_SECONDS
        with self._lock:
            while record.inflight > 0 and time.monotonic() < deadline:
                self._lock.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            servable, record.servable = record.servable, None
        log.info("Done quiescing servable version %s", sid)
        log.info("Unloading servable version %s", sid)
        try:
            if servable is not None:
                self._unloader(servable)
        except Exception:
            log.exception("Unloading %s failed", sid)
        self._set_state(record, State.END)
        log.info("Done unloading servable version %s", sid)

    # -- requests -----------------------------------------------------------------------------------------------
    def resolve(self, name: str, version: int | None, label: str | None) -> tuple[str, int | None]:
        """``(name, version)`` a ModelSpec asks for (version None = latest), with ServerCore's errors."""
        if not name:
            raise InvalidArgument("ModelSpec has no name specified.")
        if label:
            with self._lock:
                number = (self._labels or {}).get(name, {}).get(label)
            if number is None:
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
            return name, number
        return name, version

    @contextmanager
    def handle(self, name: str, version: int | None = None, label: str | None = None) -> Iterator[ServableHandle]:
        """Hold a loaded version for the duration of a request (``Latest`` when no version or label is given)."""
        name, version = self.resolve(name, version, label)
        with self._lock:
            model = self._models.get(name)
            records = self._versions.get(name, {}) if model is not None and model.in_config else {}
            if version is None:
                ready = [v for v in records.values() if v.state == State.AVAILABLE]
                record = max(ready, key=lambda v: v.version) if ready else None
                if record is None:
                    raise NotFound(f"Servable not found for request: Latest({name})")
            else:
                record = records.get(version)
                if record is None or record.state != State.AVAILABLE:
                    raise NotFound(f"Servable not found for request: Specific({name}, {version})")
            record.inflight += 1
        try:
            yield ServableHandle(record.name, record.version, record.servable)
        finally:
            with self._lock:
                record.inflight -= 1
                if record.inflight == 0:
                    self._lock.notify_all()

    def statuses(self, name: str) -> list[VersionStatus]:
        """Every version of ``name`` ever seen, highest first (TF Serving's ServableStateMonitor order)."""
        with self._lock:
            records = self._versions.get(name, {})
            ordered = sorted(records.values(), key=lambda r: -r.version)
            return [VersionStatus(v.version, v.state, v.error) for v in ordered]

    def model_names(self) -> list[str]:
        with self._lock:
            return [n for n, m in self._models.items() if m.in_config]

    def is_available(self, name: str) -> bool:
        with self._lock:
            model = self._models.get(name)
            if model is None or not model.in_config:
                return False
            return any(v.state == State.AVAILABLE for v in self._versions.get(name, {}).values())

    def wait_for_state(self, name: str, version: int, states: set[State], timeout: float) -> bool:
        """Block until ``name``/``version`` is in one of ``states`` (tests and tools); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                record = self._versions.get(name, {}).get(version)
                if record is not None and record.state in states:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.5))

    # -- shutdown -----------------------------------------------------------------------------------------------
    def stop(self, unload: bool = True, timeout: float = 30.0) -> None:
        """Stop polling; with ``unload``, unload every loaded version (in-flight requests finish first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not unload:
            return
        with self._lock:
            loaded = [v for vs in self._versions.values() for v in vs.values() if v.state == State.AVAILABLE]
        for record in loaded:
            self._unload(record)
