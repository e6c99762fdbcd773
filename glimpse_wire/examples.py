"""tf.Example and TFRecord files without TensorFlow.

:func:`make_example` / :func:`parse_example` convert between a plain mapping and a serialized ``tf.Example``;
:func:`write_tfrecord` / :func:`read_tfrecord` speak TFRecord framing (length, masked CRC-32C of the length, data,
masked CRC-32C of the data), optionally GZIP-compressed like ``tf.io.TFRecordOptions(compression_type="GZIP")``.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from google.protobuf.message import DecodeError

from glimpse_wire._crc32c import masked_crc32c
from glimpse_wire.messages import Example, Feature

__all__ = [
    "FeatureValue",
    "TFRecordError",
    "to_example",
    "make_example",
    "parse_example",
    "read_tfrecord",
    "write_tfrecord",
]

FeatureValue = bytes | str | int | float | bool | list | tuple | np.ndarray

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_COMPRESSIONS = ("", "GZIP")


class TFRecordError(ValueError):
    """A TFRecord file that is truncated or fails its checksums."""


# ---------------------------------------------------------------------------------------------------------------
# tf.Example


def _kind_of(item: Any) -> str:
    if isinstance(item, (bytes, bytearray, memoryview, str, np.bytes_, np.str_)):
        return "bytes"
    if isinstance(item, (bool, np.bool_, int, np.integer)):
        return "int64"
    if isinstance(item, (float, np.floating)):
        return "float"
    raise TypeError(f"a tf.Example feature holds bytes, str, int or float values, got {type(item).__name__}")


def _feature(key: str, value: Any) -> Feature:
    if isinstance(value, np.ndarray):
        value = value.reshape(-1).tolist()
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"feature {key!r} is an empty list: its type (bytes, int64 or float) is unknown")
    kinds = {_kind_of(item) for item in items}
    if kinds == {"int64", "float"}:
        kinds = {"float"}
    if len(kinds) > 1:
        raise TypeError(f"feature {key!r} mixes strings and numbers")
    kind = kinds.pop()
    feature = Feature()
    if kind == "bytes":
        feature.bytes_list.value.extend(
            item.encode("utf-8") if isinstance(item, (str, np.str_)) else bytes(item) for item in items
        )
    elif kind == "int64":
        try:
            feature.int64_list.value.extend(int(item) for item in items)
        except ValueError as e:  # out of int64 range
            raise ValueError(f"feature {key!r}: {e}") from e
    else:
        feature.float_list.value.extend(float(item) for item in items)
    return feature


def to_example(features: Mapping[str, Any]) -> Example:
    """A ``tf.Example`` message (ours) of ``{name: value}``.

    A value is bytes or str (-> bytes_list, str as UTF-8), int or bool (-> int64_list), float (-> float_list), or a
    list/tuple/array of one of those (ints among floats make a float_list). A ``Feature`` message is kept as is.
    """
    if not isinstance(features, Mapping):
        raise TypeError(f"features must be a mapping of name -> value, got {type(features).__name__}")
    example = Example()
    for key, value in features.items():
        if not isinstance(key, str):
            raise TypeError(f"feature names are str, got {type(key).__name__}")
        if isinstance(value, Feature):
            example.features.feature[key].CopyFrom(value)
        else:
            example.features.feature[key].CopyFrom(_feature(key, value))
    return example


def make_example(features: Mapping[str, Any]) -> bytes:
    """A serialized ``tf.Example`` (deterministic bytes) of ``{name: value}``; see :func:`to_example`."""
    return to_example(features).SerializeToString(deterministic=True)


def parse_example(data: bytes | Example) -> dict[str, list[bytes] | list[int] | list[float]]:
    """``{name: list of values}`` of a serialized ``tf.Example``: lists of bytes, int or float (a feature with no
    kind set gives an empty list). ValueError when ``data`` is not an Example."""
    if isinstance(data, Example):
        example = data
    else:
        try:
            example = Example.FromString(bytes(data))
        except (DecodeError, TypeError) as e:
            raise ValueError(f"not a serialized tf.Example: {e}") from e
    out: dict[str, list[bytes] | list[int] | list[float]] = {}
    for key in sorted(example.features.feature):
        feature = example.features.feature[key]
        kind = feature.WhichOneof("kind")
        out[key] = list(getattr(feature, kind).value) if kind else []
    return out


# ---------------------------------------------------------------------------------------------------------------
# TFRecord


def _compression(compression: str | None) -> str:
    name = (compression or "").upper()
    if name not in _COMPRESSIONS:
        raise ValueError(f"unsupported compression {compression!r}; expected one of None, 'GZIP'")
    return name


def _open(path: str | os.PathLike[str], mode: str, compression: str) -> BinaryIO:
    if compression == "GZIP":
        return gzip.open(path, mode)  # type: ignore[return-value]
    return open(path, mode)


def write_tfrecord(path: str | os.PathLike[str], records: Iterable[bytes], *, compression: str | None = None) -> int:
    """Write ``records`` (bytes each) as a TFRecord file; returns how many were written."""
    kind = _compression(compression)
    count = 0
    with _open(path, "wb", kind) as f:
        for record in records:
            if not isinstance(record, (bytes, bytearray, memoryview)):
                raise TypeError(f"TFRecord records are bytes, got {type(record).__name__}")
            data = bytes(record)
            length = _LENGTH.pack(len(data))
            f.write(length)
            f.write(_CRC.pack(masked_crc32c(length)))
            f.write(data)
            f.write(_CRC.pack(masked_crc32c(data)))
            count += 1
    return count


def _read_exact(f: BinaryIO, n: int, path: Path, what: str, offset: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise TFRecordError(f"{path}: truncated record at byte {offset} ({what}: {len(data)} of {n} bytes)")
    return data


def read_tfrecord(
    path: str | os.PathLike[str], *, compression: str | None = None, verify: bool = True
) -> Iterator[bytes]:
    """Yield the records of a TFRecord file. ``verify`` checks both CRCs; TFRecordError on a truncated or
    corrupt file (after the records before it were yielded)."""
    kind = _compression(compression)
    path = Path(path)
    with _open(path, "rb", kind) as f:
        offset = 0
        while True:
            header = f.read(_LENGTH.size)
            if not header:
                return
            if len(header) < _LENGTH.size:
                raise TFRecordError(f"{path}: truncated record at byte {offset} (length: {len(header)} of 8 bytes)")
            (length_crc,) = _CRC.unpack(_read_exact(f, _CRC.size, path, "length crc", offset))
            if verify and masked_crc32c(header) != length_crc:
                raise TFRecordError(f"{path}: corrupt record length at byte {offset} (checksum mismatch)")
            (length,) = _LENGTH.unpack(header)
            data = _read_exact(f, length, path, "data", offset)
            (data_crc,) = _CRC.unpack(_read_exact(f, _CRC.size, path, "data crc", offset))
            if verify and masked_crc32c(data) != data_crc:
                raise TFRecordError(f"{path}: corrupt record data at byte {offset} (checksum mismatch)")
            offset += _LENGTH.size + 2 * _CRC.size + length
            yield data
