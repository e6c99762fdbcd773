"""The notebook writer: the cells' source, nbformat validity, the TensorBoard table."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from tests.whatif.support import FakeModel, FakeServing, image_example, write_layout
from whatif.config import resolve_settings
from whatif.notebook import NOTEBOOK_ARGUMENTS, config_cell_source, widget_cell_source, write_notebook

ARGUMENTS = {
    "serving_address": "localhost:8500",
    "model_name": "tiny",
    "examples_path": "/models/tiny/examples/test.tfrecord",
    "compare_model_version": 1,
    "use_predict": True,
    "label_vocab": ["bird", "fruit"],
}


def _call_of(source: str) -> tuple[list, dict]:
    """The literal positional and keyword arguments of the ``build_config(...)`` call in ``source``."""
    tree = ast.parse(source)
    assign = next(node for node in tree.body if isinstance(node, ast.Assign))
    assert [t.id for t in assign.targets] == ["config_builder"]
    call = assign.value
    assert ast.unparse(call.func) == "build_config"
    return [ast.literal_eval(a) for a in call.args], {k.arg: ast.literal_eval(k.value) for k in call.keywords}


def test_config_cell_calls_build_config_with_the_arguments() -> None:
    source = config_cell_source(ARGUMENTS)
    assert source.startswith("from whatif.compat import install\nfrom whatif.config import build_config\n\ninstall()")
    args, kwargs = _call_of(source)
    assert args == ["localhost:8500", "tiny", "/models/tiny/examples/test.tfrecord"]
    assert kwargs == {"compare_model_version": 1, "use_predict": True, "label_vocab": ["bird", "fruit"]}
    assert "client_factory" not in NOTEBOOK_ARGUMENTS and "compare_address" in NOTEBOOK_ARGUMENTS


def test_config_cell_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="not build_config arguments: client_factory"):
        config_cell_source({**ARGUMENTS, "client_factory": print})
    with pytest.raises(ValueError, match="missing build_config arguments: examples_path"):
        config_cell_source({"serving_address": "a:1", "model_name": "m"})
    with pytest.raises(TypeError, match="label_vocab"):
        config_cell_source({**ARGUMENTS, "label_vocab": {"a": 1}})
    with pytest.raises(ValueError, match="height"):
        widget_cell_source(10)


def test_written_notebook(tmp_path: Path) -> None:
    examples = write_layout(tmp_path, "tiny", ["bird", "fruit", "vehicle"], (1,), [image_example(0, "bird")])
    serving = FakeServing({"tiny": FakeModel(["bird", "fruit", "vehicle"])})
    arguments = {"serving_address": "h:1", "model_name": "tiny", "examples_path": str(examples)}
    settings = resolve_settings(**arguments, client_factory=serving)
    path = write_notebook(tmp_path / "out" / "wit.ipynb", arguments, settings=settings, height=640)

    notebook = nbformat.read(str(path), as_version=4)
    nbformat.validate(notebook)
    kinds = [(cell.cell_type, cell.metadata.get("tags", [])) for cell in notebook.cells]
    assert kinds == [("markdown", []), ("code", ["whatif-config"]), ("code", ["whatif-widget"]), ("markdown", [])]
    assert _call_of(notebook.cells[1].source) == (["h:1", "tiny", str(examples)], {})
    assert notebook.cells[2].source.endswith("WitWidget(config_builder, height=640)")
    table = notebook.cells[3].source
    assert "| Inference address | `h:1` |" in table and "| Model version (optional) | |" in table
    assert f"| Path to label dict (optional) | `{examples.parent.parent / '1' / 'assets' / 'labels.txt'}` |" in table
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(ValueError, match=r"\.ipynb"):
        write_notebook(tmp_path / "wit.txt", arguments)
