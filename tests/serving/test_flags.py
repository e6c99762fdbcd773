"""tensorflow_model_server's flags: every one has an answer, the README's table says the same, and the answers hold.

``TF_SERVING_FLAGS`` is main.cc's flag list at the TF Serving commit serving/README.md names; a flag added there is
added here and to the table.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pytest

from serving.cli import FLAG_ANSWERS, Answer, config_from_args, configure_serve, main
from serving.config import ConfigError, ServerConfig, load_model_server_config
from tests.serving.support import REPO_ROOT

TF_SERVING_FLAGS = (
    "port grpc_socket_path rest_api_port rest_api_num_threads rest_api_timeout_in_ms rest_api_enable_cors_support "
    "enable_batching allow_version_labels_for_unavailable_models batching_parameters_file "
    "enable_per_model_batching_parameters model_config_file model_config_file_poll_wait_seconds model_name "
    "model_base_path num_load_threads num_unload_threads max_num_load_retries load_retry_interval_micros "
    "file_system_poll_wait_seconds flush_filesystem_caches tensorflow_session_parallelism "
    "tensorflow_session_config_file tensorflow_intra_op_parallelism tensorflow_inter_op_parallelism "
    "use_alts_credentials ssl_config_file platform_config_file per_process_gpu_memory_fraction saved_model_tags "
    "grpc_channel_arguments grpc_max_threads enable_model_warmup num_request_iterations_for_warmup version "
    "monitoring_config_file remove_unused_fields_from_bundle_metagraph prefer_tflite_model num_tflite_pools "
    "num_tflite_interpreters_per_pool enable_signature_method_name_check xla_cpu_compilation_enabled "
    "xla_gpu_compilation_enabled enable_profiler thread_pool_factory_config_file mixed_precision skip_initialize_tpu "
    "enable_grpc_healthcheck_service enable_serialization_as_tensor_content"
).split()
_ROW = re.compile(r"^\| `--([a-z0-9_]+)` \| (implemented|accepted with a warning|refused) \|")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    configure_serve(p)
    return p


def parse(*argv: str) -> ServerConfig:
    return config_from_args(parser().parse_args(list(argv)))


def readme_table() -> dict[str, str]:
    rows = {}
    for line in (REPO_ROOT / "serving" / "README.md").read_text().splitlines():
        match = _ROW.match(line)
        if match:
            assert match.group(1) not in rows, f"--{match.group(1)} is listed twice"
            rows[match.group(1)] = match.group(2)
    return rows


def test_every_tf_serving_flag_has_one_answer_in_the_code_and_in_the_readme() -> None:
    assert list(FLAG_ANSWERS) == TF_SERVING_FLAGS
    assert readme_table() == {name: answer.value for name, (answer, _) in FLAG_ANSWERS.items()}
    options = {o for action in parser()._actions for o in action.option_strings}
    assert {f"--{name}" for name in TF_SERVING_FLAGS} <= options
    for name, (answer, why) in FLAG_ANSWERS.items():
        assert (answer is Answer.IMPLEMENTED) == (why == ""), name


@pytest.mark.parametrize("name", [n for n, (a, _) in FLAG_ANSWERS.items() if a is Answer.REFUSED])
def test_refused_flags_exit_2_naming_the_flag_and_why(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    value = {"platform_config_file": "/p.config", "thread_pool_factory_config_file": "/t.config",
             "mixed_precision": "bfloat16"}.get(name, "true")
    assert main(["--model_base_path=/m", f"--{name}={value}"]) == 2
    err = capsys.readouterr().err
    assert f"--{name}={value} is not supported: {FLAG_ANSWERS[name][1]}" in err
    assert "unrecognized arguments" not in err


@pytest.mark.parametrize("name", [n for n, (a, _) in FLAG_ANSWERS.items() if a is Answer.WARNED])
def test_warned_flags_are_accepted_with_one_warning(name: str, caplog: pytest.LogCaptureFixture) -> None:
    value = {"num_load_threads": "4", "num_unload_threads": "2", "num_tflite_interpreters_per_pool": "3"}.get(name)
    if value is None:
        value = "false" if name in ("flush_filesystem_caches", "remove_unused_fields_from_bundle_metagraph") else "true"
    with caplog.at_level(logging.WARNING, logger="serving"):
        parse("--model_base_path=/m", f"--{name}={value}")
        parse("--model_base_path=/m", f"--{name}", value)
    assert [r.getMessage() for r in caplog.records] == [
        f"--{name}={value} is accepted and ignored: {FLAG_ANSWERS[name][1]}"] * 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="serving"):  # main.cc's default value means "not used": silent
        parse("--model_base_path=/m", "--num_load_threads=0", "--flush_filesystem_caches=true")
    assert caplog.records == []


def test_tf_serving_flag_syntax() -> None:
    a = parse("--port=9000", "--model_base_path=/b", "--prefer_tflite_model", "--enable_model_warmup=false",
              "--max_num_load_retries=2", "--load_retry_interval_micros=1500000", "--grpc_socket_path=/tmp/s.sock")
    b = parse("--port", "9000", "--model_base_path", "/b", "--prefer_tflite_model=true", "--enable_model_warmup",
              "false", "--max_num_load_retries", "2", "--load_retry_interval_micros", "1500000",
              "--grpc_socket_path", "/tmp/s.sock")
    assert a == b
    assert a.prefer_tflite_model and not a.enable_model_warmup and a.load_retry_interval_seconds == 1.5
    defaults = parse("--model_base_path=/b")
    assert (defaults.max_num_load_retries, defaults.load_retry_interval_micros) == (5, 60_000_000)
    assert defaults.enable_model_warmup and defaults.enable_profiler and not defaults.prefer_tflite_model
    assert defaults.tags == ["serve"] and parse("--model_base_path=/b", "--saved_model_tags=serve,gpu").tags == [
        "serve", "gpu"]
    with pytest.raises(SystemExit):
        parse("--model_base_path=/b", "--prefer_tflite_model=maybe")


@pytest.mark.parametrize(("argv", "message"), [
    (("--port=0", "--model_base_path=/b"),
     "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."),
    (("--model_base_path=/b", "--batching_parameters_file=/b.config"),
     "server_options.batching_parameters_file is set without setting server_options.enable_batching to true."),
    (("--model_base_path=/b", "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1",
      "--tensorflow_session_parallelism=1"), "You cannot configure all."),
])
def test_server_build_checks(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(*argv)
    assert parse("--port=0", "--grpc_socket_path=/tmp/x.sock", "--model_base_path=/b").port == 0


def test_session_config_precedence(tmp_path: Path) -> None:
    session_file = tmp_path / "session.config"
    session_file.write_text("intra_op_parallelism_threads: 7\nallow_soft_placement: true\n")
    config = parse("--model_base_path=/b", f"--tensorflow_session_config_file={session_file}",
                   "--tensorflow_session_parallelism=3", "--per_process_gpu_memory_fraction=0.5").session_config()
    assert config.allow_soft_placement and config.gpu_options.per_process_gpu_memory_fraction == 0.5
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 3)
    config = parse("--model_base_path=/b", "--tensorflow_intra_op_parallelism=2").session_config()
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (2, 0)


def test_version_prints_both_versions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("TensorFlow ModelServer: ") and out[1].startswith("TensorFlow Library: ")


def test_a_bad_model_config_is_reported_like_tf_serving(tmp_path: Path) -> None:
    path = tmp_path / "bad_model_config.txt"
    path.write_text("improperly formatted file")
    with pytest.raises(ConfigError) as err:
        load_model_server_config(path)
    assert str(err.value).startswith(
        'Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1: Message type '
        '"tensorflow.serving.ModelServerConfig" has no field named "improperly".')
    assert str(err.value).endswith(f"Invalid protobuf file: '{path}'")
