"""`glimpse tune` in keras-tuner's distributed mode: the environment it reads, and a real search by a chief (the
oracle, a gRPC server) and two worker processes on loopback ports."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studies.chapter import StudyError
from studies.tuning import ORACLE_ENV, DistributedTuning, TuneConfig, distributed_tuning, execute_tune
from tests.conftest import _free_port

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------------------------
# The environment


def test_no_oracle_address_means_one_process() -> None:
    assert distributed_tuning({}) is None
    assert distributed_tuning({"KERASTUNER_TUNER_ID": "chief"}) is None  # keras-tuner too: only the address counts


def test_chief_and_worker_from_keras_tuner_variables() -> None:
    chief = distributed_tuning({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "0.0.0.0",
                                "KERASTUNER_ORACLE_PORT": "8000"})
    assert chief == DistributedTuning("chief", "0.0.0.0", 8000) and chief.is_chief
    worker = distributed_tuning({"KERASTUNER_TUNER_ID": "worker-1", "KERASTUNER_ORACLE_IP": "glimpse-tuner-oracle",
                                 "KERASTUNER_ORACLE_PORT": " 8000 "})
    assert worker is not None and not worker.is_chief and worker.oracle_port == 8000
    assert worker.environ() == dict(zip(ORACLE_ENV, ("worker-1", "glimpse-tuner-oracle", "8000"), strict=True))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}, "KERASTUNER_TUNER_ID"),
        ({"KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_TUNER_ID": "chief"}, "KERASTUNER_ORACLE_PORT"),
        ({"KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_TUNER_ID": "w", "KERASTUNER_ORACLE_PORT": "80a"}, "port"),
        ({"KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_TUNER_ID": "w", "KERASTUNER_ORACLE_PORT": "70000"}, "port"),
    ],
)
def test_incomplete_or_bad_variables_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(StudyError, match=message):
        distributed_tuning(env)


def test_autokeras_is_not_distributed(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="one process"):
        TuneConfig(out=tmp_path, tuner="autokeras", distributed=DistributedTuning("chief", "127.0.0.1", 8000))


def test_cli_reports_bad_variables_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from glimpse.cli import main as glimpse_main

    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.delenv("KERASTUNER_TUNER_ID", raising=False)
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    assert glimpse_main(["tune", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("glimpse tune:") and "KERASTUNER_TUNER_ID" in err and "\n" not in err


def test_a_one_process_search_ignores_stray_variables_and_puts_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config decides: a search built without ``distributed`` runs alone even where the variables are set."""
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "1")  # nothing listens: a distributed search would hang
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "worker-9")
    config = TuneConfig(out=tmp_path, tuner="random", max_trials=1, export=False, verbose=0)
    seen = {}

    def spy(cfg: TuneConfig) -> None:
        seen.update({name: os.environ.get(name) for name in ORACLE_ENV})
        raise StudyError("stop here")

    monkeypatch.setattr("studies.tuning._execute_tune", spy)
    monkeypatch.setattr("studies.tuning.seeded", lambda *a, **k: contextlib.nullcontext())  # no TensorFlow needed
    with pytest.raises(StudyError, match="stop here"):
        execute_tune(config)
    assert seen == dict.fromkeys(ORACLE_ENV)
    assert os.environ["KERASTUNER_TUNER_ID"] == "worker-9" and os.environ["KERASTUNER_ORACLE_PORT"] == "1"


# ------------------------------------------------------------------------------------------------------------------
# A chief and two workers, for real


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_chief_and_two_workers_finish_a_search_and_the_chief_reports_every_trial(tmp_path: Path) -> None:
    out = tmp_path / "search"
    max_trials = 4
    argv = [sys.executable, "-m", "glimpse", "tune", "--tuner", "random", "--max-trials", str(max_trials),
            "--dataset", "tuxpaint", "--model", "scratch", "--quick", "--epochs", "1", "--seed", "3",
            "--out", str(out), "--no-export", "--verbose", "0"]
    port = _free_port()
    base_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg",
                "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    roles = ("chief", "worker-0", "worker-1")
    logs = {role: (tmp_path / f"{role}.log").open("w") for role in roles}
    start = time.monotonic()
    procs = {role: subprocess.Popen(argv, cwd=REPO, env={**base_env, "KERASTUNER_TUNER_ID": role},
                                    stdout=logs[role], stderr=subprocess.STDOUT)
             for role in roles}
    try:
        codes = {role: p.wait(timeout=300) for role, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs.values():
            f.close()
    seconds = time.monotonic() - start
    texts = {role: (tmp_path / f"{role}.log").read_text() for role in roles}
    assert codes == dict.fromkeys(roles, 0), "\n".join(f"--- {r}\n{t[-2500:]}" for r, t in texts.items())
    assert f"tune random: {max_trials} trials" in texts["chief"]
    # What the workers ran (each its own file and line), and what the chief reports: the same trials, each once.
    ran = {role: json.loads((out / "workers" / f"{role}.json").read_text())["trials"] for role in roles[1:]}
    worker_ids = [t["trial_id"] for trials in ran.values() for t in trials]
    assert len(worker_ids) == len(set(worker_ids)) == max_trials
    rows = _read_csv(out / "trials.csv")
    assert sorted(r["trial_id"] for r in rows) == sorted(worker_ids)
    assert {r["status"] for r in rows} == {"COMPLETED"}
    assert all(r["val_accuracy"] != "" for r in rows)
    # The chief's timings are the workers' (it ran no trial itself).
    timing = {t["trial_id"]: t for trials in ran.values() for t in trials}
    for r in rows:
        assert float(r["seconds"]) == pytest.approx(timing[r["trial_id"]]["seconds"], abs=0.051)
        assert int(r["epochs_run"]) == timing[r["trial_id"]]["epochs_run"] == 1
    for role in roles[1:]:
        assert f"worker {role}: trials" in texts[role]
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert best["trials_run"] == max_trials
    best_row = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert best["val_accuracy"] == pytest.approx(float(best_row["val_accuracy"]), abs=1e-4)
    assert 0.0 <= best["test_accuracy"] <= 1.0  # the chief reloaded the best worker checkpoint and evaluated it
    print(f"distributed search: {max_trials} trials by 2 workers in {seconds:.0f} s")


def test_the_chiefs_oracle_stops_handing_out_trials_after_the_time_limit() -> None:
    """--time-limit on a distributed chief: past the deadline, a request for a new trial caps max_trials at the
    trials the oracle has, which keras-tuner answers with "the search is over"."""
    from studies.tuning import _stop_creating_trials_after

    class Oracle:  # the two attributes the cap uses, and keras-tuner's rule for stopping
        def __init__(self) -> None:
            self.trials: dict[str, object] = {"0": object(), "1": object()}
            self.max_trials = 10

        def create_trial(self, tuner_id: str) -> str:
            return "STOPPED" if len(self.trials) >= self.max_trials else "RUNNING"

    running = Oracle()
    _stop_creating_trials_after(running, time.perf_counter() + 3600)
    assert running.create_trial("worker-0") == "RUNNING" and running.max_trials == 10
    late = Oracle()
    _stop_creating_trials_after(late, time.perf_counter() - 1)
    assert late.create_trial("worker-0") == "STOPPED" and late.max_trials == 2
    empty = Oracle()
    empty.trials = {}
    _stop_creating_trials_after(empty, time.perf_counter() - 1)
    assert empty.create_trial("worker-0") == "RUNNING" and empty.max_trials == 1  # 0 would mean "no limit"
