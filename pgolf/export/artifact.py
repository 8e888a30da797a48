"""The artifact file: quantized weights plus everything needed to rebuild the model.

Layout (no pickle anywhere, so loading a stranger's file runs no code):

    b"PGOLFART" | u16 version | u16 n
    n x (u8 name length, name, u8 codec length, codec, u64 compressed length)
    n compressed streams
    sha256 of all preceding bytes

Stream 0 is the index (JSON, zlib): the model config, run metadata, and for each tensor
its scheme, dtype, shape, code width and, per part, the stream, offset, length and any
transform (see pgolf.export.layout). Loading checks magic, version and checksum before
decompressing anything (each stream's output is bounded), and every part's extent and
shape before reading it: a damaged file raises ArtifactError and never yields weights.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from pgolf.errors import PgolfError
from pgolf.export import codecs
from pgolf.export.layout import lay_out, read_part
from pgolf.fileio import atomic_write_bytes
from pgolf.model.roles import Role
from pgolf.quant.encoding import Encoded, check_encoded

MAGIC = b"PGOLFART"
# 3: the layer plan renamed each block's sequence mixer `attn` -> `mixer` (blocks.N.mixer.*),
#    so version 2 files hold keys this model no longer has.
VERSION = 3
VERSION_NOTES = {2: "before version 3 renamed the block mixers blocks.N.attn.* to blocks.N.mixer.*"}
MAX_RAW_BYTES = 1 << 31  # a < 16 MB artifact never inflates this far; a crafted one is stopped here


class ArtifactError(PgolfError):
    pass


@dataclass
class Artifact:
    model_config: dict
    tensors: dict[str, Encoded]
    meta: dict = field(default_factory=dict)
    roles: dict[str, Role] | None = None  # the tensors' parameter roles, for the grouped layout (not stored)


@dataclass(frozen=True)
class StreamReport:
    name: str
    codec: str
    raw_bytes: int
    stored_bytes: int


def encode_artifact(art: Artifact, layout: str = "plain", codec: str = "zlib") -> tuple[bytes, list[StreamReport]]:
    """The file's bytes, and what each stream holds (for the per-part size report)."""
    streams, index = lay_out(art.tensors, layout, codec, art.roles)
    header = json.dumps({"model_config": art.model_config, "meta": art.meta, "layout": layout, "tensors": index},
                        separators=(",", ":")).encode()
    all_streams = [("index", "zlib", len(header), codecs.compress("zlib", header))]
    all_streams += [(s.name, s.codec, len(s.raw), s.data) for s in streams]  # (name, codec, raw size, data)
    head = MAGIC + struct.pack("<HH", VERSION, len(all_streams))
    for name, codec, _, data in all_streams:
        n, c = name.encode("ascii"), codec.encode("ascii")
        head += struct.pack("<B", len(n)) + n + struct.pack("<B", len(c)) + c + struct.pack("<Q", len(data))
    body = head + b"".join(data for *_, data in all_streams)
    reports = [StreamReport(name, codec, raw_size, len(data)) for name, codec, raw_size, data in all_streams]
    return body + hashlib.sha256(body).digest(), reports


def _read_table(data: bytes, source: str) -> tuple[list[tuple[str, str, int]], int]:
    pos = len(MAGIC) + 4
    (n,) = struct.unpack_from("<H", data, len(MAGIC) + 2)
    table = []
    for _ in range(n):
        (ln,) = struct.unpack_from("<B", data, pos)
        name = data[pos + 1:pos + 1 + ln].decode("ascii")
        pos += 1 + ln
        (lc,) = struct.unpack_from("<B", data, pos)
        codec = data[pos + 1:pos + 1 + lc].decode("ascii")
        pos += 1 + lc
        (size,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        if codec not in codecs.CODECS:
            raise ArtifactError(f"{source}: stream {name!r} uses unknown codec {codec!r}")
        table.append((name, codec, size))
    if pos + sum(size for *_, size in table) + 32 != len(data):
        raise ArtifactError(f"{source}: stream lengths do not add up to the file size")
    return table, pos


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# The run metadata pgolf reads back (pgolf.export.export.run_meta): each field's check and what it must be.
# A checksum only proves the file is as written, not that what was written is sane.
_META_FIELDS = {
    "seq_len": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "stride": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "steps": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "seed": (_is_int, "an integer"),
    "data_path": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "tokenizer_path": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "tokenizer_sha256": (lambda v: isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) is not None,
                         "64 lowercase hex digits"),
}


def check_meta(meta: dict) -> None:
    """Every known run-metadata field present in `meta` has its type and range (unknown keys pass)."""
    for key, (ok, what) in _META_FIELDS.items():
        if key in meta and not ok(meta[key]):
            raise PgolfError(f"meta field {key!r} must be {what}, got {meta[key]!r:.80}")


def decode_artifact(data: bytes, source: str = "artifact") -> Artifact:
    if len(data) < len(MAGIC) + 4 + 32 or data[:len(MAGIC)] != MAGIC:
        raise ArtifactError(f"{source}: not a pgolf artifact (bad magic or too short)")
    (version,) = struct.unpack_from("<H", data, len(MAGIC))
    if version < VERSION:
        why = VERSION_NOTES.get(version, "an older layout")
        raise ArtifactError(f"{source}: artifact format version {version} was written by an older pgolf ({why}); "
                            f"this pgolf reads version {VERSION}: score it with the pgolf that wrote it")
    if version > VERSION:
        raise ArtifactError(f"{source}: artifact format version {version} is newer than this pgolf reads "
                            f"({VERSION}): update pgolf")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise ArtifactError(f"{source}: checksum mismatch; the file is corrupt or was modified")
    try:
        table, pos = _read_table(data, source)
        raw = []
        for name, codec, size in table:
            raw.append(memoryview(codecs.decompress(codec, data[pos:pos + size], max_bytes=MAX_RAW_BYTES)))
            pos += size
        header = json.loads(bytes(raw[0]))
        tensors = {}
        streams = raw[1:]

        def stream(spec: dict) -> memoryview:
            if not (isinstance(spec["stream"], int) and 0 <= spec["stream"] < len(streams)):
                raise ValueError(f"part refers to stream {spec['stream']!r} of {len(streams)}")
            return streams[spec["stream"]]

        for entry in header["tensors"]:
            perm = read_part(entry["parts"]["q_perm"], stream(entry["parts"]["q_perm"]), None) \
                if "q_perm" in entry["parts"] else None
            parts = {p: read_part(spec, stream(spec), perm) for p, spec in entry["parts"].items() if p != "q_perm"}
            e = Encoded(entry["scheme"], entry["dtype"], tuple(entry["shape"]), parts, int(entry.get("bits", 0)))
            check_encoded(entry["name"], e)
            tensors[entry["name"]] = e
        model_config, meta = header["model_config"], header.get("meta", {})
        if not isinstance(model_config, dict) or not isinstance(meta, dict):
            raise ValueError("model_config and meta must be objects")
        check_meta(meta)
    except PgolfError as e:
        raise ArtifactError(f"{source}: {e}") from None
    except Exception as e:  # whatever a crafted file triggers, it must not escape as anything but this
        raise ArtifactError(f"{source}: malformed artifact ({type(e).__name__}: {e})") from None
    return Artifact(model_config, tensors, meta)


def read_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"artifact {path} does not exist")
    return decode_artifact(path.read_bytes(), str(path))


def write_artifact(path: str | Path, data: bytes) -> None:
    atomic_write_bytes(path, data)
