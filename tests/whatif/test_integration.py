"""The What-If Tool against a real `glimpse serve`: witwidget's own code paths, the notebook, the report, the CLI."""

from __future__ import annotations

import ast
import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import whatif  # before witwidget: installs whatif.compat
from tests.whatif.conftest import MODEL, OTHER, OTHER_VERSION, WitStack

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# ipywidgets' DOMWidget.__init__ reaches WitWidgetBase.__init__ through traitlets' cooperative super() call without
# its argument; traitlets warns (witwidget's class layout, harmless: WitWidget then calls WitWidgetBase itself).
WIDGET_WARNING = "ignore:Passing unrecognized arguments to super\\(WitWidget\\):DeprecationWarning"


def classify(stack: WitStack, version: int | None, model: str = MODEL) -> list[list[tuple[str, float]]]:
    from glimpse_wire.client import ServingClient
    from glimpse_wire.examples import read_tfrecord

    with ServingClient(stack.address) as client:
        return client.classify(model, list(read_tfrecord(stack.examples)), version=version).results


def wit_scores(result: dict[str, Any]) -> list[list[tuple[str, float]]]:
    return [[(c["label"], c["score"]) for c in item["classes"]] for item in result["classificationResult"][
        "classifications"]]


def assert_same_scores(wit: list[list[tuple[str, float]]], ours: list[list[tuple[str, float]]]) -> None:
    assert len(wit) == len(ours)
    for got, want in zip(wit, ours, strict=True):
        assert [label for label, _ in got] == [label for label, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# witwidget's own inference


def test_infer_impl_classify_two_versions_equals_our_client(wit_stack: WitStack) -> None:
    from witwidget.notebook.base import WitWidgetBase

    builder = whatif.build_config(
        wit_stack.address, MODEL, wit_stack.examples, model_version=1, compare_model_version=2
    )
    result = WitWidgetBase(builder).infer_impl()

    n = len(wit_stack.labels)
    assert result["inferences"]["indices"] == list(range(n))
    assert result["label_vocab"] == wit_stack.class_names
    first, second = result["inferences"]["results"]
    assert_same_scores(wit_scores(first), classify(wit_stack, 1))
    assert_same_scores(wit_scores(second), classify(wit_stack, 2))
    # the two versions really are different models
    assert not np.allclose([s for r in wit_scores(first) for _, s in r], [s for r in wit_scores(second) for _, s in r])


def test_infer_impl_predict_api_reads_scores_of_the_classification_signature(wit_stack: WitStack) -> None:
    from witwidget.notebook.base import WitWidgetBase

    builder = whatif.build_config(
        wit_stack.address, MODEL, wit_stack.examples, model_version=2, compare_model_version=1, use_predict=True
    )
    config = builder.build()
    assert (config["uses_predict_api"], config["predict_input_tensor"], config["predict_output_tensor"]) == (
        True, "inputs", "scores")
    result = WitWidgetBase(builder).infer_impl()

    indices = [str(i) for i in range(len(wit_stack.class_names))]
    for wit, version in zip(result["inferences"]["results"], (2, 1), strict=True):
        ours = classify(wit_stack, version)
        # Predict gives class ids "0".."C-1" (named by the label vocab); map ours the same way
        renamed = [[(str(wit_stack.class_names.index(label)), score) for label, score in row] for row in ours]
        assert [[label for label, _ in row] for row in wit_scores(wit)] == [indices] * len(ours)
        assert_same_scores(wit_scores(wit), renamed)


def test_compare_model_by_name_gets_its_labels_from_the_server(wit_stack: WitStack) -> None:
    from witwidget.notebook.base import WitWidgetBase

    settings = whatif.resolve_settings(wit_stack.address, OTHER, wit_stack.examples)
    assert settings.label_vocab == tuple(wit_stack.class_names)
    assert settings.label_vocab_path is None  # not next to these examples: one Classify call named the classes
    assert settings.served_version == OTHER_VERSION

    builder = whatif.build_config(wit_stack.address, MODEL, wit_stack.examples, compare_model_name=OTHER)
    result = WitWidgetBase(builder).infer_impl()
    assert_same_scores(wit_scores(result["inferences"]["results"][0]), classify(wit_stack, None))
    assert_same_scores(wit_scores(result["inferences"]["results"][1]), classify(wit_stack, None, OTHER))


@pytest.mark.filterwarnings(WIDGET_WARNING)
def test_jupyter_widget_infers_draws_the_sprite_and_runs_mutants(wit_stack: WitStack) -> None:
    from PIL import Image
    from witwidget.notebook.visualization import WitWidget

    builder = whatif.build_config(wit_stack.address, MODEL, wit_stack.examples, compare_model_version=1)
    widget = WitWidget(builder, height=600)
    n = len(wit_stack.labels)

    # the thumbnail atlas WIT shows (TF1-style graph code inside witwidget)
    header, encoded = widget.sprite.split(",", 1)
    assert header == "data:image/png;base64"
    side = int(np.ceil(np.sqrt(n))) * 32
    assert Image.open(io.BytesIO(base64.b64decode(encoded))).size == (side, side)

    # the front end sets `infer`; the observer runs inference (errors would land in `error`) and sends the results
    # in batches through `inferences_batch`
    widget.infer = 1
    assert widget.error == {}
    batch = widget.inferences_batch
    assert batch["indices"] == list(range(n))
    for sent, version in zip(batch["results"], (None, 1), strict=True):
        got = [[(c["label"], c["score"]) for c in item["classes"]] for item in sent]
        assert_same_scores(got, classify(wit_stack, version))

    # partial-dependence ("mutant") charts go through Classify too; brightness is not read by the model, so every
    # point equals the example's own score
    eligible = {f["name"]: f for f in widget.get_eligible_features_impl()}
    assert {"aspect_ratio", "brightness", "width", "height", "label"} <= set(eligible)
    low, high = eligible["brightness"]["observedMin"], eligible["brightness"]["observedMax"]
    charts = widget.infer_mutants_impl({"x_min": low, "x_max": high, "feature_index_pattern": None,
                                        "feature_name": "brightness", "example_index": 0})
    assert charts["chartType"] == "numeric"
    (per_model,) = charts["data"]
    assert len(per_model) == 2
    for model_chart, version in zip(per_model, (None, 1), strict=True):
        want = dict(classify(wit_stack, version)[0])
        for label, points in model_chart.items():
            assert len(points) == 10
            np.testing.assert_allclose([p["scalar"] for p in points], want[label], rtol=1e-6)


def test_config_errors_name_the_problem(wit_stack: WitStack) -> None:

    with pytest.raises(whatif.WitConfigError, match="encoded images .*serialized tf.Examples"):
        whatif.build_config(wit_stack.address, MODEL, wit_stack.examples, signature="serving_default",
                            use_predict=True)
    with pytest.raises(whatif.WitConfigError, match="needs a classify signature"):
        whatif.build_config(wit_stack.address, MODEL, wit_stack.examples, signature="serving_default")
    with pytest.raises(whatif.WitConfigError, match="NOT_FOUND"):
        whatif.build_config(wit_stack.address, "nope", wit_stack.examples)
    with pytest.raises(whatif.WitConfigError, match="NOT_FOUND"):
        whatif.build_config(wit_stack.address, MODEL, wit_stack.examples, compare_model_version=9)


# ----------------------------------------------------------------------------------------------------------------
# The notebook


def _run_cells(notebook: Any) -> dict[str, Any]:
    """Run the code cells in order like a kernel; ``_`` holds the last cell's last expression."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<cell>", "exec"), namespace)  # noqa: S102 - the notebook under test
        if last is not None:
            namespace["_"] = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)  # noqa: S307
    return namespace


@pytest.mark.filterwarnings(WIDGET_WARNING)
def test_glimpse_wit_writes_a_notebook_whose_cells_build_the_same_config(
    wit_stack: WitStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import nbformat
    from witwidget.notebook.visualization import WitWidget

    from glimpse.cli import main

    out = tmp_path / "nb" / "wit.ipynb"
    code = main(["wit", "--serving-address", wit_stack.address, "--model", MODEL, "--examples",
                 str(wit_stack.examples), "--compare-version", "1", "--max-examples", "12", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"wrote {out}" in printed
    for field, value in (("Inference address", wit_stack.address), ("Model name", MODEL),
                         ("Model type", "Classification"), ("Path to examples", str(wit_stack.examples.resolve())),
                         ("Second model: model version (optional)", "1")):
        assert any(line.startswith(field) and line.rstrip().endswith(value) for line in printed.splitlines()), field

    notebook = nbformat.read(str(out), as_version=4)
    nbformat.validate(notebook)
    namespace = _run_cells(notebook)
    expected = whatif.build_config(wit_stack.address, MODEL, wit_stack.examples, compare_model_version=1,
                                   max_examples=12).build()
    assert namespace["config_builder"].build() == expected
    assert len(expected["examples"]) == 12
    widget = namespace["_"]
    assert isinstance(widget, WitWidget)
    assert widget.config["model_version_2"] == "1" and widget.config["label_vocab"] == wit_stack.class_names


# ----------------------------------------------------------------------------------------------------------------
# The report


def _direct(stack: WitStack, version: int | None, model: str = MODEL) -> np.ndarray:
    rows = classify(stack, version, model)
    return np.array([[dict(row)[name] for name in stack.class_names] for row in rows], dtype=np.float64)


def test_report_numbers_equal_a_direct_computation(wit_stack: WitStack, tmp_path: Path) -> None:
    from glimpse_wire.examples import parse_example, read_tfrecord
    from whatif.report import ASPECT_RATIO_BINS, ReportConfig, make_report

    out = tmp_path / "report"
    config = ReportConfig(wit_stack.address, MODEL, wit_stack.examples, out, model_version=2, compare_version=1,
                          batch_size=7, top_k=5)
    report = make_report(config)
    assert json.loads((out / "report.json").read_text()) == report

    labels = np.array(wit_stack.labels)
    a, b = _direct(wit_stack, 2), _direct(wit_stack, 1)
    pa, pb = a.argmax(1), b.argmax(1)
    n = len(labels)
    assert [m["version"] for m in report["models"]] == [2, 1]
    overall = report["overall"]
    assert overall["n"] == n
    assert overall["correct"] == {"a": int((pa == labels).sum()), "b": int((pb == labels).sum())}
    assert overall["accuracy"]["a"] == pytest.approx((pa == labels).mean())
    assert overall["agreement"] == pytest.approx((pa == pb).mean())

    def check(family: str, masks: list[tuple[str, np.ndarray]]) -> None:
        rows = report["slices"][family]["slices"]
        nonempty = [(name, m) for name, m in masks if m.any()]
        assert [r["slice"] for r in rows] == [name for name, _ in nonempty]
        for row, (_, mask) in zip(rows, nonempty, strict=True):
            assert row["n"] == int(mask.sum())
            assert row["correct"] == {"a": int((pa == labels)[mask].sum()), "b": int((pb == labels)[mask].sum())}
            assert row["accuracy"]["b"] - row["accuracy"]["a"] == pytest.approx(row["accuracy_delta"])
            assert row["agreement"] == pytest.approx((pa == pb)[mask].mean())

    names = wit_stack.class_names
    check("label", [(name, labels == i) for i, name in enumerate(names)])
    check("predicted_a", [(name, pa == i) for i, name in enumerate(names)])
    check("predicted_b", [(name, pb == i) for i, name in enumerate(names)])
    features = [parse_example(r) for r in read_tfrecord(wit_stack.examples)]
    aspect = np.array([f["aspect_ratio"][0] for f in features])
    check("aspect_ratio", [(name, (aspect >= lo) & (aspect < hi)) for name, lo, hi in ASPECT_RATIO_BINS])
    assert len(report["slices"]["aspect_ratio"]["slices"]) >= 2  # the original photos are not all square
    for family, values in (("brightness", np.array([f["brightness"][0] for f in features])),
                           ("size", np.array([max(f["width"][0], f["height"][0]) for f in features]))):
        edges = report["slices"][family]["edges"]
        masks = [(values >= lo) & ((values < hi) if i < len(edges) - 2 else (values <= hi))
                 for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))]
        assert sum(int(m.sum()) for m in masks) == n
        check(family, [(row["slice"], m) for row, m in zip(report["slices"][family]["slices"], masks, strict=True)])

    for key, predicted in (("a", pa), ("b", pb)):
        confusion = np.zeros((len(names), len(names)), dtype=int)
        for true, guess in zip(labels, predicted, strict=True):
            confusion[true, guess] += 1
        assert report["confusion_matrices"][key] == confusion.tolist()

    distance = 0.5 * np.abs(a - b).sum(1)
    top = report["disagreements"]["top"]
    assert [r["index"] for r in top] == list(np.argsort(-distance, kind="stable")[:5])
    assert [r["distance"] for r in top] == pytest.approx(sorted(distance, reverse=True)[:5])
    assert report["disagreements"]["different_predictions"] == int((pa != pb).sum())
    wrong_a = np.flatnonzero(pa != labels)
    confidence = a.max(1)
    assert [r["index"] for r in report["confident_mistakes"]["a"]] == list(
        wrong_a[np.argsort(-confidence[wrong_a], kind="stable")][:5])

    for file in report["charts"].values():
        assert (out / file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    assert "## Largest disagreements" in markdown and "![confusion matrix of tiny v2](confusion_a.png)" in markdown


def test_glimpse_report_cli_compares_two_models(
    wit_stack: WitStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from glimpse.cli import main

    out = tmp_path / "cli-report"
    code = main(["report", "--serving-address", wit_stack.address, "--model", MODEL, "--compare-model", OTHER,
                 "--examples", str(wit_stack.examples), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((out / "report.json").read_text())
    assert [(m["name"], m["version"]) for m in report["models"]] == [(MODEL, 2), (OTHER, OTHER_VERSION)]
    # `other` is a copy of tiny version 2: identical scores, full agreement
    assert report["overall"]["agreement"] == 1.0
    assert report["disagreements"]["mean_distance"] == pytest.approx(0.0, abs=1e-6)
    accuracy = report["overall"]["accuracy"]["a"]
    assert f"tiny v2    {100 * accuracy:.1f}%" in printed

    code = main(["report", "--serving-address", wit_stack.address, "--model", "nope", "--examples",
                 str(wit_stack.examples), "--out", str(tmp_path / "none")])
    assert code == 1
    assert "NOT_FOUND" in capsys.readouterr().err
