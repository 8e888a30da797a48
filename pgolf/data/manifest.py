"""The dataset manifest (`manifest.json`, written last by `pgolf data prepare`): read strictly.

It records the tokenizer the shards were encoded with (its sha256) and every output file's
name, token count and sha256. Readers check what they use against it: a shard changed
after the export, or a different tokenizer with the same vocabulary size, would otherwise
give a wrong val_bpb without any error. A manifest that is not JSON or lacks a field is
an error naming the file and the field; a directory without one (the published exports)
is simply not checked.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from pgolf.errors import PgolfError
from pgolf.fileio import sha256_file

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "pgolf.prepare/1"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _need(obj: dict, key: str, kind, where: str):
    value = obj.get(key) if isinstance(obj, dict) else None
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise PgolfError(f"{where}: field {key!r} must be {name}, got {value!r:.80}")
    return value


def _check_file_entry(entry, where: str) -> None:
    name = _need(entry, "name", str, where)
    if Path(name).name != name or name in ("", ".", ".."):
        raise PgolfError(f"{where}: file name {name!r} must be a plain name inside the dataset directory")
    if _need(entry, "tokens", int, where) < 0:
        raise PgolfError(f"{where}: field 'tokens' must be non-negative")
    if not _SHA256.fullmatch(_need(entry, "sha256", str, where)):
        raise PgolfError(f"{where}: field 'sha256' must be 64 lowercase hex digits")


def _validate(m, path: Path) -> dict:
    if not isinstance(m, dict):
        raise PgolfError(f"{path}: must hold a JSON object, got {type(m).__name__}")
    tok = _need(m, "tokenizer", dict, str(path))
    if not _SHA256.fullmatch(_need(tok, "sha256", str, f"{path}: tokenizer")):
        raise PgolfError(f"{path}: tokenizer: field 'sha256' must be 64 lowercase hex digits")
    _need(tok, "vocab_size", int, f"{path}: tokenizer")
    _need(tok, "bos_id", int, f"{path}: tokenizer")
    splits = _need(m, "splits", dict, str(path))
    for split in ("val", "train"):
        entry = _need(splits, split, dict, f"{path}: splits")
        keys = ("shards", "sidecars") if split == "val" else ("shards",)
        for key in keys:
            for i, f in enumerate(_need(entry, key, list, f"{path}: splits.{split}")):
                _check_file_entry(f, f"{path}: splits.{split}.{key}[{i}]")
    return m


def read_manifest(directory: str | Path) -> dict | None:
    """The pgolf manifest of a dataset directory, validated; None when it has none (or a foreign one)."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise PgolfError(f"{path}: not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise PgolfError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); re-run `pgolf data prepare`") from None
    if isinstance(m, dict) and m.get("format") != MANIFEST_FORMAT:
        return None  # not written by pgolf: nothing recorded to check against
    return _validate(m, path)


def check_tokenizer(directory: str | Path, tokenizer_path: str | Path) -> None:
    """The tokenizer file is the one the dataset was prepared with (by sha256), when the manifest says."""
    m = read_manifest(directory)
    if m is None:
        return
    want, got = m["tokenizer"]["sha256"], sha256_file(tokenizer_path)
    if got != want:
        recorded = m["tokenizer"].get("path", "?")
        raise PgolfError(
            f"tokenizer {tokenizer_path} is not the one {Path(directory) / MANIFEST_NAME} was prepared with "
            f"(sha256 {got[:12]}… vs {want[:12]}…, recorded path {recorded}); scoring with it would give a wrong val_bpb"
        )


def check_split(directory: str | Path, split: str, files: list[Path], tokens: int) -> None:
    """The split's shards are the ones the manifest lists, with its token count (when it has one):
    a val split missing a shard would otherwise score a different, smaller set without a word."""
    m = read_manifest(directory)
    if m is None:
        return
    listed = m["splits"][split]["shards"]
    want_names, got_names = [e["name"] for e in listed], [p.name for p in files]
    if got_names != want_names:
        missing, extra = sorted(set(want_names) - set(got_names)), sorted(set(got_names) - set(want_names))
        raise PgolfError(f"{Path(directory) / MANIFEST_NAME}: the {split} shards on disk are not the ones it lists "
                         f"(missing: {', '.join(missing) or 'none'}; not listed: {', '.join(extra) or 'none'})")
    want_tokens = sum(e["tokens"] for e in listed)
    if tokens != want_tokens:
        raise PgolfError(f"{Path(directory) / MANIFEST_NAME}: the {split} shards hold {tokens:,} tokens, "
                         f"the manifest {want_tokens:,}")
