"""tf.Example mappings, CRC-32C and TFRecord framing (TensorFlow's own reader/writer are checked in test_tf_compat)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glimpse_wire import _crc32c
from glimpse_wire.examples import (
    TFRecordError,
    make_example,
    parse_example,
    read_tfrecord,
    to_example,
    write_tfrecord,
)
from glimpse_wire.messages import Example, Feature, Int64List

FAST = settings(max_examples=30, deadline=None)


# ------------------------------------------------------------------------------------------------------ CRC-32C


@pytest.mark.parametrize(
    "data,crc",
    [  # RFC 3720 (iSCSI) B.4 test vectors and the usual check value
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
        (b"", 0),
    ],
)
def test_crc32c_known_values(data: bytes, crc: int) -> None:
    assert _crc32c.crc32c(data) == crc


@FAST
@given(st.binary(min_size=0, max_size=300), st.integers(0, 3 * _crc32c._PARALLEL_MIN))
def test_parallel_crc_equals_the_bytewise_one(head: bytes, pad: int) -> None:
    data = head + os.urandom(pad)
    assert _crc32c.crc32c(data) == _crc32c._advance_bytes(0xFFFFFFFF, data) ^ 0xFFFFFFFF


def test_masked_crc_rotates_and_adds_the_delta() -> None:
    crc = _crc32c.crc32c(b"abc")
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    assert _crc32c.masked_crc32c(b"abc") == (rotated + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------------- tf.Example


def test_make_and_parse_example() -> None:
    data = make_example(
        {
            "image/encoded": b"\x89PNG...",
            "label": 3,
            "label_name": "bird",
            "weights": [0.5, 1],
            "ids": np.array([1, 2, 3], dtype=np.int64),
            "flag": True,
        }
    )
    example = Example.FromString(data)
    assert example.features.feature["weights"].WhichOneof("kind") == "float_list"
    assert example.features.feature["ids"].WhichOneof("kind") == "int64_list"
    assert parse_example(data) == {
        "flag": [1],
        "ids": [1, 2, 3],
        "image/encoded": [b"\x89PNG..."],
        "label": [3],
        "label_name": [b"bird"],
        "weights": [0.5, 1.0],
    }


def test_make_example_is_deterministic_and_keeps_feature_messages() -> None:
    feature = Feature(int64_list=Int64List(value=[9]))
    a = make_example({"b": 1, "a": feature})
    b = make_example({"a": feature, "b": 1})
    assert a == b
    assert parse_example(a) == {"a": [9], "b": [1]}
    assert parse_example(to_example({"x": 1.5})) == {"x": [1.5]}


@FAST
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(
            st.lists(st.binary(max_size=8), min_size=1, max_size=3),
            st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=3),
            st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=3),
        ),
        max_size=4,
    )
)
def test_example_round_trip(features: dict[str, list]) -> None:
    assert parse_example(make_example(features)) == features


@pytest.mark.parametrize(
    "features,error",
    [
        ({"a": []}, ValueError),
        ({"a": [b"x", 1]}, TypeError),
        ({"a": None}, TypeError),
        ({"a": {"nested": 1}}, TypeError),
        ({"a": 2**64}, ValueError),
        ({1: b"x"}, TypeError),
        ([("a", 1)], TypeError),
    ],
)
def test_bad_features_raise(features: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        make_example(features)  # type: ignore[arg-type]


def test_parse_example_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="tf.Example"):
        parse_example(b"\xff\xff\xff\xff")


# ----------------------------------------------------------------------------------------------------- TFRecord


@FAST
@given(st.lists(st.binary(max_size=200), max_size=6), st.sampled_from([None, "GZIP"]))
def test_tfrecord_round_trip(tmp_path_factory: pytest.TempPathFactory, records: list[bytes], compression: str) -> None:
    path = tmp_path_factory.mktemp("rec") / "data.tfrecord"
    assert write_tfrecord(path, records, compression=compression) == len(records)
    assert list(read_tfrecord(path, compression=compression)) == records


def test_tfrecord_framing_layout(tmp_path: Path) -> None:
    path = tmp_path / "one.tfrecord"
    write_tfrecord(path, [b"hello"])
    raw = path.read_bytes()
    length = struct.pack("<Q", 5)
    assert raw[:8] == length
    assert raw[8:12] == struct.pack("<I", _crc32c.masked_crc32c(length))
    assert raw[12:17] == b"hello"
    assert raw[17:] == struct.pack("<I", _crc32c.masked_crc32c(b"hello"))


def test_large_record_round_trip(tmp_path: Path) -> None:
    big = os.urandom(300_000)
    path = tmp_path / "big.tfrecord"
    write_tfrecord(path, [big, b"", big[:10]])
    assert list(read_tfrecord(path)) == [big, b"", big[:10]]


@pytest.mark.parametrize(
    "damage,match",
    [
        (lambda raw: raw[:-2], "truncated"),
        (lambda raw: raw[:5], "truncated"),
        (lambda raw: raw[:12] + b"H" + raw[13:], "corrupt record data"),
        (lambda raw: raw[:2] + b"\x07" + raw[3:], "corrupt record length"),
    ],
)
def test_damaged_files_raise(tmp_path: Path, damage, match: str) -> None:
    path = tmp_path / "d.tfrecord"
    write_tfrecord(path, [b"hello", b"world"])
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(TFRecordError, match=match):
        list(read_tfrecord(path))


def test_records_before_the_damage_are_read(tmp_path: Path) -> None:
    path = tmp_path / "d.tfrecord"
    write_tfrecord(path, [b"first", b"second"])
    path.write_bytes(path.read_bytes()[:-1])
    reader = read_tfrecord(path)
    assert next(reader) == b"first"
    with pytest.raises(TFRecordError):
        next(reader)


def test_unverified_read_skips_checksums(tmp_path: Path) -> None:
    path = tmp_path / "d.tfrecord"
    write_tfrecord(path, [b"hello"])
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert list(read_tfrecord(path, verify=False)) == [b"hello"]


def test_tfrecord_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression"):
        write_tfrecord(tmp_path / "x", [b""], compression="ZSTD")
    with pytest.raises(TypeError, match="bytes"):
        write_tfrecord(tmp_path / "x", ["text"])  # type: ignore[list-item]
