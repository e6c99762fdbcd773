"""ModelManager unit tests: version policies, availability-preserving loads, failures, labels, in-flight handles.

The loader is a fake (this layer only decides what to load and when); the version directories are real.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tensorflow_serving.config import model_server_config_pb2

from glimpse_wire.errors import FailedPrecondition, InvalidArgument, NotFound, ServingError, Unknown
from serving.manager import ModelManager, State, parse_version_dir, validate_model_server_config


class FakeServable:
    def __init__(self, path: str) -> None:
        self.path = path
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Loader:
    """Loads everything except paths listed in ``broken``; records the order of loads and unloads."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.broken: set[str] = set()
        self.servables: dict[str, FakeServable] = {}

    def load(self, path: str) -> FakeServable:
        version = Path(path).name
        if version in self.broken:
            raise OSError(f"cannot read {path}")
        self.events.append(f"load {version}")
        servable = self.servables[version] = FakeServable(path)
        return servable

    def unload(self, servable: FakeServable) -> None:
        self.events.append(f"unload {Path(servable.path).name}")
        servable.close()


def config_for(base: Path, name: str = "m", policy: str = "", labels: dict[str, int] | None = None):
    from google.protobuf import text_format

    text = f'model_config_list {{ config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" '
    if policy:
        text += f"model_version_policy {{ {policy} }} "
    for label, version in (labels or {}).items():
        text += f'version_labels {{ key: "{label}" value: {version} }} '
    text += "} }"
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def make_versions(base: Path, *versions: int | str) -> None:
    for v in versions:
        (base / str(v)).mkdir(parents=True, exist_ok=True)


def manager_for(loader: Loader, **kwargs) -> ModelManager:
    return ModelManager(loader.load, unloader=loader.unload, file_system_poll_wait_seconds=0, **kwargs)


@contextmanager
def fails(cls: type[ServingError], pattern: str) -> Iterator[None]:
    """The block raises ``cls`` whose message (the part after the code) matches ``pattern``."""
    with pytest.raises(cls) as err:
        yield
    assert re.search(pattern, err.value.message), err.value.message


def states(manager: ModelManager, name: str = "m") -> dict[int, State]:
    return {s.version: s.state for s in manager.statuses(name)}


def test_latest_policy_serves_highest_and_ignores_non_integer_dirs(tmp_path: Path) -> None:
    make_versions(tmp_path, 1, 2, "3a", ".tmp-4")
    (tmp_path / "5").write_text("a file, not a version directory")
    loader = Loader()
    manager = manager_for(loader)
    manager.reload_config(config_for(tmp_path))
    assert states(manager) == {2: State.AVAILABLE}
    with manager.handle("m") as handle:
        assert handle.version == 2
    assert loader.events == ["load 2"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("latest { num_versions: 2 }", {3, 2}), ("all {}", {1, 2, 3}), ("specific { versions: 1 versions: 9 }", {1})],
)
def test_version_policies(tmp_path: Path, policy: str, expected: set[int]) -> None:
    make_versions(tmp_path, 1, 2, 3)
    manager = manager_for(Loader())
    manager.reload_config(config_for(tmp_path, policy=policy))
    assert {v for v, s in states(manager).items() if s == State.AVAILABLE} == expected


def test_new_version_loads_before_old_unloads(tmp_path: Path) -> None:
    make_versions(tmp_path, 1)
    loader = Loader()
    manager = manager_for(loader)
    manager.reload_config(config_for(tmp_path))
    make_versions(tmp_path, 2)
    manager.poll()
    assert loader.events == ["load 1", "load 2", "unload 1"]
    assert states(manager) == {2: State.AVAILABLE, 1: State.END}
    assert loader.servables["1"].closed and not loader.servables["2"].closed


