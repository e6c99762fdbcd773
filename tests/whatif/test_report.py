"""The report's maths on small hand-made inputs, the example reader, markdown, charts and the orchestration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.whatif.support import FakeModel, FakeServing, image_example, write_layout
from whatif.report import (
    ASPECT_RATIO_BINS,
    ExampleTable,
    ModelRun,
    ReportConfig,
    ReportError,
    compute_report,
    make_report,
    read_example_table,
    render_markdown,
    scores_matrix,
)

NAMES = ["x", "y", "z"]
# Six examples, two of each class. Model a predicts x,y,y,y,z,x (4 right); model b predicts x,x,y,z,z,z (5 right).
LABELS = np.array([0, 0, 1, 1, 2, 2])
SCORES_A = np.array([
    [0.8, 0.1, 0.1],
    [0.2, 0.7, 0.1],
    [0.1, 0.8, 0.1],
    [0.3, 0.6, 0.1],
    [0.0, 0.1, 0.9],
    [0.5, 0.2, 0.3],
])
SCORES_B = np.array([
    [0.6, 0.3, 0.1],  # distance to a: 0.5 * (0.2 + 0.2 + 0.0) = 0.2
    [0.5, 0.4, 0.1],  # 0.5 * (0.3 + 0.3 + 0.0) = 0.3
    [0.1, 0.8, 0.1],  # 0.0
    [0.1, 0.2, 0.7],  # 0.5 * (0.2 + 0.4 + 0.6) = 0.6
    [0.0, 0.0, 1.0],  # 0.5 * (0.0 + 0.1 + 0.1) = 0.1
    [0.1, 0.1, 0.8],  # 0.5 * (0.4 + 0.1 + 0.5) = 0.5
])
ASPECT = np.array([0.5, 1.0, 1.0, 1.3, 2.5, math.nan])
BRIGHTNESS = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
WIDTH = np.array([100.0, 100.0, 200.0, 200.0, 300.0, 400.0])
HEIGHT = np.array([200.0, 100.0, 200.0, 150.0, 120.0, 100.0])


def table(label_names: list[str] | None = None) -> ExampleTable:
    names = label_names if label_names is not None else [NAMES[i] for i in LABELS]
    features = {"aspect_ratio": ASPECT, "brightness": BRIGHTNESS, "width": WIDTH, "height": HEIGHT}
    return ExampleTable([b""] * 6, LABELS, names, features)


def runs() -> list[ModelRun]:
    return [ModelRun("a", "m", "h:1", 2, SCORES_A), ModelRun("b", "m", "h:1", 1, SCORES_B)]


def slices(report: dict, family: str) -> dict[str, tuple[int, dict, float | None]]:
    return {r["slice"]: (r["n"], r["correct"], r.get("agreement")) for r in report["slices"][family]["slices"]}


def test_overall_and_label_slices() -> None:
    report = compute_report(NAMES, table(), runs(), quantile_bins=2, top_k=3)
    assert report["overall"] == {
        "n": 6, "correct": {"a": 4, "b": 5}, "accuracy": {"a": 4 / 6, "b": 5 / 6}, "agreement": 3 / 6,
        "accuracy_delta": pytest.approx(1 / 6),
    }
    assert slices(report, "label") == {"x": (2, {"a": 1, "b": 2}, 0.5), "y": (2, {"a": 2, "b": 1}, 0.5),
                                       "z": (2, {"a": 1, "b": 2}, 0.5)}
    # a predicts x on examples 0 and 5 (a right on 0; b on both), y on 1, 2, 3, z on 4
    assert slices(report, "predicted_a") == {"x": (2, {"a": 1, "b": 2}, 0.5), "y": (3, {"a": 2, "b": 2}, 1 / 3),
                                             "z": (1, {"a": 1, "b": 1}, 1.0)}
    assert slices(report, "predicted_b") == {"x": (2, {"a": 1, "b": 2}, 0.5), "y": (1, {"a": 1, "b": 1}, 1.0),
                                             "z": (3, {"a": 2, "b": 2}, 1 / 3)}
    assert report["confusion_matrices"] == {"a": [[1, 1, 0], [0, 2, 0], [1, 0, 1]],
                                            "b": [[2, 0, 0], [0, 1, 1], [0, 0, 2]]}
    assert report["examples"] == {"count": 6, "label_name_mismatches": 0}
    assert [m["title"] for m in report["models"]] == ["m v2", "m v1"]


def test_binned_features() -> None:
    report = compute_report(NAMES, table(), runs(), quantile_bins=2)
    aspect = report["slices"]["aspect_ratio"]
    # 0.5 tall; 1.0, 1.0 square; 1.3 in 1.11-1.5; 2.5 wide; NaN unsliced
    assert slices(report, "aspect_ratio") == {
        "tall <0.75": (1, {"a": 1, "b": 1}, 1.0), "square 0.9-1.11": (2, {"a": 1, "b": 2}, 0.5),
        "1.11-1.5": (1, {"a": 1, "b": 0}, 0.0), "wide >=2": (1, {"a": 1, "b": 1}, 1.0)}
    assert aspect["unsliced"] == 1 and aspect["edges"][-1] is None  # infinity is not JSON
    # brightness median 0.35: [0.1, 0.35) holds examples 0-2, [0.35, 0.6] examples 3-5
    assert report["slices"]["brightness"]["edges"] == pytest.approx([0.1, 0.35, 0.6])
    assert slices(report, "brightness") == {"[0.100, 0.350)": (3, {"a": 2, "b": 3}, 2 / 3),
                                            "[0.350, 0.600]": (3, {"a": 2, "b": 2}, 1 / 3)}
    # size = longest side: 200, 100, 200, 200, 300, 400 -> median 200; [100, 200) only example 1
    assert slices(report, "size") == {"[100, 200)": (1, {"a": 0, "b": 1}, 0.0),
                                      "[200, 400]": (5, {"a": 4, "b": 4}, 0.6)}
    json.dumps(report, allow_nan=False)  # strictly JSON


def test_disagreements_and_confident_mistakes() -> None:
    report = compute_report(NAMES, table(), runs(), top_k=3)
    d = report["disagreements"]
    assert [r["index"] for r in d["top"]] == [3, 5, 1]
    assert [r["distance"] for r in d["top"]] == pytest.approx([0.6, 0.5, 0.3])
    assert d["top"][0]["predicted"] == {"a": "y", "b": "z"} and d["top"][0]["label"] == "y"
    assert d["top"][0]["score_of_label"] == pytest.approx({"a": 0.6, "b": 0.2})
    assert d["mean_distance"] == pytest.approx((0.2 + 0.3 + 0.0 + 0.6 + 0.1 + 0.5) / 6)
    assert (d["different_predictions"], d["only_a_correct"], d["only_b_correct"]) == (3, 1, 2)
    # a is wrong on 1 (says y at 0.7) and 5 (says x at 0.5); b only on 3 (z at 0.7)
    assert [(r["index"], r["predicted"]) for r in report["confident_mistakes"]["a"]] == [(1, "y"), (5, "x")]
    assert report["confident_mistakes"]["a"][0]["confidence"] == pytest.approx(0.7)
    assert [r["index"] for r in report["confident_mistakes"]["b"]] == [3]


def test_one_model_report_has_no_comparison() -> None:
    report = compute_report(NAMES, table(), runs()[:1])
    assert "disagreements" not in report and "agreement" not in report["overall"]
    assert set(report["slices"]) == {"label", "predicted_a", "aspect_ratio", "brightness", "size"}
    markdown = render_markdown(report)
    assert "| x | 2 | 50.0% |" in markdown and "Largest disagreements" not in markdown


def test_markdown_tables() -> None:
    report = compute_report(NAMES, table(["x", "oops", "y", "y", "z", "z"]), runs(), top_k=2)
    markdown = render_markdown(report, {"label": "accuracy_label.png"})
    assert "- accuracy of m v2: 66.7% (4/6)" in markdown
    assert "| y | 2 | 100.0% | 50.0% | -50.0 pp | 50.0% |" in markdown
    assert "![accuracy by true label](accuracy_label.png)" in markdown
    assert "| 3 | y | 0.600 | y | z | 0.600 | 0.200 |" in markdown
    assert "| z | 1 | 0 | 1 |" in markdown  # a's confusion row of z
    assert "**1 examples' label_name differ" in markdown


def test_compute_report_refuses_inconsistent_inputs() -> None:
    with pytest.raises(ReportError, match="label 3, outside the model's 3 classes"):
        compute_report(NAMES, ExampleTable([b""] * 6, np.array([0, 1, 2, 3, 0, 1]), [""] * 6), runs())
    with pytest.raises(ReportError, match="scores of shape"):
        compute_report(NAMES, table(), [ModelRun("a", "m", "h", None, SCORES_A[:, :2])])
    with pytest.raises(ReportError, match="one or two models"):
        compute_report(NAMES, table(), [*runs(), ModelRun("c", "m", "h", 3, SCORES_A)])
    with pytest.raises(ReportError, match="model keys"):
        compute_report(NAMES, table(), runs()[::-1])


def test_scores_matrix_orders_columns_by_class_names() -> None:
    results = [[("y", 0.2), ("x", 0.8)], [("x", 0.4), ("y", 0.6)]]
    names, matrix = scores_matrix(results)
    assert names == ["y", "x"] and matrix.tolist() == [[0.2, 0.8], [0.6, 0.4]]
    names, matrix = scores_matrix(results, ["x", "y"])
    assert matrix.tolist() == [[0.8, 0.2], [0.4, 0.6]]
    with pytest.raises(ReportError, match="expected \\['x', 'y', 'z'\\]"):
        scores_matrix(results, ["x", "y", "z"])
    with pytest.raises(ReportError, match="no classifications"):
        scores_matrix([])


def test_aspect_bins_are_the_studys() -> None:
    from studies.chapter import ASPECT_BINS

    assert ASPECT_RATIO_BINS == tuple((b.label, b.low, b.high) for b in ASPECT_BINS)


def test_read_example_table(tmp_path: Path) -> None:
    examples = [image_example(1, "y", aspect=2.0, brightness=0.25, size=80), {"image/encoded": b"i", "label": 0}]
    path = write_layout(tmp_path, "m", None, (), examples)
    got = read_example_table(path)
    assert got.labels.tolist() == [1, 0] and got.label_names == ["y", ""]
    assert got.features["aspect_ratio"][0] == pytest.approx(2.0) and math.isnan(got.features["aspect_ratio"][1])
    assert got.features["width"].tolist()[0] == 80 and got.features["height"].tolist()[0] == 40
    assert len(read_example_table(path, max_examples=1)) == 1

    no_label = write_layout(tmp_path, "n", None, (), [{"image/encoded": b"i"}])
    with pytest.raises(ReportError, match="no 'label' feature"):
        read_example_table(no_label)
    text_label = write_layout(tmp_path, "t", None, (), [{"image/encoded": b"i", "label": "bird"}])
    with pytest.raises(ReportError, match="'label' must be a number"):
        read_example_table(text_label)
    with pytest.raises(ReportError, match="no examples TFRecord"):
        read_example_table(tmp_path / "missing")


def test_report_config_validation(tmp_path: Path) -> None:
    base = {"serving_address": "h:1", "model": "m", "examples": tmp_path / "e", "out": tmp_path / "o"}
    assert not ReportConfig(**base).has_compare
    config = ReportConfig(**base, compare_version=2)
    assert config.compare_spec() == ("h:1", "m", 2)
    with pytest.raises(ReportError, match="the model itself"):
        ReportConfig(**base, compare_address="h:1")
    for bad in ({"model_version": 0}, {"batch_size": 0}, {"model": " "}, {"timeout_s": math.inf},
                {"compare_model": ""}, {"top_k": -1}):
        with pytest.raises(ReportError):
            ReportConfig(**{**base, **bad})


@pytest.mark.slow
def test_make_report_batches_calls_and_writes_everything(tmp_path: Path) -> None:
    examples = [image_example(i % 3, NAMES[i % 3], aspect=0.5 + 0.25 * i, brightness=i / 10) for i in range(7)]
    path = write_layout(tmp_path, "m", NAMES, (1,), examples)
    serving = FakeServing({"m": FakeModel(NAMES, versions=(1, 2), scores=SCORES_A.tolist()),
                           "n": FakeModel(NAMES[::-1], versions=(4,), scores=SCORES_B.tolist())})
    out = tmp_path / "out"
    report = make_report(ReportConfig("h:1", "m", path, out, compare_model="n", batch_size=3),
                         client_factory=serving)
    assert [c for c in serving.calls if c[1] == "m"] == [("classify", "m", None, 3), ("classify", "m", None, 3),
                                                         ("classify", "m", None, 1)]
    assert [(m["name"], m["version"]) for m in report["models"]] == [("m", 2), ("n", 4)]
    # the fake scores example i of each batch with row i; n lists its classes in the other order, and its scores
    # are mapped back onto m's class names
    rows = [0, 1, 2, 0, 1, 2, 0]
    runs_ = [ModelRun("a", "m", "h:1", 2, SCORES_A[rows]), ModelRun("b", "n", "h:1", 4, SCORES_B[rows][:, ::-1])]
    table_ = read_example_table(path)
    direct = compute_report(NAMES, table_, runs_)
    assert report["overall"] == direct["overall"] and report["slices"] == direct["slices"]
    assert json.loads((out / "report.json").read_text()) == report
    assert (out / "report.md").read_text().startswith("# Slicing report")
    assert sorted(p.name for p in out.glob("*.png")) == sorted(report["charts"].values())
    assert len(report["charts"]) == 9
    assert serving.closed == 2
