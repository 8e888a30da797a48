"""Artifacts crafted to pass the checksum but lie in their index: each must fail with
ArtifactError at read time, never load, crash with another exception or allocate wildly."""
import hashlib
import json
import struct
import zlib

import numpy as np
import pytest

from pgolf.export.artifact import MAGIC, VERSION, ArtifactError, decode_artifact

ROWS, COLS = 4, 8


def blob(index, payload: bytes = b"\0") -> bytes:
    """A checksummed file: a zlib index stream and one zlib payload stream."""
    idx = index if isinstance(index, bytes) else json.dumps(index).encode()
    streams = [(b"index", zlib.compress(idx)), (b"all", zlib.compress(payload))]
    head = MAGIC + struct.pack("<HH", VERSION, len(streams))
    for name, data in streams:
        head += struct.pack("<B", len(name)) + name + struct.pack("<B", 4) + b"zlib" + struct.pack("<Q", len(data))
    body = head + b"".join(d for _, d in streams)
    return body + hashlib.sha256(body).digest()


def part(dtype, shape, offset, nbytes, stream=0, **extra):
    return {"dtype": dtype, "shape": shape, "stream": stream, "offset": offset, "nbytes": nbytes, **extra}


def tensor(scheme="raw", shape=(2,), parts=None, bits=0, dtype="float32"):
    return {"model_config": {}, "tensors": [{"name": "t", "scheme": scheme, "dtype": dtype, "shape": list(shape),
                                             "bits": bits, "parts": parts or {}}]}


def int_row(extra_parts=None, q_shape=(ROWS, COLS)):
    q = np.zeros(q_shape, np.int8).tobytes()
    s = np.ones(ROWS, np.float16).tobytes()
    parts = {"q": part("int8", list(q_shape), 0, len(q)), "scale": part("float16", [ROWS], len(q), len(s))}
    payload = q + s
    for name, arr in (extra_parts or {}).items():
        parts[name] = part(arr.dtype.str, list(arr.shape), len(payload), arr.nbytes)
        payload += arr.tobytes()
    return tensor("int_row", (ROWS, COLS), parts, bits=6), payload


f32 = lambda n: np.zeros(n, np.float32).tobytes()
lqer = {"lqer_a": np.zeros((ROWS, 3), np.int8), "lqer_a_scale": np.ones(1, np.float16),
        "lqer_b": np.zeros(64, np.int8), "lqer_b_scale": np.ones(1, np.float16)}
CASES = {
    "no model_config": ({"tensors": []}, b"x"),
    "header is a list": (b"[]", b"x"),
    "deeply nested JSON": (b"[" * 100_000 + b"]" * 100_000, b"x"),
    "negative shape": (tensor(shape=(-2, -3), parts={"data": part("float32", [6], 0, 24)}), f32(6)),
    "float shape": (tensor(shape=(2.5,), parts={"data": part("float32", [2], 0, 8)}), f32(2)),
    "astronomical shape": (tensor(shape=(10**30,), parts={"data": part("float32", [1], 0, 4)}), f32(1)),
    "flat codes for a matrix": int_row(q_shape=(ROWS * COLS,)),
    "LQER parts of the wrong shapes": int_row(lqer),
    "half the LQER parts": int_row({"lqer_a": lqer["lqer_a"]}),
    "complex data": (tensor(parts={"data": part("complex64", [2], 0, 16)}), np.zeros(2, np.complex64).tobytes()),
    "unicode data": (tensor(parts={"data": part("<U1", [2], 0, 8)}), b"\0" * 8),
    "float codes": (tensor("int_row", (ROWS, COLS), {"q": part("float32", [ROWS, COLS], 0, 4 * ROWS * COLS),
                                                     "scale": part("float16", [ROWS], 4 * ROWS * COLS, 2 * ROWS)},
                           bits=6), f32(ROWS * COLS) + np.ones(ROWS, np.float16).tobytes()),
    "parts as a list": (tensor(parts=[]), f32(2)),
    "negative stream": (tensor(shape=(1,), parts={"data": part("float32", [1], 0, 4, stream=-1)}), f32(1)),
    "offset past the stream": (tensor(shape=(1,), parts={"data": part("float32", [1], 10**30, 4)}), f32(1)),
    "row order with a repeat": (
        tensor("int_row", (2, 4), {
            "q_perm": part("int64", [2], 0, 16), "scale": part("float16", [2], 16, 4),
            "q": part("int8", [2, 4], 20, 8, transform={"transposed": True, "packed": False, "bits": 8,
                                                        "permuted": True})}, bits=8),
        np.array([0, 0], np.int64).tobytes() + np.ones(2, np.float16).tobytes() + np.arange(8, dtype=np.int8).tobytes()),
}


@pytest.mark.parametrize("case", CASES)
def test_crafted_artifact_is_rejected(case):
    index, payload = CASES[case]
    with pytest.raises(ArtifactError, match="malformed artifact"):
        decode_artifact(blob(index, payload))


def test_the_crafting_itself_makes_loadable_files():
    """The same construction with honest parts loads: the failures above are the lies, not the builder."""
    index, payload = int_row()
    art = decode_artifact(blob(index, payload))
    assert art.tensors["t"].parts["q"].shape == (ROWS, COLS)
    rank8 = {"lqer_a": np.zeros((ROWS, 8), np.int8), "lqer_a_scale": np.ones(1, np.float16),
             "lqer_b": np.zeros(8 * COLS, np.int8), "lqer_b_scale": np.ones(1, np.float16)}  # 8 x 8 = one group of 64
    assert decode_artifact(blob(*int_row(rank8))).tensors["t"].has_lqer