def test_failed_version_is_reported_and_the_old_one_keeps_serving(tmp_path: Path) -> None:
    make_versions(tmp_path, 1)
    loader = Loader()
    manager = manager_for(loader)
    manager.reload_config(config_for(tmp_path))
    loader.broken.add("2")
    make_versions(tmp_path, 2)
    manager.poll()
    statuses = {s.version: s for s in manager.statuses("m")}
    assert statuses[2].state == State.END and isinstance(statuses[2].error, Unknown)
    assert "cannot read" in statuses[2].error.message
    assert statuses[1].state == State.AVAILABLE
    with manager.handle("m") as handle:
        assert handle.version == 1
    manager.poll()  # a failed version is not retried on every poll
    assert loader.events == ["load 1"]


def test_removed_version_is_unloaded(tmp_path: Path) -> None:
    make_versions(tmp_path, 1, 2)
    manager = manager_for(Loader())
    manager.reload_config(config_for(tmp_path, policy="all {}"))
    (tmp_path / "2").rmdir()
    manager.poll()
    assert states(manager) == {2: State.END, 1: State.AVAILABLE}
    with fails(NotFound, r"^Servable not found for request: Specific\(m, 2\)$"):
        with manager.handle("m", 2):
            pass


def test_startup_fails_when_no_version_becomes_available(tmp_path: Path) -> None:
    make_versions(tmp_path, 1)
    loader = Loader()
    loader.broken.add("1")
    manager = manager_for(loader)
    with fails(Unknown, r"^1 model\(s\) did not become available: \{\{\{name: m version: 1\} due to "):
        manager.reload_config(config_for(tmp_path))


def test_lookup_errors(tmp_path: Path) -> None:
    make_versions(tmp_path, 1)
    manager = manager_for(Loader())
    manager.reload_config(config_for(tmp_path))
    with fails(NotFound, r"^Servable not found for request: Latest\(x\)$"):
        with manager.handle("x"):
            pass
    with fails(InvalidArgument, "^ModelSpec has no name specified.$"):
        with manager.handle(""):
            pass
    with fails(InvalidArgument, "^Unrecognized servable version label: l$"):
        with manager.handle("m", label="l"):
            pass


def test_labels_must_point_at_available_versions(tmp_path: Path) -> None:
    make_versions(tmp_path, 1, 2)
    manager = manager_for(Loader())
    with fails(FailedPrecondition, "^Request to assign label to version 1 of model m, which is not "
                                                 "currently available for inference$"):
        manager.reload_config(config_for(tmp_path, policy="all {}", labels={"stable": 1}))
    manager.reload_config(config_for(tmp_path, policy="all {}"))
    manager.reload_config(config_for(tmp_path, policy="all {}", labels={"stable": 1, "canary": 2}))
    with manager.handle("m", label="stable") as handle:
        assert handle.version == 1
    with fails(FailedPrecondition, "version 7 of model m"):
        manager.reload_config(config_for(tmp_path, policy="all {}", labels={"stable": 7}))
    with manager.handle("m", label="canary") as handle:  # a refused reload leaves the labels as they were
        assert handle.version == 2


def test_allow_labels_for_unavailable_models_only_for_new_or_unchanged_labels(tmp_path: Path) -> None:
    make_versions(tmp_path, 1)
    manager = manager_for(Loader(), allow_version_labels_for_unavailable_models=True)
    manager.reload_config(config_for(tmp_path, labels={"stable": 1, "next": 5}))  # new labels: allowed
    with fails(NotFound, r"Specific\(m, 5\)"):
        with manager.handle("m", label="next"):
            pass
    manager.reload_config(config_for(tmp_path, labels={"stable": 1, "next": 5}))  # unchanged: allowed
    with fails(FailedPrecondition, "version 6 of model m"):  # moving a label to it: refused
        manager.reload_config(config_for(tmp_path, labels={"stable": 1, "next": 6}))


