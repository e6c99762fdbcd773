"""The slicing and comparison report: what the What-If Tool shows, as files, without a notebook.

:func:`make_report` reads the examples TFRecord, runs one or two served models over it through Classify, and writes
``report.json`` (every number), ``report.md`` and PNG charts into a directory. :func:`compute_report` is the maths
alone (numpy in, a JSON-ready dict out): overall and per-slice accuracy, confusion matrices, the examples on which
the two models disagree most, and each model's most confident mistakes. Slices: the true label, each model's predicted
label, and binned features of the image -- aspect ratio (the bins of ``glimpse study aspect-ratio``), brightness and
size (quantile bins). Nothing here imports TensorFlow: examples are read by ``glimpse_wire`` and the charts are drawn
by matplotlib's Agg canvas (no pyplot, no global backend).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glimpse_wire.client import ClientConfig, ServingClient
from glimpse_wire.contract import EXAMPLE_LABEL_KEY, EXAMPLE_LABEL_NAME_KEY, SIG_CLASSIFY
from glimpse_wire.errors import ServingError
from glimpse_wire.examples import TFRecordError, parse_example, read_tfrecord

__all__ = [
    "ASPECT_RATIO_BINS",
    "FEATURE_KEYS",
    "ReportError",
    "ReportConfig",
    "ModelRun",
    "ExampleTable",
    "read_example_table",
    "scores_matrix",
    "classify_all",
    "compute_report",
    "render_markdown",
    "write_charts",
    "make_report",
]

# (label, low inclusive, high exclusive): the bins of the chapter's aspect-ratio study (studies.chapter.ASPECT_BINS).
ASPECT_RATIO_BINS: tuple[tuple[str, float, float], ...] = (
    ("tall <0.75", 0.0, 0.75),
    ("0.75-0.9", 0.75, 0.9),
    ("square 0.9-1.11", 0.9, 1.11),
    ("1.11-1.5", 1.11, 1.5),
    ("1.5-2", 1.5, 2.0),
    ("wide >=2", 2.0, math.inf),
)
# tf.Example features the exporter writes for slicing (training.export.example_features).
FEATURE_KEYS: tuple[str, ...] = ("aspect_ratio", "brightness", "width", "height")
_MODEL_KEYS = ("a", "b")


class ReportError(ValueError):
    """The examples, the arguments or the served models cannot make a report; the message says why."""


@dataclass(frozen=True)
class ReportConfig:
    """What ``glimpse report`` runs. ``compare_model``/``compare_version``/``compare_address`` turn on the second
    model (name defaults to ``model``, address to ``serving_address``, version to the latest). ``quantile_bins``:
    how many equal-count bins brightness and size get. ``top_k``: rows of the disagreement and mistake tables."""

    serving_address: str
    model: str
    examples: Path
    out: Path
    model_version: int | None = None
    signature: str = SIG_CLASSIFY
    compare_model: str | None = None
    compare_version: int | None = None
    compare_address: str | None = None
    max_examples: int = 10_000
    batch_size: int = 32
    top_k: int = 10
    quantile_bins: int = 4
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("serving_address", "model", "signature"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ReportError(f"{name} must be a non-empty string, got {value!r}")
        for name in ("compare_model", "compare_address"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ReportError(f"{name} must be a non-empty string when given, got {value!r}")
        for name in ("model_version", "compare_version"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ReportError(f"{name} must be a positive integer, got {value!r}")
        for name, low in (("max_examples", 1), ("batch_size", 1), ("top_k", 0), ("quantile_bins", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ReportError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) or not (
            0 < self.timeout_s < math.inf
        ):
            raise ReportError(f"timeout_s must be a positive number, got {self.timeout_s!r}")
        object.__setattr__(self, "examples", Path(self.examples))
        object.__setattr__(self, "out", Path(self.out))
        if self.has_compare and self.compare_spec() == self.model_spec():
            raise ReportError("the comparison model is the model itself; give another name, version or address")

    @property
    def has_compare(self) -> bool:
        return not (self.compare_model is None and self.compare_version is None and self.compare_address is None)

    def model_spec(self) -> tuple[str, str, int | None]:
        return self.serving_address, self.model, self.model_version

    def compare_spec(self) -> tuple[str, str, int | None]:
        return (self.compare_address or self.serving_address, self.compare_model or self.model, self.compare_version)


@dataclass(frozen=True)
class ModelRun:
    """One model's scores over the examples: ``scores`` [N, C] in the order of the report's class names;
    ``version``: the version that answered (None when the server did not say)."""

    key: str
    name: str
    address: str
    version: int | None
    scores: np.ndarray

    @property
    def title(self) -> str:
        return self.name if self.version is None else f"{self.name} v{self.version}"


@dataclass(frozen=True)
class ExampleTable:
    """The examples as columns: serialized records, true labels, label names and the slicing features."""

    records: list[bytes]
    labels: np.ndarray
    label_names: list[str]
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)


# ----------------------------------------------------------------------------------------------------------------
# Reading the examples


def _single(values: Sequence[Any], key: str, index: int, kind: type | tuple[type, ...]) -> Any:
    if len(values) != 1:
        raise ReportError(f"example {index}: feature {key!r} must hold one value, got {len(values)}")
    value = values[0]
    if not isinstance(value, kind) or isinstance(value, bool):
        wanted = "bytes" if kind is bytes else "a number"
        raise ReportError(f"example {index}: feature {key!r} must be {wanted}, got {type(value).__name__}")
    return value


def read_example_table(path: str | os.PathLike[str], max_examples: int = 10_000) -> ExampleTable:
    """Up to ``max_examples`` examples of the exporter's TFRecord: ``label`` (int64) is required, ``label_name``
    and the slicing features (:data:`FEATURE_KEYS`) are used when present (NaN where an example lacks one)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"no examples TFRecord at {path}")
    with open(path, "rb") as f:
        compression = "GZIP" if f.read(2) == b"\x1f\x8b" else None
    records: list[bytes] = []
    labels: list[int] = []
    names: list[str] = []
    columns: dict[str, list[float]] = {key: [] for key in FEATURE_KEYS}
    try:
        for index, record in enumerate(read_tfrecord(path, compression=compression)):
            if index >= max_examples:
                break
            try:
                features = parse_example(record)
            except ValueError as e:
                raise ReportError(f"{path}: record {index}: {e}") from e
            if EXAMPLE_LABEL_KEY not in features:
                raise ReportError(f"{path}: example {index} has no {EXAMPLE_LABEL_KEY!r} feature (the true class id)")
            labels.append(int(_single(features[EXAMPLE_LABEL_KEY], EXAMPLE_LABEL_KEY, index, int)))
            name = features.get(EXAMPLE_LABEL_NAME_KEY)
            names.append(_single(name, EXAMPLE_LABEL_NAME_KEY, index, bytes).decode("utf-8") if name else "")
            for key in FEATURE_KEYS:
                values = features.get(key)
                columns[key].append(float(_single(values, key, index, (int, float))) if values else math.nan)
            records.append(record)
    except (TFRecordError, OSError, EOFError) as e:
        raise ReportError(f"cannot read {path}: {e}") from e
    if not records:
        raise ReportError(f"{path} holds no examples")
    return ExampleTable(
        records=records,
        labels=np.asarray(labels, dtype=np.int64),
        label_names=names,
        features={key: np.asarray(values, dtype=np.float64) for key, values in columns.items()},
    )


