"""Bit packing of signed integer codes: int6 as 4 values in 3 bytes, int7 as 8 in 7, int8 as is.

Codes in [-2^(b-1), 2^(b-1)) are biased to unsigned (q + 2^(b-1)) and written
little-endian, LSB first, along the last axis; each row is padded with zero codes to a
whole group (4 values for int6, 8 for int7), so rows stay byte-aligned and a kernel can
address row n at n * packed_row_bytes(K). For int6 the four codes v0..v3 of a group
occupy the 24 bits of three bytes as v0 | v1 << 6 | v2 << 12 | v3 << 18.
"""
from __future__ import annotations

import numpy as np

GROUP = {6: 4, 7: 8, 8: 1}  # values per whole number of bytes


def packed_row_bytes(k: int, bits: int) -> int:
    g = GROUP[bits]
    return -(-k // g) * g * bits // 8


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """int8 codes [..., K] -> uint8 [..., packed_row_bytes(K, bits)]."""
    if bits not in GROUP:
        raise ValueError(f"bits must be one of {sorted(GROUP)}, got {bits}")
    codes = np.asarray(codes)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if codes.size and (codes.min() < lo or codes.max() > hi):
        raise ValueError(f"codes outside [{lo}, {hi}] cannot be packed in {bits} bits")
    u = (codes.astype(np.int16) + (1 << (bits - 1))).astype(np.uint64)
    if bits == 8:
        return u.astype(np.uint8)
    g = GROUP[bits]
    k = codes.shape[-1]
    pad = (-k) % g
    if pad:
        u = np.concatenate([u, np.full((*u.shape[:-1], pad), 1 << (bits - 1), dtype=np.uint64)], axis=-1)
    groups = u.reshape(*u.shape[:-1], -1, g)
    word = np.zeros(groups.shape[:-1], dtype=np.uint64)
    for i in range(g):
        word |= groups[..., i] << np.uint64(bits * i)
    nbytes = g * bits // 8
    out = np.stack([(word >> np.uint64(8 * j)) & np.uint64(0xFF) for j in range(nbytes)], axis=-1)
    return out.astype(np.uint8).reshape(*u.shape[:-1], -1)


def unpack(packed: np.ndarray, bits: int, k: int) -> np.ndarray:
    """uint8 [..., packed_row_bytes(K, bits)] -> int8 codes [..., K]."""
    if bits not in GROUP:
        raise ValueError(f"bits must be one of {sorted(GROUP)}, got {bits}")
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.shape[-1] != packed_row_bytes(k, bits):
        raise ValueError(f"{packed.shape[-1]} bytes per row do not hold {k} {bits}-bit codes")
    if bits == 8:
        return (packed.astype(np.int16) - 128).astype(np.int8)
    g = GROUP[bits]
    nbytes = g * bits // 8
    b = packed.reshape(*packed.shape[:-1], -1, nbytes).astype(np.uint64)
    word = np.zeros(b.shape[:-1], dtype=np.uint64)
    for j in range(nbytes):
        word |= b[..., j] << np.uint64(8 * j)
    mask = np.uint64((1 << bits) - 1)
    vals = np.stack([(word >> np.uint64(bits * i)) & mask for i in range(g)], axis=-1)
    vals = vals.reshape(*packed.shape[:-1], -1)[..., :k]
    return (vals.astype(np.int16) - (1 << (bits - 1))).astype(np.int8)