def test_config_reload_adds_and_removes_models(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_versions(a, 1)
    make_versions(b, 3)
    manager = manager_for(Loader())
    manager.reload_config(config_for(a, name="a"))
    config = config_for(a, name="a")
    config.model_config_list.config.add().CopyFrom(config_for(b, name="b").model_config_list.config[0])
    manager.reload_config(config)
    assert manager.model_names() == ["a", "b"]
    manager.reload_config(config_for(b, name="b"))
    assert states(manager, "a") == {1: State.END}
    with fails(NotFound, r"Latest\(a\)"):
        with manager.handle("a"):
            pass


def test_unload_waits_for_requests_in_flight(tmp_path: Path) -> None:
    make_versions(tmp_path, 1)
    loader = Loader()
    manager = manager_for(loader)
    manager.reload_config(config_for(tmp_path))
    release = threading.Event()
    held = threading.Event()

    def request() -> None:
        with manager.handle("m") as handle:
            assert handle.version == 1
            held.set()
            release.wait(5)

    thread = threading.Thread(target=request)
    thread.start()
    assert held.wait(5)
    make_versions(tmp_path, 2)
    poller = threading.Thread(target=manager.poll)
    poller.start()
    assert manager.wait_for_state("m", 1, {State.UNLOADING}, timeout=5)
    time.sleep(0.2)
    assert not loader.servables["1"].closed  # still in use
    with manager.handle("m") as handle:  # new requests already go to version 2
        assert handle.version == 2
    release.set()
    thread.join(5)
    poller.join(5)
    assert loader.servables["1"].closed and states(manager)[1] == State.END


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('config { name: "m" base_path: "relative" model_platform: "tensorflow" }',
         "Expected model m to have an absolute path or URI; got base_path()=relative"),
        ('config { name: "m" base_path: "/a" model_platform: "tensorflow" } '
         'config { name: "m" base_path: "/b" model_platform: "tensorflow" }',
         "Illegal to list model m multiple times in config list"),
        ('config { name: "m" base_path: "/a" }',
         "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform."),
        ('config { name: "m" base_path: "/a" model_platform: "pytorch" }',
         "Model m requests unsupported platform pytorch"),
    ],
)
def test_config_validation(text: str, message: str) -> None:
    from google.protobuf import text_format

    config = text_format.Parse(f"model_config_list {{ {text} }}", model_server_config_pb2.ModelServerConfig())
    with pytest.raises(InvalidArgument) as err:
        validate_model_server_config(config)
    assert err.value.message == message


@pytest.mark.parametrize(
    ("name", "expected"),
    [("123", 123), ("00000123", 123), ("0", 0), ("+7", 7), (" 12 ", 12), ("1a", None), ("-3", None), ("", None),
     (".tmp-4", None), ("1.5", None), (str(2**63), None), (str(2**63 - 1), 2**63 - 1)],
)
def test_version_directory_names_parse_like_simple_atoi(name: str, expected: int | None) -> None:
    assert parse_version_dir(name) == expected


def test_zero_padded_versions_load_from_their_own_directories(tmp_path: Path) -> None:
    make_versions(tmp_path, "00000123", "00000124", "7")
    loader = Loader()
    manager = manager_for(loader)
    manager.reload_config(config_for(tmp_path, policy="all {}"))
    assert states(manager) == {124: State.AVAILABLE, 123: State.AVAILABLE, 7: State.AVAILABLE}
    with manager.handle("m") as handle:
        assert handle.version == 124 and Path(handle.servable.path).name == "00000124"
    with manager.handle("m", 123) as handle:
        assert Path(handle.servable.path).name == "00000123"
    assert sorted(loader.events) == ["load 00000123", "load 00000124", "load 7"]
    # A version whose directory is renamed while it is not loaded loads from its new name on the next try.
    manager.reload_config(config_for(tmp_path, policy="specific { versions: 7 }"))
    assert states(manager)[123] == State.END
    (tmp_path / "00000123").rename(tmp_path / "123")
    manager.reload_config(config_for(tmp_path, policy="specific { versions: 123 }"))
    with manager.handle("m", 123) as handle:
        assert Path(handle.servable.path).name == "123"


