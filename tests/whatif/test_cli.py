"""`glimpse wit` and `glimpse report`: flags, the offline notebook path, errors and their exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from glimpse.cli import main
from tests.whatif.support import image_example, write_layout
from whatif.cli import configure_report, configure_wit, format_table


def _parse(configure: Callable[[argparse.ArgumentParser], None], argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(argv)


def test_flags_and_defaults() -> None:
    args = _parse(configure_wit, ["--model", "m", "--examples", "e.tfrecord"])
    assert (args.serving_address, args.model_version, args.signature, args.max_examples, args.out) == (
        "localhost:8500", None, None, 1000, None)
    args = _parse(configure_report, ["--model", "m", "--examples", "e", "--compare-version", "3", "--bins", "5"])
    assert (args.compare_version, args.compare_model, args.bins, args.out) == (3, None, 5, Path("out/report"))
    for bad in (["--compare-version", "0"], ["--model-version", "x"], ["--timeout", "-1"]):
        with pytest.raises(SystemExit):
            _parse(configure_report, ["--model", "m", "--examples", "e", *bad])


def test_wit_without_the_server_writes_the_notebook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    examples = write_layout(tmp_path, "tiny", ["bird", "fruit"], (2,), [image_example(0, "bird")])
    out = tmp_path / "wit.ipynb"
    code = main(["wit", "--serving-address", "nowhere:1", "--model", "tiny", "--examples", str(examples),
                 "--no-check", "--use-predict", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "label vocab: bird, fruit" in printed
    assert "Predict input tensor" in printed and "nowhere:1" in printed
    source = nbformat.read(str(out), as_version=4).cells[1].source
    assert "use_predict=True," in source and "max_examples=1000," in source


def test_errors_exit_1_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wit", "--model", "tiny", "--examples", str(tmp_path / "none.tfrecord"), "--no-check"]) == 1
    assert "glimpse wit: no examples TFRecord" in capsys.readouterr().err
    assert main(["report", "--model", "tiny", "--examples", str(tmp_path / "none"), "--out", str(tmp_path)]) == 1
    assert "glimpse report: no examples TFRecord" in capsys.readouterr().err
    assert main(["report", "--model", "tiny", "--examples", "e", "--compare-address", "localhost:8500"]) == 1
    assert "the model itself" in capsys.readouterr().err


def test_format_table() -> None:
    assert format_table([("a", "1"), ("long name", "")]).splitlines() == [
        "setting    value", "---------  -----", "a          1", "long name  "]
