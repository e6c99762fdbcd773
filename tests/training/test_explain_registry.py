"""The method registry agrees with the contract, with what the explainer traces and the exporter writes, and with
the method tables of docs/contract.md and docs/explanations.md."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import keras
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import training.explain as explain_package
from glimpse_wire.contract import (
    ATTRIBUTION_METHODS,
    CAM_METHODS,
    EXPLAIN_METHODS,
    IN_CLASS_INDEX,
    IN_IMAGE_BYTES,
    IN_IMAGES,
    METHOD_PARAMS,
    SERVE_TAG,
    explain_outputs,
    explain_signature,
)
from training.explain import (
    REGISTRY,
    ExplainMethod,
    GraphExplainer,
    attribution_methods,
    get_method,
    parameter_table,
    registered_methods,
)
from training.export import expected_signatures

DOCS = Path(__file__).resolve().parents[2] / "docs"
_DTYPE_ENUMS = {
    "int32": tf.int32.as_datatype_enum,
    "float32": tf.float32.as_datatype_enum,
    "bool": tf.bool.as_datatype_enum,
}


def _small_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def test_the_registry_is_the_contracts_methods_in_order() -> None:
    assert registered_methods() == EXPLAIN_METHODS
    assert attribution_methods() == ATTRIBUTION_METHODS
    for name, method in REGISTRY.items():
        assert isinstance(method, ExplainMethod) and method.name == name
        assert method.params is METHOD_PARAMS[name]  # the contract's records, not copies
        assert method.signature == explain_signature(name)
        assert method.outputs == explain_outputs(name)
        assert method.summary and (method.is_attribution == (name in ATTRIBUTION_METHODS))
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        get_method("lime")


def test_each_method_is_one_module_named_after_it() -> None:
    """Adding a method is one module: every module of the package that defines METHOD is registered under its own
    name, and every registered method comes from the module of that name."""
    defining = {}
    for info in pkgutil.iter_modules(explain_package.__path__):
        module = importlib.import_module(f"{explain_package.__name__}.{info.name}")
        if hasattr(module, "METHOD"):
            defining[info.name] = module.METHOD
    assert set(defining) == set(REGISTRY)
    for name, method in defining.items():
        assert REGISTRY[name] is method


def test_traced_functions_take_exactly_the_contract_inputs_and_give_its_outputs() -> None:
    explainer = GraphExplainer(_small_model(), "conv")
    assert explainer.signature_methods == registered_methods()
    for name in registered_methods():
        specs = explainer.input_signature(name)
        assert [s.name for s in specs] == [IN_IMAGES, IN_CLASS_INDEX, *(p.name for p in METHOD_PARAMS[name])]
        assert [s.dtype.name for s in specs[2:]] == [p.dtype for p in METHOD_PARAMS[name]]
        outputs = explainer.function(name).get_concrete_function().structured_outputs
        assert set(outputs) == set(explain_outputs(name)), name


def test_methods_the_model_cannot_serve_are_left_out() -> None:
    explainer = GraphExplainer(_small_model(), None)
    assert explainer.signature_methods == tuple(m for m in EXPLAIN_METHODS if m not in (*CAM_METHODS, "activations"))
    assert explainer.methods == tuple(m for m in ATTRIBUTION_METHODS if m not in CAM_METHODS)
    for name in (*CAM_METHODS, "activations"):
        with pytest.raises(ValueError, match=re.escape(get_method(name).unsupported)):
            getattr(explainer, name)(tf.zeros([1, 8, 8, 3]), [0], *(p.default for p in METHOD_PARAMS[name]))


@pytest.mark.slow
def test_every_registered_method_is_exported_with_exactly_the_contract_inputs(exported_model) -> None:
    saved = saved_model_pb2.SavedModel.FromString((exported_model.version_dir / "saved_model.pb").read_bytes())
    (meta_graph,) = [m for m in saved.meta_graphs if SERVE_TAG in m.meta_info_def.tags]
    defs = dict(meta_graph.signature_def)
    explain_keys = {key for key in defs if key.startswith("explain_")}
    assert explain_keys == {method.signature for method in REGISTRY.values()}
    assert set(expected_signatures(True)) == set(defs) - {"__saved_model_init_op"}
    for method in REGISTRY.values():
        sig = defs[method.signature]
        want = {IN_IMAGE_BYTES: tf.string.as_datatype_enum, IN_CLASS_INDEX: tf.int32.as_datatype_enum}
        want.update({p.name: _DTYPE_ENUMS[p.dtype] for p in method.params})
        assert {alias: info.dtype for alias, info in sig.inputs.items()} == want, method.name
        assert set(sig.outputs) == set(method.outputs), method.name


def test_contract_doc_carries_the_generated_methods_table() -> None:
    text = (DOCS / "contract.md").read_text(encoding="utf-8")
    table = parameter_table()
    assert table in text, f"docs/contract.md: replace the generated methods table with\n{table}"


def _rows(text: str) -> dict[str, list[str]]:
    """The table rows of a Markdown text keyed by their `explain_<method>` first cell: the other cells."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| `(explain_\w+)` \|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split(" | ")]
    return rows


def test_contract_doc_signature_table_lists_each_methods_inputs() -> None:
    text = (DOCS / "contract.md").read_text(encoding="utf-8")
    signatures = text.split("## Signatures", 1)[1].split("Explanation outputs:", 1)[0]  # the signature table
    rows = _rows(signatures)
    assert set(rows) == {method.signature for method in REGISTRY.values()}
    for method in REGISTRY.values():
        inputs = rows[method.signature][1]
        names = re.findall(r"`(\w+)`", inputs)
        assert names == [IN_IMAGE_BYTES, IN_CLASS_INDEX, *(p.name for p in method.params)], method.name


def test_explanations_doc_method_table_lists_the_attribution_methods_with_their_defaults() -> None:
    text = (DOCS / "explanations.md").read_text(encoding="utf-8")
    rows = _rows(text.split("## The methods", 1)[1].split("\n## ", 1)[0])
    assert list(rows) == [get_method(name).signature for name in attribution_methods()]
    for name in attribution_methods():
        method = get_method(name)
        parameters = rows[method.signature][1]
        if not method.params:
            assert parameters == "none", name
        for param in method.params:
            default = str(param.default).lower() if isinstance(param.default, bool) else f"{param.default:g}"
            assert f"`{param.name}` {param.dtype}" in parameters, (name, param.name)
            assert f"default {default}" in parameters.split(f"`{param.name}`", 1)[1], (name, param.name)
