"""TF Serving's REST JSON <-> its protobuf messages (semantics and messages of TF Serving's util/json_tensor.cc).

Predict requests come in the row format (``{"instances": [...]}`` -> ``{"predictions": [...]}``) or the columnar
one (``{"inputs": ...}`` -> ``{"outputs": ...}``); input dtypes come from the signature, binary strings are
``{"b64": "..."}``. Classify and Regress take ``{"signature_name"?, "context"?, "examples": [...]}`` and answer
``{"results": ...}`` (TF Serving's code writes ``results``; its REST guide says ``result``). Numbers are written the
way TF Serving writes them: the shortest of ``%g`` and full precision that round-trips in the tensor's own float
width, ``.0`` added to whole numbers, ``NaN``/``Infinity`` spelled out. Output strings whose alias ends in
``_bytes`` are written as ``{"b64": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2

from glimpse_wire.errors import InvalidArgument, ServingError, Unimplemented
from serving.tensors import dtype_string, to_ndarray, to_tensor_proto

__all__ = [
    "RequestFormat",
    "parse_json",
    "fill_predict_request",
    "fill_classify_regress_request",
    "predict_response_json",
    "classification_json",
    "regression_json",
    "json_value_string",
    "format_floats",
]

_F32_MAX_INT = (1 << 24) - 1
_F64_MAX_INT = (1 << 53) - 1
_F32_MAX = float(np.finfo(np.float32).max)
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1


class RequestFormat(enum.Enum):
    ROW = "row"
    COLUMNAR = "columnar"


# -- JSON values as rapidjson sees them ----------------------------------------------------------------------------
def _is_int_value(v: Any) -> bool:
    """A JSON integer literal that rapidjson stores as an integer (it fits in uint64 or int64)."""
    return isinstance(v, int) and not isinstance(v, bool) and _INT64[0] <= v <= _UINT64_MAX


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_string(v: Any) -> str:
    if v is None:
        return "Null"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, dict):
        return "Object"
    if isinstance(v, list):
        return "Array"
    if isinstance(v, str):
        return "String"
    return "Number"


def _decimal(value: float, bits: int) -> str:
    """TF Serving's WriteDecimal for one value."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    return str(format_floats(np.array([value], dtype=np.float32 if bits == 32 else np.float64))[0])


def json_value_string(v: Any) -> str:
    """JsonValueToString: how a JSON value is quoted in TF Serving's error messages."""
    if isinstance(v, float):
        lossless_float = not math.isfinite(v) or abs(v) <= _F32_MAX and float(np.float32(v)) == v
        return _decimal(v, 32 if lossless_float else 64)
    if isinstance(v, (dict, list)):
        return json.dumps(v, indent=4, ensure_ascii=False)
    return json.dumps(v, ensure_ascii=False)


def _format_error(doc: Any, *parts: Any) -> InvalidArgument:
    return InvalidArgument(f"JSON Value: {json_value_string(doc)} " + "".join(str(p) for p in parts))


def _type_error(v: Any, dtype: int) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {json_value_string(v)} Type: {_type_string(v)} is not of expected type: {dtype_string(dtype)}"
    )


def _lossy(v: Any, target: str) -> InvalidArgument:
    return InvalidArgument(f"Cannot convert JSON value: {json_value_string(v)} to {target} without loss of precision.")


def _lossless(v: Any, max_int: int, max_value: float) -> bool:
    if isinstance(v, float) and not math.isfinite(v):
        return True
    if _is_int_value(v):
        return abs(v) <= max_int
    return -max_value <= float(v) <= max_value


def _status_string(e: ServingError) -> str:
    return f"{e.code}: {e.message}"


_JSON_MESSAGES = (
    ("Expecting value", "Invalid value."),
    ("Extra data", "The document root must not be followed by other values."),
    ("Expecting property name enclosed in double quotes", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Expecting ',' delimiter", "Missing a comma or ']' after an array element."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid control character", "Invalid encoding in string."),
)


