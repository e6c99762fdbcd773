"""The CLI registry: each command's module is imported only when that command runs."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from glimpse.bench import format_rows
from glimpse.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_module_has_its_configure_and_run(command):
    module = importlib.import_module(COMMANDS[command][0])
    name = command.replace("-", "_")
    assert callable(getattr(module, f"configure_{name}")) and callable(getattr(module, f"run_{name}"))


@pytest.mark.parametrize("command", ["api", "up", "report"])
def test_light_commands_parse_without_importing_tensorflow(command):
    code = (
        "import sys\n"
        f"sys.argv = ['glimpse', {command!r}, '--help']\n"
        "from glimpse.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules, sorted(m for m in sys.modules if m.startswith('tensorflow'))[:3]\n"
        "print('TF-FREE')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TF-FREE" in out.stdout and "usage: glimpse" in out.stdout


def test_bench_rows_render_as_a_markdown_table():
    lines = format_rows("demo", [{"name": "a vs b", "ours_s": 0.0123, "baseline_s": 12.5, "ratio": 0.000984,
                                  "note": "n"}])
    assert lines[:4] == ["### demo", "", "| benchmark | Glimpse | baseline | ratio | note |", "|---|---|---|---|---|"]
    assert lines[4] == "| a vs b | 12.3 ms | 12.5 s | 0.001x | n |"


def test_main_parses_the_argv_it_is_given_and_leaves_sys_argv_alone(capsys) -> None:
    before = list(sys.argv)
    with pytest.raises(SystemExit) as exc:
        main(["api", "--help"])
    assert exc.value.code == 0
    assert sys.argv == before
    assert "usage: glimpse api" in capsys.readouterr().out


def test_the_version_comes_from_the_installed_distribution() -> None:
    from importlib.metadata import version

    from glimpse import __version__

    assert __version__ == version("glimpse")


def test_an_unknown_flag_is_reported_with_the_commands_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["api", "--no-such-flag", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: glimpse api") and "unrecognized arguments: --no-such-flag 1" in err
