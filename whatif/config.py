"""What-If Tool configs for models served by TF Serving or ``glimpse serve``.

:func:`build_config` returns witwidget's ``WitConfigBuilder`` for a Glimpse model: classification, the examples of
the exporter's TFRecord, the label vocab of the served model, and optionally a second model or version to compare.
It is two steps, each usable alone: :func:`resolve_settings` checks the served signatures (GetModelMetadata) and
finds the label vocab, giving a frozen :class:`WitSettings`; :func:`builder_from_settings` turns that into the builder.

How WIT calls the model (witwidget 1.8.1, ``_utils/platform_utils.call_servo``):

- **Classify** (default): one ``ClassificationRequest`` with all examples, ``model_spec.signature_name`` set to the
  configured signature. An empty signature means ``serving_default``, which in the contract is a Predict signature of
  image bytes, so the config always names :data:`~glimpse_wire.contract.SIG_CLASSIFY`.
- **Predict** (``use_predict=True``): a ``PredictRequest`` whose single input (``predict_input_tensor``) is a
  DT_STRING tensor of the *serialized tf.Examples*, and whose output ``predict_output_tensor`` is read from
  ``float_val`` as a [B, C] matrix (labels become "0".."C-1", named through the label vocab). So the signature must
  take serialized tf.Examples, not image bytes: ``serving_default`` and ``predict_pixels`` cannot serve WIT. The
  contract's ``classification`` signature qualifies, since TF Serving's Predict runs classify signatures too
  (``predict_util.cc`` accepts predict, classify and regress method names): input ``inputs``, output ``scores``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glimpse_wire.client import ServingClient
from glimpse_wire.contract import (
    CLASSIFY_METHOD_NAME,
    EXAMPLE_IMAGE_KEY,
    EXAMPLE_LABEL_KEY,
    IN_EXAMPLES,
    IN_IMAGE_BYTES,
    LABELS_ASSET,
    OUT_CLASSES,
    OUT_PROBABILITIES,
    OUT_SCORES,
    PREDICT_METHOD_NAME,
    SIG_CLASSIFY,
)
from glimpse_wire.errors import ServingError
from glimpse_wire.examples import TFRecordError, read_tfrecord
from whatif import compat

if TYPE_CHECKING:  # pragma: no cover
    from witwidget.notebook.visualization import WitConfigBuilder

    from glimpse_wire.client import ModelMetadata

__all__ = [
    "MODEL_TYPE",
    "DEFAULT_MAX_EXAMPLES",
    "WitConfigError",
    "ModelTarget",
    "WitSettings",
    "build_config",
    "resolve_settings",
    "builder_from_settings",
    "load_examples",
    "read_serialized_examples",
    "local_label_vocab",
    "tensorboard_settings",
]

MODEL_TYPE = "classification"
DEFAULT_MAX_EXAMPLES = 1000
_REGRESS_METHOD_NAME = "tensorflow/serving/regress"
_METHODS_PREDICT_RUNS = (PREDICT_METHOD_NAME, CLASSIFY_METHOD_NAME, _REGRESS_METHOD_NAME)


class WitConfigError(ValueError):
    """The arguments, the examples or the served model cannot make a What-If Tool config; the message says why."""


@dataclass(frozen=True)
class ModelTarget:
    """One model WIT calls: gRPC address, model name, version (None = the latest the server has) and signature."""

    address: str
    name: str
    version: int | None
    signature: str

    def describe(self) -> str:
        version = "latest" if self.version is None else f"version {self.version}"
        return f"{self.name} ({version}, signature {self.signature!r}) at {self.address}"


@dataclass(frozen=True)
class WitSettings:
    """Everything a WIT config holds besides the examples themselves.

    ``served_version``/``compare_served_version``: the versions that answered GetModelMetadata (None when the server
    was not asked). ``label_vocab_path``: a local ``labels.txt`` of the model, when one was found (TensorBoard's WIT
    plugin reads the vocab from such a file).
    """

    model: ModelTarget
    examples_path: str
    max_examples: int = DEFAULT_MAX_EXAMPLES
    compare: ModelTarget | None = None
    label_vocab: tuple[str, ...] = ()
    label_vocab_path: str | None = None
    use_predict: bool = False
    predict_input_tensor: str | None = None
    predict_output_tensor: str | None = None
    target_feature: str = EXAMPLE_LABEL_KEY
    served_version: int | None = None
    compare_served_version: int | None = None


# ----------------------------------------------------------------------------------------------------------------
# Examples


def read_serialized_examples(path: str | os.PathLike[str], max_examples: int) -> list[bytes]:
    """Up to ``max_examples`` serialized tf.Examples of a TFRecord file (GZIP detected), without TensorFlow."""
    path = Path(path)
    if not path.is_file():
        raise WitConfigError(
            f"no examples TFRecord at {path} (the exporter writes <model_base_path>/examples/test.tfrecord)"
        )
    with open(path, "rb") as f:
        compression = "GZIP" if f.read(2) == b"\x1f\x8b" else None
    records: list[bytes] = []
    try:
        for record in read_tfrecord(path, compression=compression):
            records.append(record)
            if len(records) >= max_examples:
                break
    except (TFRecordError, OSError, EOFError) as e:
        raise WitConfigError(f"cannot read the examples TFRecord {path}: {e}") from e
    if not records:
        raise WitConfigError(f"{path} holds no examples")
    return records


def load_examples(path: str | os.PathLike[str], max_examples: int = DEFAULT_MAX_EXAMPLES) -> list[Any]:
    """Up to ``max_examples`` ``tf.train.Example`` protos of a TFRecord (WIT needs TensorFlow's own class)."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    _check_max_examples(max_examples)
    examples = []
    for i, record in enumerate(read_serialized_examples(path, max_examples)):
        try:
            example = tf.train.Example.FromString(record)
        except DecodeError as e:
            raise WitConfigError(f"{path}: record {i} is not a serialized tf.Example: {e}") from e
        if EXAMPLE_IMAGE_KEY not in example.features.feature:
            raise WitConfigError(f"{path}: example {i} has no {EXAMPLE_IMAGE_KEY!r} feature (the model reads it)")
        examples.append(example)
    return examples


# ----------------------------------------------------------------------------------------------------------------
# Label vocab


def local_label_vocab(
    examples_path: str | os.PathLike[str], version: int | None, model_name: str | None = None
) -> tuple[list[str], Path] | None:
    """The labels of the model whose exporter wrote ``examples_path``, read from its version directory.

    The exporter's layout is ``<model_base_path>/examples/test.tfrecord`` next to ``<model_base_path>/<version>/``;
    ``version`` None means the largest version there. ``model_name``: only when the model base directory has that
    name (TF Serving's ``--model_base_path`` ends in the model's name). None when that layout or file is not there.
    """
    examples_dir = Path(examples_path).resolve().parent
    if examples_dir.name != "examples":
        return None
    base = examples_dir.parent
    if model_name is not None and base.name != model_name:
        return None
    # Version directories as TF Serving reads them: the name parsed as an integer (00000123 is version 123), the
    # directory kept as it was found.
    dirs = {int(p.name): p for p in base.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit()}
    if not dirs:
        return None
    if version is None:
        version = max(dirs)
    if version not in dirs:
        return None
    labels_path = dirs[version] / LABELS_ASSET
    if not labels_path.is_file():
        return None
    labels = [line.strip() for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return (labels, labels_path) if labels else None


def _served_vocab(client: ServingClient, target: ModelTarget, example: bytes) -> list[str]:
    """The class names in class-index order, from one Classify call (the contract tiles them into ``classes``)."""
    result = client.classify(target.name, [example], signature=SIG_CLASSIFY, version=target.version)
    if not result.results or not result.results[0]:
        raise WitConfigError(f"{target.describe()}: Classify returned no classes to read the label vocab from")
    return [label for label, _ in result.results[0]]


# ----------------------------------------------------------------------------------------------------------------
# Checking the served signature


def _check_signature(metadata: ModelMetadata, target: ModelTarget, use_predict: bool) -> tuple[str | None, str | None]:
    """Raise WitConfigError unless WIT can call ``target``'s signature; returns (predict input, predict output)."""
    signature = metadata.signatures.get(target.signature)
    if signature is None:
        known = ", ".join(sorted(metadata.signatures)) or "(none)"
        raise WitConfigError(f"{target.describe()}: no signature {target.signature!r}; the model has {known}")
    if not use_predict:
        if signature.method_name != CLASSIFY_METHOD_NAME:
            raise WitConfigError(
                f"{target.describe()}: WIT's Classify call needs a classify signature, {target.signature!r} is "
                f"{signature.method_name!r}; use {SIG_CLASSIFY!r} or use_predict=True"
            )
        if set(signature.inputs) != {IN_EXAMPLES} or not ({OUT_CLASSES, OUT_SCORES} & set(signature.outputs)):
            raise WitConfigError(
                f"{target.describe()}: a classify signature takes {IN_EXAMPLES!r} and gives {OUT_CLASSES!r}/"
                f"{OUT_SCORES!r}; {target.signature!r} has {sorted(signature.inputs)} -> {sorted(signature.outputs)}"
            )
        return None, None
    if signature.method_name not in _METHODS_PREDICT_RUNS:
        raise WitConfigError(f"{target.describe()}: Predict cannot run a {signature.method_name!r} signature")
    if len(signature.inputs) != 1:
        raise WitConfigError(
            f"{target.describe()}: WIT's Predict call sends one tensor of serialized tf.Examples, but "
            f"{target.signature!r} takes {sorted(signature.inputs)}"
        )
    (input_alias, input_spec), = signature.inputs.items()
    if input_spec.dtype != "DT_STRING":
        raise WitConfigError(
            f"{target.describe()}: WIT's Predict input is serialized tf.Examples (DT_STRING); {input_alias!r} is "
            f"{input_spec.dtype}"
        )
    if input_alias == IN_IMAGE_BYTES:
        raise WitConfigError(
            f"{target.describe()}: {target.signature!r} takes encoded images ({IN_IMAGE_BYTES!r}), but WIT's Predict "
            f"call sends serialized tf.Examples; use the {SIG_CLASSIFY!r} signature (Predict runs it too)"
        )
    output_alias = next((a for a in (OUT_SCORES, OUT_PROBABILITIES) if a in signature.outputs), None)
    if output_alias is None:
        raise WitConfigError(
            f"{target.describe()}: WIT reads class scores from a float [B, C] output ({OUT_SCORES!r} or "
            f"{OUT_PROBABILITIES!r}); {target.signature!r} gives {sorted(signature.outputs)}"
        )
    output_spec = signature.outputs[output_alias]
    if output_spec.dtype != "DT_FLOAT" or (output_spec.shape is not None and len(output_spec.shape) != 2):
        raise WitConfigError(
            f"{target.describe()}: {output_alias!r} must be DT_FLOAT [B, C], "
            f"got {output_spec.dtype} {output_spec.shape}"
        )
    return input_alias, output_alias


# ----------------------------------------------------------------------------------------------------------------
# Settings


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise WitConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def _check_version(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WitConfigError(f"{name} must be a positive integer version, got {value!r}")
    return value


def _check_max_examples(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WitConfigError(f"max_examples must be a positive integer, got {value!r}")
    return value


def _targets(
    serving_address: str,
    model_name: str,
    model_version: Any,
    signature: str | None,
    compare_model_name: str | None,
    compare_model_version: Any,
    compare_address: str | None,
) -> tuple[ModelTarget, ModelTarget | None]:
    address = _check_text("serving_address", serving_address)
    name = _check_text("model_name", model_name)
    signature = SIG_CLASSIFY if signature is None else _check_text("signature", signature)
    model = ModelTarget(address, name, _check_version("model_version", model_version), signature)
    if compare_model_name is None and compare_model_version is None and compare_address is None:
        return model, None
    compare = ModelTarget(
        _check_text("compare_address", compare_address) if compare_address is not None else address,
        _check_text("compare_model_name", compare_model_name) if compare_model_name is not None else name,
        _check_version("compare_model_version", compare_model_version),
        signature,
    )
    if compare == model:
        raise WitConfigError(
            f"the comparison model is the model itself ({model.describe()}); give another name, version or address"
        )
    return model, compare


def resolve_settings(
    serving_address: str,
    model_name: str,
    examples_path: str | os.PathLike[str],
    *,
    model_version: int | None = None,
    signature: str | None = None,
    compare_model_name: str | None = None,
    compare_model_version: int | None = None,
    compare_address: str | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    use_predict: bool = False,
    label_vocab: Sequence[str] | None = None,
    check_server: bool = True,
    client_factory: Callable[[str], ServingClient] | None = None,
) -> WitSettings:
    """Check the arguments and the served model(s); find the label vocab. See :func:`build_config`.

    ``check_server`` False skips the server (e.g. to write a notebook before the server is up): the Predict tensors
    are then the contract's (``inputs`` -> ``scores``) and the vocab must come from ``label_vocab`` or the model
    directory next to the examples. ``client_factory(address)`` makes the gRPC client (default
    :class:`glimpse_wire.client.ServingClient`).
    """
    model, compare = _targets(
        serving_address, model_name, model_version, signature, compare_model_name, compare_model_version,
        compare_address,
    )
    _check_max_examples(max_examples)
    first_example = read_serialized_examples(examples_path, 1)[0]
    settings = WitSettings(
        model=model,
        examples_path=str(Path(examples_path).resolve()),
        max_examples=max_examples,
        compare=compare,
        use_predict=bool(use_predict),
        predict_input_tensor=IN_EXAMPLES if use_predict else None,
        predict_output_tensor=OUT_SCORES if use_predict else None,
    )
    vocab = None if label_vocab is None else [_check_text("label_vocab entry", v) for v in label_vocab]
    if not check_server:
        return _with_vocab(settings, vocab, None)

    if client_factory is None:
        client_factory = ServingClient

    served: dict[ModelTarget, int | None] = {}
    vocabs: dict[ModelTarget, list[str]] = {}
    tensors: dict[ModelTarget, tuple[str | None, str | None]] = {}
    for target in (model, compare):
        if target is None:
            continue
        client = client_factory(target.address)
        try:
            metadata = client.metadata(target.name, version=target.version)
            tensors[target] = _check_signature(metadata, target, settings.use_predict)
            served[target] = metadata.version
            if vocab is None:
                local = local_label_vocab(examples_path, metadata.version or target.version, target.name)
                vocabs[target] = local[0] if local else _served_vocab(client, target, first_example)
        except ServingError as e:
            raise WitConfigError(f"{target.describe()}: {e}") from e
        finally:
            client.close()
    if compare is not None and tensors[compare] != tensors[model]:
        raise WitConfigError(
            f"WIT uses one Predict input/output for both models: {tensors[model]} vs {tensors[compare]}"
        )
    if compare is not None and vocab is None and vocabs[compare] != vocabs[model]:
        raise WitConfigError(
            f"the two models have different labels ({vocabs[model]} vs {vocabs[compare]}); WIT uses one label vocab"
        )
    settings = replace(settings, served_version=served[model], compare_served_version=served.get(compare))
    if use_predict:
        settings = replace(settings, predict_input_tensor=tensors[model][0], predict_output_tensor=tensors[model][1])
    return _with_vocab(settings, vocab if vocab is not None else vocabs[model], served[model])


def _with_vocab(settings: WitSettings, vocab: list[str] | None, served_version: int | None) -> WitSettings:
    local = local_label_vocab(settings.examples_path, served_version or settings.model.version, settings.model.name)
    if vocab is None:
        if local is None:
            raise WitConfigError(
                "cannot find the label vocab without the server: the examples are not in an exported model's "
                "directory (<model_base_path>/examples/); pass label_vocab or let the server be asked"
            )
        vocab = local[0]
    path = str(local[1]) if local is not None and local[0] == list(vocab) else None
    return replace(settings, label_vocab=tuple(vocab), label_vocab_path=path)


# ----------------------------------------------------------------------------------------------------------------
# The builder


def builder_from_settings(settings: WitSettings, examples: Sequence[Any] | None = None) -> WitConfigBuilder:
    """witwidget's ``WitConfigBuilder`` holding ``settings`` and the examples (loaded from the settings' path when
    ``examples`` is None)."""
    compat.install()
    from witwidget.notebook.visualization import WitConfigBuilder

    if examples is None:
        examples = load_examples(settings.examples_path, settings.max_examples)
    builder = WitConfigBuilder(list(examples))
    builder.set_model_type(MODEL_TYPE)
    model = settings.model
    builder.set_inference_address(model.address).set_model_name(model.name).set_model_signature(model.signature)
    if model.version is not None:
        builder.set_model_version(str(model.version))
    builder.set_label_vocab(list(settings.label_vocab))
    builder.set_multi_class(len(settings.label_vocab) > 2)
    builder.set_max_classes_to_display(max(1, len(settings.label_vocab)))
    builder.set_target_feature(settings.target_feature)
    if settings.use_predict:
        builder.set_uses_predict_api(True)
        builder.set_predict_input_tensor(settings.predict_input_tensor)
        builder.set_predict_output_tensor(settings.predict_output_tensor)
    compare = settings.compare
    if compare is not None:
        builder.set_compare_inference_address(compare.address).set_compare_model_name(compare.name)
        builder.set_compare_model_signature(compare.signature)
        if compare.version is not None:
            builder.set_compare_model_version(str(compare.version))
    return builder


def build_config(
    serving_address: str,
    model_name: str,
    examples_path: str | os.PathLike[str],
    *,
    model_version: int | None = None,
    signature: str | None = None,
    compare_model_name: str | None = None,
    compare_model_version: int | None = None,
    compare_address: str | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    use_predict: bool = False,
    label_vocab: Sequence[str] | None = None,
    check_server: bool = True,
    client_factory: Callable[[str], ServingClient] | None = None,
) -> WitConfigBuilder:
    """A ``WitConfigBuilder`` for a classification model served at ``serving_address`` (gRPC ``host:port``).

    ``examples_path``: a TFRecord of tf.Examples with ``image/encoded`` (the exporter's
    ``<model_base_path>/examples/test.tfrecord``), of which the first ``max_examples`` are loaded. ``signature``:
    default the contract's ``classification``. ``compare_model_name`` / ``compare_model_version`` /
    ``compare_address``: a second model for WIT to compare (any one of them turns it on; the others default to the
    first model's name and address, and to its latest version). ``use_predict``: call Predict instead of Classify
    (see the module docstring for what that needs). The label vocab comes from the model's ``labels.txt`` next to
    the examples, else from the served model (one Classify call), unless ``label_vocab`` is given.
    WitConfigError when the server cannot serve WIT what it needs.
    """
    settings = resolve_settings(
        serving_address,
        model_name,
        examples_path,
        model_version=model_version,
        signature=signature,
        compare_model_name=compare_model_name,
        compare_model_version=compare_model_version,
        compare_address=compare_address,
        max_examples=max_examples,
        use_predict=use_predict,
        label_vocab=label_vocab,
        check_server=check_server,
        client_factory=client_factory,
    )
    return builder_from_settings(settings)


# ----------------------------------------------------------------------------------------------------------------
# TensorBoard's WIT plugin


def tensorboard_settings(settings: WitSettings) -> list[tuple[str, str]]:
    """The fields of TensorBoard's What-If Tool set-up dialog, as (field, value) rows."""
    model = settings.model

    def version(v: int | None) -> str:
        return "" if v is None else str(v)

    rows = [
        ("Inference address", model.address),
        ("Model name", model.name),
        ("Model type", MODEL_TYPE.capitalize()),
        ("Model version (optional)", version(model.version)),
        ("Model signature (optional)", model.signature),
        ("Uses Predict API", "yes" if settings.use_predict else "no"),
    ]
    if settings.use_predict:
        rows += [
            ("Predict input tensor", settings.predict_input_tensor or ""),
            ("Predict output tensor", settings.predict_output_tensor or ""),
        ]
    rows += [
        ("Path to examples", settings.examples_path),
        ("Maximum number of examples to load", str(settings.max_examples)),
        ("Sampling ratio", "1"),
        ("Path to label dict (optional)", settings.label_vocab_path or ""),
    ]
    if settings.compare is not None:
        compare = settings.compare
        rows += [
            ("Second model: inference address", compare.address),
            ("Second model: model name", compare.name),
            ("Second model: model version (optional)", version(compare.version)),
            ("Second model: model signature (optional)", compare.signature),
        ]
    return rows