def parse_json(body: bytes | str) -> dict[str, Any]:
    """ParseJson: the request body as a JSON object, with TF Serving's (rapidjson's) parse error wording."""
    if isinstance(body, bytes):
        if not body:
            raise InvalidArgument("JSON Parse error: The document is empty")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidArgument(f"JSON Parse error: Invalid encoding in string. at offset: {e.start}") from e
    else:
        text = body
    if not text.strip():
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        message = next((m for prefix, m in _JSON_MESSAGES if e.msg.startswith(prefix)), e.msg + ".")
        raise InvalidArgument(f"JSON Parse error: {message} at offset: {e.pos}") from e
    except RecursionError as e:
        raise InvalidArgument("JSON Parse error: Terminate parsing due to Handler error. at offset: 0") from e
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    return doc


def _signature_name(doc: dict[str, Any]) -> str | None:
    if "signature_name" not in doc:
        return None
    value = doc["signature_name"]
    if not isinstance(value, str):
        raise InvalidArgument(
            f"JSON Value: {json_value_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return value


# -- JSON -> tensors -------------------------------------------------------------------------------------------
def _is_b64(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def _b64decode(v: Any) -> bytes:
    if not _is_b64(v):
        raise InvalidArgument(f"JSON Value: {json_value_string(v)} not formatted correctly for base64 data")
    text = v["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidArgument("Unable to base64 decode") from e


def _convert_scalar(v: Any, dtype: int) -> Any:
    if isinstance(v, dict):
        if dtype == types_pb2.DT_STRING:
            return _b64decode(v)
        raise _type_error(v, dtype)
    if dtype == types_pb2.DT_FLOAT:
        if not _is_number(v):
            raise _type_error(v, dtype)
        if not _lossless(v, _F32_MAX_INT, _F32_MAX):
            raise _lossy(v, "float")
        return float(v)
    if dtype == types_pb2.DT_DOUBLE:
        if not _is_number(v):
            raise _type_error(v, dtype)
        if not _lossless(v, _F64_MAX_INT, float(np.finfo(np.float64).max)):
            raise _lossy(v, "double")
        return float(v)
    if dtype in (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8):
        if not (_is_int_value(v) and _INT32[0] <= v <= _INT32[1]):
            raise _type_error(v, dtype)
        return v
    if dtype == types_pb2.DT_INT64:
        if not (_is_int_value(v) and _INT64[0] <= v <= _INT64[1]):
            raise _type_error(v, dtype)
        return v
    if dtype == types_pb2.DT_UINT32:
        if not (_is_int_value(v) and 0 <= v <= _UINT32_MAX):
            raise _type_error(v, dtype)
        return v
    if dtype == types_pb2.DT_UINT64:
        if not (_is_int_value(v) and 0 <= v <= _UINT64_MAX):
            raise _type_error(v, dtype)
        return v
    if dtype == types_pb2.DT_STRING:
        if not isinstance(v, str):
            raise _type_error(v, dtype)
        return v.encode("utf-8")
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(v, bool):
            raise _type_error(v, dtype)
        return v
    raise Unimplemented(f"Conversion of JSON Value: {json_value_string(v)} to type: {dtype_string(dtype)}")


def _dense_shape(v: Any) -> list[int]:
    shape: list[int] = []
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    return shape


def _fill(v: Any, level: int, shape: list[int], dtype: int, out: list[Any]) -> None:
    rank = len(shape)
    if not isinstance(v, list):
        if level != rank:
            raise InvalidArgument(
                f"JSON Value: {json_value_string(v)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        out.append(_convert_scalar(v, dtype))
        return
    if level >= rank:
        raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(v) != shape[level]:
        raise InvalidArgument(
            f"Encountered list at unexpected size: {len(v)} at level: {level} expected size: {shape[level]}"
        )
    for item in v:
        _fill(item, level + 1, shape, dtype, out)


_NUMPY = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64,
    types_pb2.DT_BOOL: np.bool_,
    types_pb2.DT_STRING: object,
}


def _array(values: list[Any], shape: list[int], dtype: int) -> np.ndarray:
    np_dtype = _NUMPY[dtype]
    if np_dtype is object:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    elif dtype == types_pb2.DT_INT8 or dtype == types_pb2.DT_INT16 or dtype == types_pb2.DT_UINT8:
        arr = np.array(values, dtype=np.int64).astype(np_dtype)  # TF keeps the int_val bits, wrapping around
    else:
        arr = np.array(values, dtype=np_dtype)
    return arr.reshape(shape)


class _Collector:
    """Row-format accumulation of one named tensor over the 'instances' list (AddInstanceItem)."""

    def __init__(self, dtype: int) -> None:
        self.dtype = dtype
        self.values: list[Any] = []
        self.size: int | None = None
        self.shape: list[int] | None = None

    def add(self, item: Any) -> None:
        shape = _dense_shape(item)
        values: list[Any] = []
        _fill(item, 0, shape, self.dtype, values)
        if self.size is None:
            self.size, self.shape = len(values), shape
        elif self.size != len(values):
            raise InvalidArgument(f"Expecting tensor size: {self.size} but got: {len(values)}")
        elif self.shape != shape:
            raise InvalidArgument(
                f"Expecting shape [{','.join(map(str, self.shape or []))}] but got: [{','.join(map(str, shape))}]"
            )
        self.values.extend(values)


def _from_instances(instances: list[Any], dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
            "tensorinfo_map"
        )

    def is_object(v: Any) -> bool:
        return isinstance(v, dict) and not _is_b64(v)

    named = is_object(instances[0])
    names = sorted(dtypes)
    collectors: dict[str, _Collector] = {}
    for index, element in enumerate(instances):
        if named:
            if not is_object(element):
                raise InvalidArgument(f"Expecting object but got list at item {index} of input list")
            for key, value in element.items():
                try:
                    if key not in dtypes:
                        raise InvalidArgument(f"JSON object: does not have named input: {key}")
                    collectors.setdefault(key, _Collector(dtypes[key])).add(value)
                except ServingError as e:
                    raise InvalidArgument(
                        f"Failed to process element: {index} key: {key} of 'instances' list. Error: {_status_string(e)}"
                    ) from e
            if set(element) != set(names):
                raise InvalidArgument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_value_string(element)} must only have keys: {','.join(names)}"
                )
        else:
            if is_object(element):
                raise InvalidArgument(f"Expecting value/list but got object at item {index} of input list")
            name = names[0]
            try:
                collectors.setdefault(name, _Collector(dtypes[name])).add(element)
            except ServingError as e:
                raise InvalidArgument(
                    f"Failed to process element: {index} of 'instances' list. Error: {_status_string(e)}"
                ) from e
    return {
        name: _array(c.values, [len(instances), *(c.shape or [])], c.dtype) for name, c in collectors.items()
    }


def _from_inputs(value: Any, dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    def column(v: Any, dtype: int) -> np.ndarray:
        shape = _dense_shape(v)
        values: list[Any] = []
        _fill(v, 0, shape, dtype, values)
        return _array(values, shape, dtype)

    if not isinstance(value, dict) or _is_b64(value):
        if len(dtypes) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
                "tensorinfo_map"
            )
        name = next(iter(sorted(dtypes)))
        return {name: column(value, dtypes[name])}
    result = {}
    for name in sorted(dtypes):
        if name not in value:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        result[name] = column(value[name], dtypes[name])
    return result


def fill_predict_request(
    doc: dict[str, Any], input_dtypes: Callable[[str], Mapping[str, int]], request: Any
) -> RequestFormat:
    """FillPredictRequestFromJson: the signature name and input tensors into ``request`` (a PredictRequest).

    ``input_dtypes(signature_name)`` returns alias -> DataType of the signature's inputs (and raises the servable
    lookup errors)."""
    signature = _signature_name(doc)
    if signature is not None:
        request.model_spec.signature_name = signature
    dtypes = input_dtypes(request.model_spec.signature_name)
    if not dtypes:
        raise InvalidArgument(
            f"Failed to get input map for signature: {request.model_spec.signature_name or 'DEFAULT'}"
        )
    if "instances" in doc:
        if "inputs" in doc:
            raise _format_error(doc, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys "
                                     "to exist ")
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise _format_error(doc, "Excepting 'instances' to be an list/array")
        if not instances:
            raise _format_error(doc, "No values in 'instances' array")
        tensors, fmt = _from_instances(instances, dtypes), RequestFormat.ROW
    elif "inputs" in doc:
        tensors, fmt = _from_inputs(doc["inputs"], dtypes), RequestFormat.COLUMNAR
    else:
        raise InvalidArgument("Missing 'inputs' or 'instances' key")
    for name, array in tensors.items():
        proto = to_tensor_proto(array)
        proto.dtype = dtypes[name]
        request.inputs[name].CopyFrom(proto)
    return fmt


def _feature_value(value: Any, name: str, feature: Any) -> None:
    kind = feature.WhichOneof("kind")

    def incompatible() -> InvalidArgument:
        names = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
        return InvalidArgument(
            f"Unexpected element type in feature: {name} expecting type: {names.get(kind or '', 'UNKNOWN')}"
        )

    if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64(value)):
        raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: {_type_string(value)}")
    if isinstance(value, bool):
        if kind not in (None, "int64_list"):
            raise incompatible()
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        if kind not in (None, "bytes_list"):
            raise incompatible()
        feature.bytes_list.value.append(_b64decode(value))
    elif isinstance(value, str):
        if kind not in (None, "bytes_list"):
            raise incompatible()
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, float) or not _is_int_value(value):
        if kind not in (None, "float_list"):
            raise incompatible()
        if not _lossless(value, _F32_MAX_INT, _F32_MAX):
            raise _lossy(value, "float")
        feature.float_list.value.append(float(value))
    else:
        if kind not in (None, "int64_list"):
            raise incompatible()
        if value > _INT64[1]:
            raise InvalidArgument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(value)


