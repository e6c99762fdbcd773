"""`glimpse study NAME --shard I/N` and `--merge DIR`: a study's runs split over processes and merged into the same
results as one process writes. Unit tests on hand-made shard files, and a quick study run once in one process and
once as three shard processes, merged and compared."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from glimpse.cli import main as glimpse_main
from studies import chapter
from studies.chapter import (
    AspectOutcomes,
    RunResult,
    StudyConfig,
    StudyError,
    StudyResult,
    merge_shards,
    parse_shard,
    shard_path,
    write_results,
)
from training.fit import TrainConfig

REPO = Path(__file__).resolve().parents[2]
TIMING_COLUMNS = {"seconds_per_epoch", "first_epoch_seconds", "wall_seconds"}


@pytest.fixture(autouse=True)
def _keep_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """glimpse.cli.main(argv) rewrites sys.argv; give it back after each test."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _without(rows: list[dict[str, str]], columns: set[str]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in columns} for r in rows]


def _run(variant: str, val: list[float], test: float, seconds: list[float], lr: float = 1e-3) -> RunResult:
    return RunResult(variant, TrainConfig(lr=lr), {"val_accuracy": val, "accuracy": val}, max(val), test,
                     tuple(seconds), sum(seconds), 40)


def _write_shard(out: Path, config: StudyConfig, index: int, count: int, runs: list[RunResult],
                 trainings: list[tuple[int, RunResult, AspectOutcomes]] = (), start: float = 1000.0) -> Path:
    """A shard file as ``--shard index/count`` writes it (through the module's own encoders)."""
    data = {
        "format": chapter._SHARD_FORMAT,
        "study": chapter._study_json(config),
        "shard": {"index": index, "count": count},
        "started_at": start,
        "finished_at": start + 10.0,
        "wall_seconds": 10.0,
        "runs": [chapter._run_json(r) for r in runs],
        "trainings": [{"seed": seed, "run": chapter._run_json(run), "aspects": o.aspects.tolist(),
                       "correct": {m: c.tolist() for m, c in o.correct.items()}} for seed, run, o in trainings],
    }
    path = shard_path(out, index, count)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------------------------------------------------------
# Unit tests (no training)


@pytest.mark.parametrize(("text", "expected"), [("0/3", (0, 3)), ("2/3", (2, 3)), (" 0/1 ", (0, 1))])
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["3/3", "-1/3", "1", "a/b", "1/0", "0/3/4", ""])
def test_parse_shard_rejects_what_is_not_i_of_n(text: str) -> None:
    with pytest.raises(StudyError, match="--shard"):
        parse_shard(text)


