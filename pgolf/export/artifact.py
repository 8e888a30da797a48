"""The artifact file: quantized weights plus everything needed to rebuild the model.

Layout (no pickle anywhere, so loading a stranger's file runs no code):

    b"PGOLFART" | u16 version | u8 n | codec name (n bytes) | body | sha256 of all preceding bytes
    body = codec.compress(u32 index length | index JSON | tensor bytes)

The index names each tensor's scheme, original dtype and shape, and the dtype, shape,
offset and length of each stored part. Loading checks the magic, version and checksum
before decompressing, and every part's bounds before reading it: a damaged file raises
an error and never yields weights.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgolf.errors import PgolfError
from pgolf.export import codecs
from pgolf.export.quantize import Encoded, check_encoded
from pgolf.fileio import atomic_write_bytes

MAGIC = b"PGOLFART"
VERSION = 1
MAX_RAW_BYTES = 1 << 31  # a < 16 MB artifact never inflates this far; a crafted one is stopped here
PART_DTYPES = {"int8", "uint8", "int16", "int32", "int64", "float16", "float32", "float64", "bool"}


class ArtifactError(PgolfError):
    pass


@dataclass
class Artifact:
    model_config: dict
    quant: str
    codec: str
    tensors: dict[str, Encoded]
    meta: dict = field(default_factory=dict)


def encode_artifact(art: Artifact) -> bytes:
    index, chunks, offset = [], [], 0
    for name, e in art.tensors.items():
        parts = {}
        for pname, arr in e.parts.items():
            arr = np.ascontiguousarray(arr)
            if arr.dtype.name not in PART_DTYPES:
                raise ValueError(f"{name}.{pname}: dtype {arr.dtype} cannot be stored")
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            parts[pname] = {"dtype": arr.dtype.name, "shape": list(arr.shape), "offset": offset, "nbytes": len(raw)}
            chunks.append(raw)
            offset += len(raw)
        index.append({"name": name, "scheme": e.scheme, "dtype": e.dtype, "shape": list(e.shape), "parts": parts})
    header = json.dumps({"model_config": art.model_config, "quant": art.quant, "meta": art.meta, "tensors": index},
                        separators=(",", ":")).encode()
    body = codecs.compress(art.codec, struct.pack("<I", len(header)) + header + b"".join(chunks))
    codec = art.codec.encode("ascii")
    head = MAGIC + struct.pack("<HB", VERSION, len(codec)) + codec + body
    return head + hashlib.sha256(head).digest()


def decode_artifact(data: bytes, source: str = "artifact") -> Artifact:
    fixed = len(MAGIC) + 3
    if len(data) < fixed + 32 or data[:len(MAGIC)] != MAGIC:
        raise ArtifactError(f"{source}: not a pgolf artifact (bad magic or too short)")
    version, n = struct.unpack_from("<HB", data, len(MAGIC))
    if version != VERSION:
        raise ArtifactError(f"{source}: artifact format version {version}, this pgolf reads {VERSION}")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise ArtifactError(f"{source}: checksum mismatch; the file is corrupt or was modified")
    codec = data[fixed:fixed + n].decode("ascii", errors="replace")
    if codec not in codecs.CODECS:
        raise ArtifactError(f"{source}: unknown codec {codec!r}")
    try:
        raw = codecs.decompress(codec, data[fixed + n:-32], max_bytes=MAX_RAW_BYTES)
    except PgolfError as e:
        raise ArtifactError(f"{source}: {e}") from None
    try:
        return _parse_body(raw, codec, source)
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{source}: malformed index ({type(e).__name__}: {e})") from None


def _parse_body(raw: bytes, codec: str, source: str) -> Artifact:
    (hlen,) = struct.unpack_from("<I", raw, 0)
    header = json.loads(raw[4:4 + hlen])
    payload = memoryview(raw)[4 + hlen:]
    tensors = {}
    for entry in header["tensors"]:
        parts = {}
        for pname, p in entry["parts"].items():
            dtype = np.dtype(p["dtype"]).newbyteorder("<") if p["dtype"] in PART_DTYPES else None
            count = math.prod(p["shape"])
            end = p["offset"] + p["nbytes"]
            if dtype is None or p["nbytes"] != count * dtype.itemsize or p["offset"] < 0 or end > len(payload):
                raise ArtifactError(f"{source}: tensor {entry['name']} part {pname} has an invalid dtype, shape or extent")
            parts[pname] = np.frombuffer(payload[p["offset"]:end], dtype=dtype).reshape(p["shape"]).astype(dtype.newbyteorder("="))
        e = Encoded(entry["scheme"], entry["dtype"], tuple(entry["shape"]), parts)
        check_encoded(entry["name"], e)
        tensors[entry["name"]] = e
    return Artifact(header["model_config"], header["quant"], codec, tensors, header.get("meta", {}))


def read_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"artifact {path} does not exist")
    return decode_artifact(path.read_bytes(), str(path))


def write_artifact(path: str | Path, data: bytes) -> None:
    atomic_write_bytes(path, data)