def _example(value: Any, example: Any) -> None:
    if not isinstance(value, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {_type_string(value)}")
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _feature_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)


def fill_classify_regress_request(doc: dict[str, Any], request: Any) -> None:
    """FillClassifyRegressRequestFromJson: signature name, optional context and the examples into ``request``."""
    signature = _signature_name(doc)
    if signature is not None:
        request.model_spec.signature_name = signature
    has_context = "context" in doc
    if has_context:
        _example(doc["context"], request.input.example_list_with_context.context)
    if "examples" not in doc:
        raise _format_error(doc, "When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    target = request.input.example_list_with_context if has_context else request.input.example_list
    for value in examples:
        example = example_pb2.Example()
        _example(value, example)
        target.examples.add().CopyFrom(example)


# -- tensors -> JSON -------------------------------------------------------------------------------------------
def format_floats(values: np.ndarray) -> np.ndarray:
    """WriteDecimal over an array: strings, ``%g`` when it round-trips in the array's float width, else full."""
    flat = np.asarray(values).reshape(-1)
    width = np.float32 if flat.dtype == np.float32 else np.float64
    flat = flat.astype(width)
    digits = "%.9g" if width is np.float32 else "%.17g"
    as64 = flat.astype(np.float64)
    finite = np.isfinite(flat)
    short = np.char.mod("%g", np.where(finite, as64, 0.0))
    full = np.char.mod(digits, np.where(finite, as64, 0.0))
    text = np.where(short.astype(width) == np.where(finite, flat, 0), short, full).astype(object)
    whole = (np.char.find(text.astype(str), ".") < 0) & (np.char.find(text.astype(str), "e") < 0)
    text = np.where(whole, text + ".0", text)
    text = np.where(np.isnan(flat), "NaN", text)
    text = np.where(np.isposinf(flat), "Infinity", text)
    text = np.where(np.isneginf(flat), "-Infinity", text)
    return text.reshape(np.shape(values))


def _leaf_strings(array: np.ndarray, as_bytes: bool) -> np.ndarray:
    kind = array.dtype.kind
    if kind == "f":
        return format_floats(array)
    if kind == "b":
        return np.where(array, "true", "false").astype(object)
    if kind in "iu":
        return array.astype(str).astype(object)
    out = np.empty(array.shape, dtype=object)
    flat_out = out.reshape(-1)
    for i, v in enumerate(array.reshape(-1)):
        raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
        if as_bytes:
            flat_out[i] = '{"b64": "' + base64.b64encode(raw).decode("ascii") + '"}'
        else:
            flat_out[i] = json.dumps(raw.decode("utf-8", "replace"), ensure_ascii=False)
    return out


def _nested(strings: Any) -> str:
    if not isinstance(strings, np.ndarray):
        return str(strings)
    if strings.ndim == 0:
        return str(strings[()])
    if strings.ndim == 1:
        return "[" + ", ".join(strings.tolist()) + "]"
    return "[" + ", ".join(_nested(sub) for sub in strings) + "]"


def _tensor_arrays(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {name: (value if isinstance(value, np.ndarray) else to_ndarray(value)) for name, value in outputs.items()}


def predict_response_json(outputs: Mapping[str, Any], fmt: RequestFormat) -> str:
    """MakeJsonFromTensors: ``outputs`` maps alias -> TensorProto (or ndarray)."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    arrays = _tensor_arrays(outputs)
    names = sorted(arrays)
    leaves = {n: _leaf_strings(arrays[n], n.endswith("_bytes") and arrays[n].dtype == object) for n in names}
    multiple = len(names) > 1
    if fmt is RequestFormat.COLUMNAR:
        if multiple:
            body = ", ".join(f"{json.dumps(n)}: {_nested(leaves[n])}" for n in names)
            return '{"outputs": {' + body + "}}"
        return '{"outputs": ' + _nested(leaves[names[0]]) + "}"
    batch = 0
    for name in names:
        array = arrays[name]
        if array.ndim == 0:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        size = array.shape[0]
        if size < 1:
            raise InvalidArgument(f"Tensor name: {name} has invalid batch size: {size}")
        if batch and size != batch:
            raise InvalidArgument(f"Tensor name: {name} has inconsistent batch size: {size} expecting: {batch}")
        batch = size
    rows = []
    for i in range(batch):
        if multiple:
            rows.append("{" + ", ".join(f"{json.dumps(n)}: {_nested(leaves[n][i])}" for n in names) + "}")
        else:
            rows.append(_nested(leaves[names[0]][i]))
    return '{"predictions": [' + ", ".join(rows) + "]}"


def classification_json(result: Any) -> str:
    """MakeJsonFromClassificationResult."""
    if not result.classifications:
        raise InvalidArgument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for item in result.classifications:
        if not item.classes:
            rows.append("[]")
            continue
        scores = format_floats(np.array([c.score for c in item.classes], dtype=np.float32))
        pairs = [f"[{json.dumps(c.label, ensure_ascii=False)}, {s}]" for c, s in zip(item.classes, scores, strict=True)]
        rows.append("[" + ", ".join(pairs) + "]")
    return '{"results": [' + ", ".join(rows) + "]}"


def regression_json(result: Any) -> str:
    """MakeJsonFromRegressionResult."""
    if not result.regressions:
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    values = format_floats(np.array([r.value for r in result.regressions], dtype=np.float32))
    return '{"results": [' + ", ".join(values.tolist()) + "]}"