def test_merge_of_shards_writes_what_one_process_writes(tmp_path: Path) -> None:
    variants = ("0.1", "0.01", "0.001")
    config = StudyConfig("learning-rate", TrainConfig(), tmp_path / "one", variants=variants)
    runs = [_run("0.1", [0.1, 0.2], 0.25, [2.0, 1.0], 0.1), _run("0.01", [0.5, 0.8], 0.75, [2.0, 1.5], 0.01),
            _run("0.001", [0.4, 0.6], 0.5, [3.0, 1.0], 0.001)]
    write_results(StudyResult(config, tuple(runs), wall_seconds=25.0))
    shards = tmp_path / "shards-dir"
    # Shard I of 2 holds variants I, I+2: 0 -> 0.1, 0.001; 1 -> 0.01. The files are read in any order.
    _write_shard(shards, config, 1, 2, [runs[1]], start=1005.0)
    _write_shard(shards, config, 0, 2, [runs[0], runs[2]], start=1000.0)
    merged = merge_shards(shards, study="learning-rate")
    assert merged.config.out == shards and merged.wall_seconds == pytest.approx(15.0)  # first start to last end
    assert _read_csv(shards / "results.csv") == _read_csv(tmp_path / "one" / "results.csv")
    assert [r.variant for r in merged.runs] == list(variants)  # the study's order, not the shards'
    one = json.loads((tmp_path / "one" / "history.json").read_text())
    assert json.loads((shards / "history.json").read_text()) == one
    md_one = (tmp_path / "one" / "results.md").read_text().replace("25 s.", "15 s.")
    assert (shards / "results.md").read_text() == md_one
    for name in ("val_accuracy.png", "normalized_accuracy.png"):
        assert (shards / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_merge_pools_aspect_ratio_seeds_as_one_process(tmp_path: Path) -> None:
    config = StudyConfig("aspect-ratio", TrainConfig(), tmp_path / "one", seeds=(7, 8))
    variants = config.spec.variants(False, None)
    modes = [v.name for v in variants]
    rng = np.random.default_rng(0)
    outcomes = [AspectOutcomes(rng.uniform(0.5, 2.5, 12), {m: rng.random(12) > 0.4 for m in modes}) for _ in (7, 8)]
    trainings = [_run("seed 7", [0.4, 0.6], 0.5, [2.0, 1.0]), _run("seed 8", [0.5, 0.7], 0.6, [2.0, 1.0])]
    one = chapter._study_result(config, variants, [], trainings, outcomes, 30.0)
    write_results(one)
    shards = tmp_path / "shards-dir"
    _write_shard(shards, config, 0, 2, [], [(7, trainings[0], outcomes[0])])
    _write_shard(shards, config, 1, 2, [], [(8, trainings[1], outcomes[1])])
    merged = merge_shards(shards)
    assert _read_csv(shards / "aspect_ratio.csv") == _read_csv(tmp_path / "one" / "aspect_ratio.csv")
    assert _read_csv(shards / "results.csv") == _read_csv(tmp_path / "one" / "results.csv")
    assert [r.variant for r in merged.trainings] == ["seed 7", "seed 8"]


def test_merge_refuses_incomplete_mixed_or_foreign_shards(tmp_path: Path) -> None:
    config = StudyConfig("learning-rate", TrainConfig(), tmp_path, variants=("0.1", "0.01"))
    a, b = _run("0.1", [0.1], 0.2, [1.0], 0.1), _run("0.01", [0.3], 0.4, [1.0], 0.01)
    with pytest.raises(StudyError, match="no shard files"):
        merge_shards(tmp_path / "empty")
    _write_shard(tmp_path / "missing", config, 0, 2, [a])
    with pytest.raises(StudyError, match=r"missing \[1\]"):
        merge_shards(tmp_path / "missing")
    _write_shard(tmp_path / "mixed", config, 0, 2, [a])
    _write_shard(tmp_path / "mixed", config, 1, 3, [b])
    with pytest.raises(StudyError, match="different splits"):
        merge_shards(tmp_path / "mixed")
    other = StudyConfig("learning-rate", TrainConfig(seed=1), tmp_path, variants=("0.1", "0.01"))
    _write_shard(tmp_path / "foreign", config, 0, 2, [a])
    _write_shard(tmp_path / "foreign", other, 1, 2, [b])
    with pytest.raises(StudyError, match="not of the same study"):
        merge_shards(tmp_path / "foreign")
    _write_shard(tmp_path / "twice", config, 0, 2, [a])
    _write_shard(tmp_path / "twice", config, 1, 2, [a])
    with pytest.raises(StudyError, match="each of"):
        merge_shards(tmp_path / "twice")
    _write_shard(tmp_path / "ok", config, 0, 1, [a, b])
    with pytest.raises(StudyError, match="not 'optimizer'"):
        merge_shards(tmp_path / "ok", study="optimizer")
    assert not (tmp_path / "ok" / "results.csv").exists()


def test_cli_shard_and_merge_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert glimpse_main(["study", "learning-rate", "--shard", "3/3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("glimpse study:") and "--shard" in err and "\n" not in err
    with pytest.raises(SystemExit) as e:  # one or the other
        glimpse_main(["study", "learning-rate", "--shard", "0/3", "--merge", str(tmp_path)])
    assert e.value.code == 2
    capsys.readouterr()
    assert glimpse_main(["study", "learning-rate", "--merge", str(tmp_path / "nothing")]) == 2
    assert "no shard files" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------------
# Three shard processes against one process, for real


@pytest.mark.slow
def test_three_shard_processes_merge_into_the_single_process_results(tmp_path: Path) -> None:
    study = ["study", "learning-rate", "--variants", "0.01,0.001,0.0001", "--dataset", "tuxpaint", "--model",
             "scratch", "--quick", "--seed", "7", "--verbose", "0"]
    one, fanned = tmp_path / "one", tmp_path / "fanned"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
    procs = [subprocess.Popen([sys.executable, "-m", "glimpse", *study, "--shard", f"{i}/3", "--out", str(fanned)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(3)]
    try:
        assert glimpse_main([*study, "--out", str(one)]) == 0  # meanwhile, the whole study in this process
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-2000:] for o in outputs)
    assert sorted(p.name for p in (fanned / "shards").iterdir()) == [f"shard-{i}-of-3.json" for i in range(3)]
    assert not (fanned / "results.csv").exists()  # a shard writes its share only
    assert glimpse_main(["study", "learning-rate", "--merge", str(fanned)]) == 0
    rows_one, rows_merged = _read_csv(one / "results.csv"), _read_csv(fanned / "results.csv")
    assert [r["variant"] for r in rows_merged] == ["0.01", "0.001", "0.0001"]
    assert _without(rows_merged, TIMING_COLUMNS) == _without(rows_one, TIMING_COLUMNS)
    history_one = json.loads((one / "history.json").read_text())
    history_merged = json.loads((fanned / "history.json").read_text())
    for variant, entry in history_one.items():
        assert history_merged[variant]["history"] == entry["history"]
        assert history_merged[variant]["params"] == entry["params"]
    for name in ("results.md", "val_accuracy.png", "normalized_accuracy.png"):
        assert (fanned / name).stat().st_size > 0
    # The per-run TensorBoard logs of every shard are in the one directory, as one process writes them.
    assert sorted(p.name for p in (fanned / "tb").iterdir() if p.is_dir()) == ["0.0001", "0.001", "0.01"]