# ----------------------------------------------------------------------------------------------------------------
# Running the models


def scores_matrix(
    results: Sequence[Sequence[tuple[str, float]]], class_names: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Classify results ([(label, score), ...] per example) as class names and a float64 [N, C] score matrix.

    The columns follow ``class_names`` when given, else the labels of the first result in the server's order (the
    contract's classify signature lists every class in class-index order). ReportError when an example's labels are
    not exactly those classes.
    """
    if not results:
        raise ReportError("the model returned no classifications")
    names = list(class_names) if class_names is not None else [label for label, _ in results[0]]
    if len(set(names)) != len(names) or not names:
        raise ReportError(f"class labels must be distinct and non-empty, got {names}")
    column = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(results), len(names)), dtype=np.float64)
    for i, result in enumerate(results):
        labels = [label for label, _ in result]
        if len(labels) != len(names) or set(labels) != set(names):
            raise ReportError(f"example {i}: the model returned classes {labels}, expected {names}")
        for label, score in result:
            matrix[i, column[label]] = score
    return names, matrix


def classify_all(
    client: ServingClient,
    model: str,
    records: Sequence[bytes],
    *,
    version: int | None,
    signature: str,
    batch_size: int,
    timeout_s: float,
) -> tuple[list[list[tuple[str, float]]], int | None]:
    """Classify every record in batches; returns the results and the version that answered."""
    results: list[list[tuple[str, float]]] = []
    answered: int | None = None
    for start in range(0, len(records), batch_size):
        batch = list(records[start : start + batch_size])
        reply = client.classify(model, batch, signature=signature, version=version, timeout_s=timeout_s)
        if len(reply.results) != len(batch):
            raise ReportError(f"{model}: {len(reply.results)} classifications for {len(batch)} examples")
        results.extend(reply.results)
        answered = reply.model.version if reply.model.version is not None else answered
    return results, answered


# ----------------------------------------------------------------------------------------------------------------
# The maths


def _aspect_bins(values: np.ndarray) -> tuple[list[str], np.ndarray, list[float]]:
    index = np.full(values.shape, -1, dtype=np.int64)
    for i, (_, low, high) in enumerate(ASPECT_RATIO_BINS):
        index[(values >= low) & (values < high)] = i
    edges = [low for _, low, _ in ASPECT_RATIO_BINS] + [ASPECT_RATIO_BINS[-1][2]]
    return [label for label, _, _ in ASPECT_RATIO_BINS], index, edges


def _quantile_bins(values: np.ndarray, bins: int, fmt: str) -> tuple[list[str], np.ndarray, list[float]]:
    """Equal-count bins (fewer when values repeat): [low, high) each, the last one closed."""
    index = np.full(values.shape, -1, dtype=np.int64)
    finite = np.isfinite(values)
    if not finite.any():
        return [], index, []
    edges = np.unique(np.quantile(values[finite], np.linspace(0.0, 1.0, bins + 1)))
    if len(edges) == 1:
        index[finite] = 0
        return [f"{edges[0]:{fmt}}"], index, [float(edges[0]), float(edges[0])]
    inner = edges[1:-1]
    index[finite] = np.searchsorted(inner, values[finite], side="right")
    last = len(edges) - 2
    labels = [
        f"[{edges[i]:{fmt}}, {edges[i + 1]:{fmt}}{']' if i == last else ')'}" for i in range(len(edges) - 1)
    ]
    return labels, index, [float(e) for e in edges]


def _stats(mask: np.ndarray, labels: np.ndarray, predictions: Mapping[str, np.ndarray]) -> dict[str, Any]:
    n = int(mask.sum())
    row: dict[str, Any] = {"n": n, "correct": {}, "accuracy": {}}
    for key, predicted in predictions.items():
        correct = int((predicted[mask] == labels[mask]).sum())
        row["correct"][key] = correct
        row["accuracy"][key] = correct / n if n else None
    if len(predictions) == 2:
        a, b = (predictions[k] for k in _MODEL_KEYS)
        agree = int((a[mask] == b[mask]).sum())
        row["agreement"] = agree / n if n else None
        row["accuracy_delta"] = row["accuracy"]["b"] - row["accuracy"]["a"] if n else None
    return row


def _family(
    name: str,
    title: str,
    description: str,
    labels_of_bins: Sequence[str],
    bin_index: np.ndarray,
    labels: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    edges: Sequence[float] | None = None,
) -> dict[str, Any]:
    slices = []
    for i, slice_name in enumerate(labels_of_bins):
        mask = bin_index == i
        if mask.any():
            slices.append({"slice": slice_name, **_stats(mask, labels, predictions)})
    missing = int((bin_index < 0).sum())
    family: dict[str, Any] = {
        "feature": name, "title": title, "description": description, "slices": slices, "unsliced": missing,
    }
    if edges is not None:
        family["edges"] = [e if math.isfinite(e) else None for e in edges]
    return family


def _confusion(labels: np.ndarray, predicted: np.ndarray, classes: int) -> list[list[int]]:
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix.tolist()


def compute_report(
    class_names: Sequence[str],
    table: ExampleTable,
    runs: Sequence[ModelRun],
    *,
    top_k: int = 10,
    quantile_bins: int = 4,
) -> dict[str, Any]:
    """The report's numbers (JSON-ready) for one or two model runs over ``table``.

    Accuracy is the share of examples whose highest-scoring class (first on ties) is the true label. Per slice:
    ``n``, ``correct``/``accuracy`` per model key, and with two models ``agreement`` (same predicted class) and
    ``accuracy_delta`` (b - a). Disagreement of an example = total variation distance between the two models' class
    distributions, 0.5 * sum |p_a - p_b|.
    """
    names = list(class_names)
    classes = len(names)
    if not 1 <= len(runs) <= 2:
        raise ReportError(f"a report compares one or two models, got {len(runs)}")
    if [run.key for run in runs] != list(_MODEL_KEYS[: len(runs)]):
        raise ReportError(f"model keys must be {list(_MODEL_KEYS[: len(runs)])}")
    n = len(table)
    labels = table.labels
    if labels.shape != (n,):
        raise ReportError(f"{labels.shape[0]} labels for {n} examples")
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise ReportError(
            f"example {int(bad[0])} has label {int(labels[bad[0]])}, outside the model's {classes} classes {names}"
        )
    for run in runs:
        if run.scores.shape != (n, classes):
            raise ReportError(f"model {run.title}: scores of shape {run.scores.shape}, expected {(n, classes)}")
    predictions = {run.key: np.argmax(run.scores, axis=1) for run in runs}
    mismatched = sum(1 for i, name in enumerate(table.label_names) if name and name != names[labels[i]])

    def column(key: str) -> np.ndarray:
        return table.features.get(key, np.full(n, math.nan))

    everything = np.ones(n, dtype=bool)
    # (feature, title, description, bin names, bin index per example, bin edges)
    slicings: list[tuple[str, str, str, Sequence[str], np.ndarray, Sequence[float] | None]] = [
        ("label", "true label", "the example's true label", names, labels, None),
    ]
    slicings += [
        (f"predicted_{run.key}", f"label predicted by {run.title}", f"the label {run.title} predicts", names,
         predictions[run.key], None)
        for run in runs
    ]
    slicings.append(
        ("aspect_ratio", "aspect ratio", "width / height of the original image", *_aspect_bins(column("aspect_ratio")))
    )
    slicings.append(
        ("brightness", "brightness", "mean luma in [0, 1], quantile bins",
         *_quantile_bins(column("brightness"), quantile_bins, ".3f"))
    )
    slicings.append(
        ("size", "size", "longest side of the original image in pixels, quantile bins",
         *_quantile_bins(np.fmax(column("width"), column("height")), quantile_bins, ".0f"))
    )
    families = [
        _family(feature, title, description, bins, index, labels, predictions, edges)
        for feature, title, description, bins, index, edges in slicings
    ]

    report: dict[str, Any] = {
        "models": [
            {"key": run.key, "name": run.name, "version": run.version, "address": run.address, "title": run.title}
            for run in runs
        ],
        "class_names": names,
        "examples": {"count": n, "label_name_mismatches": mismatched},
        "overall": _stats(everything, labels, predictions),
        "slices": {family["feature"]: family for family in families},
        "confusion_matrices": {run.key: _confusion(labels, predictions[run.key], classes) for run in runs},
        "confident_mistakes": {run.key: _confident_mistakes(run, labels, names, top_k) for run in runs},
    }
    if len(runs) == 2:
        report["disagreements"] = _disagreements(runs, labels, names, top_k)
    return report


def _confident_mistakes(run: ModelRun, labels: np.ndarray, names: list[str], top_k: int) -> list[dict[str, Any]]:
    predicted = np.argmax(run.scores, axis=1)
    confidence = run.scores[np.arange(len(labels)), predicted]
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:top_k]
    return [
        {
            "index": int(i),
            "label": names[labels[i]],
            "predicted": names[predicted[i]],
            "confidence": float(confidence[i]),
            "score_of_label": float(run.scores[i, labels[i]]),
        }
        for i in order
    ]


def _disagreements(runs: Sequence[ModelRun], labels: np.ndarray, names: list[str], top_k: int) -> dict[str, Any]:
    a, b = runs
    distance = 0.5 * np.abs(a.scores - b.scores).sum(axis=1)
    pred_a, pred_b = np.argmax(a.scores, axis=1), np.argmax(b.scores, axis=1)
    order = np.argsort(-distance, kind="stable")[:top_k]
    return {
        "measure": "total variation distance 0.5 * sum |p_a - p_b|",
        "different_predictions": int((pred_a != pred_b).sum()),
        "only_a_correct": int(((pred_a == labels) & (pred_b != labels)).sum()),
        "only_b_correct": int(((pred_b == labels) & (pred_a != labels)).sum()),
        "mean_distance": float(distance.mean()),
        "top": [
            {
                "index": int(i),
                "label": names[labels[i]],
                "distance": float(distance[i]),
                "predicted": {"a": names[pred_a[i]], "b": names[pred_b[i]]},
                "score_of_label": {"a": float(a.scores[i, labels[i]]), "b": float(b.scores[i, labels[i]])},
            }
            for i in order
        ],
    }


# ----------------------------------------------------------------------------------------------------------------
# Markdown and charts


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}%"


def render_markdown(report: Mapping[str, Any], charts: Mapping[str, str] | None = None) -> str:
    """``report.md``: models, overall accuracy, one table per slice family, confusion matrices, disagreements."""
    charts = dict(charts or {})
    models = report["models"]
    keys = [m["key"] for m in models]
    titles = {m["key"]: m["title"] for m in models}
    compare = len(models) == 2
    lines = ["# Slicing report", ""]
    lines += ["| model | name | version | address |", "|---|---|---|---|"]
    lines += [f"| {m['key']} | {m['name']} | {m['version'] or 'latest'} | {m['address']} |" for m in models]
    examples = report["examples"]
    lines += ["", f"{examples['count']} examples; classes: {', '.join(report['class_names'])}."]
    if examples.get("label_name_mismatches"):
        count = examples["label_name_mismatches"]
        lines.append(f"**{count} examples' label_name differ from the model's class name.**")
    overall = report["overall"]
    lines += ["", "## Overall", ""]
    lines += [f"- accuracy of {titles[k]}: {_pct(overall['accuracy'][k])} ({overall['correct'][k]}/{overall['n']})"
              for k in keys]
    if compare:
        lines.append(f"- agreement between the two: {_pct(overall['agreement'])}")
    header = "| slice | n | " + " | ".join(f"accuracy {titles[k]}" for k in keys)
    header += " | delta (b - a) | agreement |" if compare else " |"
    rule = "|---|---:|" + "---:|" * len(keys) + ("---:|---:|" if compare else "")
    for name, family in report["slices"].items():
        lines += ["", f"## By {family['title']}", "", f"Slices by {family['description']}."]
        if family.get("unsliced"):
            lines.append(f"{family['unsliced']} examples have no value for this feature.")
        lines += ["", header, rule]
        for row in family["slices"]:
            cells = [row["slice"], str(row["n"]), *(_pct(row["accuracy"][k]) for k in keys)]
            if compare:
                delta = row["accuracy_delta"]
                cells += ["n/a" if delta is None else f"{100.0 * delta:+.1f} pp", _pct(row["agreement"])]
            lines.append("| " + " | ".join(cells) + " |")
        if name in charts:
            lines += ["", f"![accuracy by {family['title']}]({charts[name]})"]
    names = report["class_names"]
    lines += ["", "## Confusion matrices", "", "Rows: true label; columns: predicted label."]
    for key in keys:
        matrix = report["confusion_matrices"][key]
        lines += ["", f"### {titles[key]}", "", "| true \\ predicted | " + " | ".join(names) + " |",
                  "|---|" + "---:|" * len(names)]
        lines += ["| " + " | ".join([names[i], *map(str, row)]) + " |" for i, row in enumerate(matrix)]
        if f"confusion_{key}" in charts:
            lines += ["", f"![confusion matrix of {titles[key]}]({charts[f'confusion_{key}']})"]
    if compare:
        d = report["disagreements"]
        lines += ["", "## Largest disagreements", "",
                  f"{d['different_predictions']} examples get different predictions; only a is right on "
                  f"{d['only_a_correct']}, only b on {d['only_b_correct']}. Mean {d['measure']}: "
                  f"{d['mean_distance']:.3f}.", "",
                  "| example | label | distance | predicted a | predicted b | score of label a | score of label b |",
                  "|---:|---|---:|---|---|---:|---:|"]
        lines += [
            f"| {r['index']} | {r['label']} | {r['distance']:.3f} | {r['predicted']['a']} | {r['predicted']['b']} | "
            f"{r['score_of_label']['a']:.3f} | {r['score_of_label']['b']:.3f} |"
            for r in d["top"]
        ]
        if "disagreement" in charts:
            lines += ["", f"![disagreement]({charts['disagreement']})"]
    lines += ["", "## Most confident mistakes"]
    for key in keys:
        rows = report["confident_mistakes"][key]
        lines += ["", f"### {titles[key]}", ""]
        if not rows:
            lines.append("No mistakes.")
            continue
        lines += ["| example | label | predicted | confidence | score of label |", "|---:|---|---|---:|---:|"]
        lines += [f"| {r['index']} | {r['label']} | {r['predicted']} | {r['confidence']:.3f} | "
                  f"{r['score_of_label']:.3f} |" for r in rows]
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _accuracy_chart(path: Path, family: Mapping[str, Any], titles: Mapping[str, str]) -> None:
    slices = family["slices"]
    keys = list(titles)
    figure, axes = _figure(max(5.0, 1.1 * len(slices) + 2.0), 3.6)
    positions = np.arange(len(slices))
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        values = [0.0 if s["accuracy"][key] is None else s["accuracy"][key] for s in slices]
        bars = axes.bar(positions + (j - (len(keys) - 1) / 2) * width, values, width, label=titles[key])
        if j == 0:
            for bar, s in zip(bars, slices, strict=True):
                axes.annotate(f"n={s['n']}", (bar.get_x(), 1.01), fontsize=7, annotation_clip=False)
    axes.set_xticks(positions, [s["slice"] for s in slices], rotation=20, ha="right", fontsize=8)
    axes.set_ylim(0, 1.08)
    axes.set_ylabel("accuracy")
    axes.set_title(f"Accuracy by {family['title']}", fontsize=10)
    if len(keys) > 1:
        axes.legend(fontsize=8, loc="lower right")
    figure.savefig(path, format="png")


def _confusion_chart(path: Path, matrix: Sequence[Sequence[int]], names: Sequence[str], title: str) -> None:
    data = np.asarray(matrix, dtype=np.float64)
    figure, axes = _figure(2.4 + 0.55 * len(names), 1.6 + 0.5 * len(names))
    image = axes.imshow(data, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    peak = data.max() if data.size else 0.0
    for (i, j), value in np.ndenumerate(data):
        axes.text(j, i, str(int(value)), ha="center", va="center", fontsize=8,
                  color="white" if peak and value > 0.6 * peak else "black")
    axes.set_title(f"Confusion matrix: {title}", fontsize=10)
    figure.savefig(path, format="png")


def _disagreement_chart(path: Path, runs: Sequence[ModelRun]) -> None:
    a, b = runs
    distance = 0.5 * np.abs(a.scores - b.scores).sum(axis=1)
    figure, axes = _figure(5.0, 3.2)
    axes.hist(distance, bins=20, range=(0.0, 1.0), color="tab:purple")
    axes.set_xlabel("total variation distance between the two models")
    axes.set_ylabel("examples")
    axes.set_title(f"Disagreement: {a.title} vs {b.title}", fontsize=10)
    figure.savefig(path, format="png")


def write_charts(out: Path, report: Mapping[str, Any], runs: Sequence[ModelRun]) -> dict[str, str]:
    """PNG charts in ``out``: accuracy per slice family, confusion matrices, the disagreement histogram. Returns
    chart key -> file name (relative to ``out``)."""
    titles = {m["key"]: m["title"] for m in report["models"]}
    charts: dict[str, str] = {}
    for name, family in report["slices"].items():
        if family["slices"]:
            file = f"accuracy_{name}.png"
            _accuracy_chart(out / file, family, titles)
            charts[name] = file
    for key, matrix in report["confusion_matrices"].items():
        file = f"confusion_{key}.png"
        _confusion_chart(out / file, matrix, report["class_names"], titles[key])
        charts[f"confusion_{key}"] = file
    if len(runs) == 2:
        _disagreement_chart(out / "disagreement.png", runs)
        charts["disagreement"] = "disagreement.png"
    return charts


# ----------------------------------------------------------------------------------------------------------------
# Everything


def make_report(
    config: ReportConfig, *, client_factory: Callable[[str], ServingClient] | None = None
) -> dict[str, Any]:
    """Run the model(s) over the examples and write ``report.json``, ``report.md`` and the charts into
    ``config.out``; returns the report (as written to report.json)."""
    if client_factory is None:

        def client_factory(address: str) -> ServingClient:
            return ServingClient(ClientConfig(address=address, timeout_s=config.timeout_s))

    table = read_example_table(config.examples, config.max_examples)
    specs = [("a", config.model_spec())]
    if config.has_compare:
        specs.append(("b", config.compare_spec()))
    runs: list[ModelRun] = []
    class_names: list[str] | None = None
    for key, (address, name, version) in specs:
        client = client_factory(address)
        try:
            results, answered = classify_all(
                client, name, table.records, version=version, signature=config.signature,
                batch_size=config.batch_size, timeout_s=config.timeout_s,
            )
        except ServingError as e:
            where = f"{name} ({'latest' if version is None else f'version {version}'}) at {address}"
            raise ReportError(f"{where}: {e}") from e
        finally:
            client.close()
        class_names, scores = scores_matrix(results, class_names)
        runs.append(ModelRun(key, name, address, answered if answered is not None else version, scores))
    assert class_names is not None
    report = compute_report(class_names, table, runs, top_k=config.top_k, quantile_bins=config.quantile_bins)
    report["examples"]["path"] = str(config.examples.resolve())
    report["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    config.out.mkdir(parents=True, exist_ok=True)
    charts = write_charts(config.out, report, runs)
    report["charts"] = charts
    (config.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (config.out / "report.md").write_text(render_markdown(report, charts), encoding="utf-8")
    return report