def test_duplicate_version_directories_prefer_the_canonical_name(tmp_path: Path) -> None:
    make_versions(tmp_path, "0005", "5", "005")
    loader = Loader()
    manager_for(loader).reload_config(config_for(tmp_path))
    assert loader.events == ["load 5"]


class FlakyLoader(Loader):
    """Fails the first ``failures`` loads of each version (files still arriving), then loads."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.tries: dict[str, int] = {}

    def load(self, path: str) -> FakeServable:
        version = Path(path).name
        self.tries[version] = self.tries.get(version, 0) + 1
        if self.tries[version] <= self.failures:
            raise OSError(f"SavedModel file does not exist at: {path}")
        return super().load(path)


def test_a_failed_load_is_retried_and_stays_loading_meanwhile(tmp_path: Path) -> None:
    make_versions(tmp_path, "0001")
    loader = FlakyLoader(failures=2)
    manager = manager_for(loader, max_num_load_retries=5, load_retry_interval_seconds=0.2)
    seen: list[State] = []
    thread = threading.Thread(target=manager.reload_config, args=(config_for(tmp_path),))
    thread.start()
    while thread.is_alive():
        seen.extend(states(manager).values())
        time.sleep(0.02)
    thread.join()
    assert states(manager) == {1: State.AVAILABLE}
    assert loader.tries == {"0001": 3}
    assert State.LOADING in seen and State.END not in seen


def test_retries_give_up_after_max_num_load_retries(tmp_path: Path) -> None:
    make_versions(tmp_path, 1)
    loader = FlakyLoader(failures=10)
    manager = manager_for(loader, max_num_load_retries=2, load_retry_interval_seconds=0.0)
    with fails(Unknown, r"1 model\(s\) did not become available.*SavedModel file does not exist"):
        manager.reload_config(config_for(tmp_path))
    assert loader.tries == {"1": 3}
    assert states(manager) == {1: State.END}


def test_retries_stop_when_the_version_is_no_longer_aspired(tmp_path: Path) -> None:
    make_versions(tmp_path, 1, 2)
    loader = FlakyLoader(failures=1)
    manager = manager_for(loader, max_num_load_retries=5, load_retry_interval_seconds=0.3)
    thread = threading.Thread(target=manager.reload_config, args=(config_for(tmp_path),))
    thread.start()
    assert manager.wait_for_state("m", 2, {State.LOADING}, 5)
    (tmp_path / "2").rmdir()  # gone before the retry: version 1 becomes the latest
    thread.join(10)
    assert states(manager)[2] == State.END
    assert loader.tries["2"] == 1
    manager.poll()
    assert states(manager)[1] == State.AVAILABLE


def test_a_new_model_without_versions_is_waited_for_while_the_base_path_is_polled(tmp_path: Path) -> None:
    """ServerCore::WaitUntilModelsAvailable: the start (or reload) returns once the first version has loaded."""
    loader = Loader()
    manager = ModelManager(loader.load, unloader=loader.unload, file_system_poll_wait_seconds=0.05)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (manager.reload_config(config_for(tmp_path)), done.set()))
    thread.start()
    try:
        assert not done.wait(0.5) and manager.statuses("m") == []
        make_versions(tmp_path, 4)
        assert done.wait(10)
        assert states(manager) == {4: State.AVAILABLE}
    finally:
        manager.stop()
        thread.join(10)


def test_stop_ends_the_wait_for_a_first_version(tmp_path: Path) -> None:
    from glimpse_wire.errors import Cancelled

    manager = manager_for(Loader())  # no polling: only stop() can end the wait, as in TF Serving
    errors: list[BaseException] = []

    def start() -> None:
        try:
            manager.reload_config(config_for(tmp_path))
        except ServingError as e:
            errors.append(e)

    thread = threading.Thread(target=start)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()
    manager.stop()
    thread.join(10)
    assert not thread.is_alive() and len(errors) == 1 and isinstance(errors[0], Cancelled)
    assert "m" in errors[0].message
