"""How an artifact lays its tensors' parts out in compressed streams (spec §5.12).

"plain": every part's bytes, in tensor order, in one stream (the baseline's torch.save+zlib,
without the pickle).

"grouped": the integer codes of the block matrices go to one stream per class
(tok_emb, mixer.c_q, mixer.c_k, mixer.c_v, mixer.proj, mlp.fc, mlp.proj; layers in order),
everything else (scales, LQER factors, small tensors, row orders) to a remainder stream.
Within a group each matrix is transformed before its bytes are concatenated:
- the "hot" groups (tok_emb, mixer.c_q, mlp.fc) reorder rows along a greedy L1
  nearest-neighbour chain from row 0, so similar rows sit together (the order is stored);
- every matrix is transposed (columns of codes compress better than rows);
- codes are stored either one per byte or bit-packed (6 bits: 4 codes in 3 bytes); each
  group keeps whichever of the two compresses smaller.
Each stream is compressed with the configured codec, or with "auto" the smallest of all
available ones. The index records, per part, its stream, offset, length and transform.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pgolf.export import codecs
from pgolf.quant.encoding import Encoded
from pgolf.quant.packing import pack, unpack

GROUPS = ("tok_emb", "mixer.c_q", "mixer.c_k", "mixer.c_v", "mixer.proj", "mlp.fc", "mlp.proj")
HOT_GROUPS = ("tok_emb", "mixer.c_q", "mlp.fc")


def code_group(name: str) -> str | None:
    if name == "tok_emb.weight":
        return "tok_emb"
    for g in GROUPS[1:]:
        if f".{g}." in name:
            return g
    return None


def l1_chain(rows: np.ndarray) -> np.ndarray:
    """Greedy nearest-neighbour order of the rows under L1 distance, starting at row 0."""
    x = torch.from_numpy(rows.astype(np.float32))
    n = x.shape[0]
    remaining = torch.ones(n, dtype=torch.bool)
    order = [0]
    remaining[0] = False
    current = x[0]
    for _ in range(n - 1):
        d = (x - current).abs().sum(dim=1)
        d[~remaining] = float("inf")
        nxt = int(torch.argmin(d))
        order.append(nxt)
        remaining[nxt] = False
        current = x[nxt]
    return np.asarray(order, dtype=np.int64)


@dataclass
class Stream:
    name: str
    raw: bytearray = field(default_factory=bytearray)
    codec: str = ""
    data: bytes = b""

    def add(self, b: bytes) -> tuple[int, int]:
        offset = len(self.raw)
        self.raw += b
        return offset, len(b)


def _compress(stream: Stream, codec: str) -> None:
    if codec == "auto":
        stream.codec, stream.data = codecs.smallest(bytes(stream.raw), codecs.available_codecs())
    else:
        stream.codec, stream.data = codec, codecs.compress(codec, bytes(stream.raw))


def _plain_entry(stream_id: int, stream: Stream, arr: np.ndarray) -> dict:
    arr = np.require(arr, requirements="C")  # not ascontiguousarray: it turns 0-d scalars into (1,)
    offset, n = stream.add(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "stream": stream_id, "offset": offset, "nbytes": n}


def lay_out(tensors: dict[str, Encoded], layout: str, codec: str) -> tuple[list[Stream], list[dict]]:
    """(compressed streams, index entries) for `tensors`."""
    if layout == "plain":
        streams = [Stream("all")]
        index = [_entry(name, e, {p: _plain_entry(0, streams[0], a) for p, a in e.parts.items()})
                 for name, e in tensors.items()]
        _compress(streams[0], codec)
        return streams, index

    streams = [Stream("remainder")] + [Stream(g) for g in GROUPS]
    members: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name, e in tensors.items():
        g = code_group(name) if e.scheme == "int_row" else None
        if g is not None:
            members[g].append(name)
    parts: dict[str, dict] = {name: {} for name in tensors}
    for gi, g in enumerate(GROUPS, start=1):
        _lay_out_group(g, gi, members[g], tensors, streams, parts, codec)
    for name, e in tensors.items():
        for p, arr in e.parts.items():
            if p not in parts[name]:
                parts[name][p] = _plain_entry(0, streams[0], arr)
    _compress(streams[0], codec)
    used = [s for s in streams if s.raw]
    renumber = {id(s): i for i, s in enumerate(used)}
    for entry_parts in parts.values():
        for p in entry_parts.values():
            p["stream"] = renumber[id(streams[p["stream"]])]
    return used, [_entry(name, e, parts[name]) for name, e in tensors.items()]


def _entry(name: str, e: Encoded, parts: dict) -> dict:
    return {"name": name, "scheme": e.scheme, "dtype": e.dtype, "shape": list(e.shape), "bits": e.bits, "parts": parts}


def _lay_out_group(g, gi, names, tensors, streams, parts, codec) -> None:
    if not names:
        return
    transformed = []
    for name in names:
        q = tensors[name].parts["q"]
        perm = None
        if g in HOT_GROUPS:
            perm = l1_chain(q)
            q = q[perm]
            parts[name]["q_perm"] = _plain_entry(0, streams[0], perm.astype(np.uint16 if len(perm) < 65536 else np.int64))
        transformed.append((name, np.ascontiguousarray(q.T), perm is not None))
    candidates = []
    for packed in (False, True):
        s = Stream(g)
        entries = {}
        for name, qt, permuted in transformed:
            bits = tensors[name].bits
            data = pack(qt, bits) if packed else qt.astype(np.int8)
            offset, n = s.add(np.ascontiguousarray(data).tobytes())
            entries[name] = {"dtype": "int8", "shape": list(qt.T.shape), "stream": gi, "offset": offset, "nbytes": n,
                             "transform": {"transposed": True, "packed": packed, "bits": bits, "permuted": permuted}}
        _compress(s, codec)
        candidates.append((len(s.data), s, entries))
    _, best, entries = min(candidates, key=lambda c: c[0])
    streams[gi] = best
    for name, entry in entries.items():
        parts[name]["q"] = entry


def read_part(entry: dict, stream: memoryview, perm: np.ndarray | None) -> np.ndarray:
    """One stored part back to its array (undoing a group transform)."""
    end = entry["offset"] + entry["nbytes"]
    if entry["offset"] < 0 or end > len(stream):
        raise ValueError(f"part extends past its stream ({end} > {len(stream)})")
    raw = stream[entry["offset"]:end]
    t = entry.get("transform")
    if t is None:
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        count = int(np.prod(entry["shape"], dtype=np.int64))
        if entry["nbytes"] != count * dtype.itemsize:
            raise ValueError("part length does not match its dtype and shape")
        return np.frombuffer(raw, dtype=dtype).reshape(entry["shape"]).astype(dtype.newbyteorder("="))
    rows, cols = entry["shape"]
    flat = np.frombuffer(raw, dtype=np.uint8 if t["packed"] else np.int8)
    qt = unpack(flat.reshape(cols, -1), t["bits"], rows) if t["packed"] else flat.reshape(cols, rows)
    q = np.ascontiguousarray(qt.T)
    if t["permuted"]:
        if perm is None or not np.array_equal(np.sort(perm), np.arange(rows)):
            raise ValueError("a permuted part without a valid row order (a permutation of its rows)")
        out = np.empty_like(q)
        out[perm.astype(np.int64)] = q
        q = out
    return q
