"""CRC-32C (Castagnoli), the checksum of TFRecord framing, in Python and numpy.

Short inputs go through a 256-entry table byte by byte. Long inputs are cut into K equal chunks whose CRC registers
advance together, one numpy step per byte position; CRC is linear over GF(2), so the chunk registers are then folded
with the "advance over L zero bytes" operator, itself computed in the same loop from the 32 basis registers.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["crc32c", "masked_crc32c"]

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8
_PARALLEL_MIN = 16384
_CHUNK_RATIO = 16  # K / L: a numpy step costs more than folding one chunk register


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        reg = byte
        for _ in range(8):
            reg = (reg >> 1) ^ _POLY if reg & 1 else reg >> 1
        table.append(reg)
    return table


_TABLE = _make_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)


def _advance_bytes(reg: int, data: bytes | memoryview) -> int:
    table = _TABLE
    for b in data:
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _advance_parallel(reg: int, data: bytes | memoryview) -> int:
    n = len(data)
    length = max(64, math.isqrt(n // _CHUNK_RATIO))  # chunk length L; K = n // L chunks
    chunks = n // length
    body = np.frombuffer(data, dtype=np.uint8, count=chunks * length)
    # Lanes 0..K-1: the chunks from a zero register. Lanes K..K+31: zero bytes from the 32 basis registers, which
    # yields the columns of the linear map "advance over L zero bytes".
    columns = np.zeros((length, chunks + 32), dtype=np.uint8)
    columns[:, :chunks] = body.reshape(chunks, length).T
    regs = np.zeros(chunks + 32, dtype=np.uint32)
    regs[chunks:] = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))
    table = _TABLE_NP
    for row in columns:
        regs = table[(regs ^ row) & 0xFF] ^ (regs >> 8)
    chunk_regs = regs[:chunks].tolist()
    # The operator as four byte-indexed tables: apply(x) = t0[x & 255] ^ t1[(x >> 8) & 255] ^ ...
    basis = regs[chunks:].tolist()
    byte_tables = []
    for k in range(4):
        t = [0] * 256
        for v in range(1, 256):
            low = v & -v
            t[v] = t[v ^ low] ^ basis[8 * k + low.bit_length() - 1]
        byte_tables.append(t)
    t0, t1, t2, t3 = byte_tables
    for chunk_reg in chunk_regs:
        reg = t0[reg & 0xFF] ^ t1[(reg >> 8) & 0xFF] ^ t2[(reg >> 16) & 0xFF] ^ t3[reg >> 24] ^ chunk_reg
    return _advance_bytes(reg, memoryview(data)[chunks * length :])


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of ``data`` (``crc32c(b"123456789") == 0xE3069283``)."""
    view = memoryview(data).cast("B")
    if len(view) >= _PARALLEL_MIN:
        reg = _advance_parallel(0xFFFFFFFF, view)
    else:
        reg = _advance_bytes(0xFFFFFFFF, view)
    return reg ^ 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add a constant (mod 2**32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF
