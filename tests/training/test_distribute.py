"""``glimpse train --distribute``: who is chief, which shard policy, and a real two-worker run on localhost (CPU,
``TF_CONFIG`` with two free ports) in which one worker is killed mid-run, both are restarted, they resume at the
saved epoch, train to the end, and the chief alone exports exactly one version."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.distribute import backup_dir, is_chief, make_distribution, shard_policy, task_of

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 3
TRAIN_FLAGS = ["--dataset", "tuxpaint", "--model", "scratch", "--image-size", "32", "--epochs", str(EPOCHS),
               "--patience", "10", "--batch-size", "8", "--max-examples", "32", "--seed", "7", "--name", "tux",
               "--distribute", "multiworker"]


def test_chief_is_the_chief_task_or_worker_0_without_one():
    two_workers = {"cluster": {"worker": ["a:1", "b:2"]}}
    assert is_chief({**two_workers, "task": {"type": "worker", "index": 0}})
    assert not is_chief({**two_workers, "task": {"type": "worker", "index": 1}})
    with_chief = {"cluster": {"chief": ["c:0"], "worker": ["a:1"]}}
    assert is_chief({**with_chief, "task": {"type": "chief", "index": 0}})
    assert not is_chief({**with_chief, "task": {"type": "worker", "index": 0}})
    assert is_chief(None) and task_of(None) == ("worker", 0)
    assert task_of({"task": {"type": "chief", "index": 0}}) == ("chief", 0)


def test_shard_policy_and_backup_dir():
    assert [shard_policy(s) for s in ("tuxpaint", "fashion_mnist", "folder:/x")] == ["DATA"] * 3
    assert shard_policy("tfds:mnist") == "AUTO"
    a, b = (backup_dir("runs", "tux-scratch", t) for t in ("worker-0", "worker-1"))
    assert a.parent == b.parent and a != b and "20" not in a.as_posix()  # stable across restarts, one per task


def test_multiworker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_distribution("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        make_distribution("multiworker")
    assert make_distribution("none").strategy is None and make_distribution("none").chief


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _env(ports: list[int], index: int) -> dict[str, str]:
    tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    return {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}


# The first launch: the run `glimpse train` makes, with a callback on worker 1 that kills its own process (SIGKILL,
# as a preemption does) at the end of the first epoch, after BackupAndRestore has saved it.
_KILLED_RUN = """
import os, signal, sys
import keras
from glimpse.cli import main
from training import train as train_module

class Preempted(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGKILL)

real = train_module.train
def train(config, **kwargs):
    return real(config, callbacks=[Preempted()] if sys.argv[1] == "1" else [], **kwargs)
train_module.train = train
sys.exit(main(["train", *sys.argv[2:]]))
"""


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.integration
def test_two_workers_resume_after_a_kill_and_the_chief_exports_one_version(tmp_path):
    flags = [*TRAIN_FLAGS, "--logdir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "models"),
             "--metrics-out", str(tmp_path / "metrics.json")]
    logs = [(tmp_path / f"first-{i}.log").open("w") for i in range(2)]
    ports = _free_ports(2)
    first = [subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(i), *flags], cwd=tmp_path, env=_env(ports, i),
                              stdout=logs[i], stderr=subprocess.STDOUT) for i in range(2)]
    try:
        assert first[1].wait(timeout=120) == -signal.SIGKILL, (tmp_path / "first-1.log").read_text()[-3000:]
        chief_state = backup_dir(tmp_path / "runs", "tux-scratch", "worker-0") / "training_metadata.json"
        _wait_for(chief_state.exists, 30, "the chief's backup of epoch 1")
    finally:
        for p in first:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
        for f in logs:
            f.close()
    saved = json.loads(chief_state.read_text())["epoch"]
    assert saved == 1
    assert not (tmp_path / "models" / "tux").exists() and not (tmp_path / "metrics.json").exists()

    # Both restarted with the same command (new ports: the old ones may linger), as a TFJob restarts its pods.
    ports = _free_ports(2)
    second = [subprocess.Popen([sys.executable, "-m", "glimpse", "train", *flags], cwd=tmp_path, env=_env(ports, i),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = []
    try:
        for p in second:
            outputs.append(p.communicate(timeout=150)[0])
    finally:
        for p in second:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in second] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    for i, out in enumerate(outputs):
        assert f"task=worker-{i} resumed_at_epoch={saved}" in out, out[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["start_epoch"] == saved and metrics["epochs_run"] == EPOCHS - saved
    versions = sorted(p.name for p in (tmp_path / "models" / "tux").iterdir() if p.name.isdigit())
    assert versions == ["1"], versions  # the chief exported; worker 1 did not
    card = json.loads((tmp_path / "models" / "tux" / "1" / "assets.extra" / "model_card.json").read_text())
    assert card["distribution"]["replicas"] == 2 and card["distribution"]["global_batch_size"] == 16
    assert card["training"]["distribute"] == "multiworker"
    assert card["metrics"]["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert not chief_state.exists()  # the backup is removed once the fit has finished
    runs = [p for p in (tmp_path / "runs").iterdir() if p.name != "backup"]
    assert len(runs) == 2  # TensorBoard from the chief only: one run per launch, none from worker 1


@pytest.mark.slow
def test_mirrored_trains_under_the_strategy_with_a_backup(tmp_path):
    from training.train import TrainConfig, train

    config = TrainConfig(dataset="tuxpaint", model="scratch", image_size=32, epochs=2, batch_size=8, max_examples=16,
                         seed=7, distribute="mirrored", logdir=str(tmp_path / "runs"),
                         export_dir=str(tmp_path / "models"), name="tux")
    r = train(config, export=False, verbose=0)
    assert r.chief and r.metrics["start_epoch"] == 0 and r.metrics["epochs_run"] == 2
    assert r.model.distribute_strategy.__class__.__name__ == "MirroredStrategy"
    assert 0.0 <= r.metrics["test_accuracy"] <= 1.0 and r.run_dir is not None
    assert not backup_dir(tmp_path / "runs", "tux-scratch", "worker-0").exists()  # removed once the fit ended
