"""`pgolf data inspect`: validate a dataset directory end to end and summarise it.

Checks every shard's header, size and (with a tokenizer) id range, the sidecar's pairing
with the val shards, and, when the directory has a pgolf manifest, every file's sha256
and token count against it. With a tokenizer it also reports the val split's canonical
byte total and bytes/token, the constant of spec §3.3.
"""
from __future__ import annotations

import json
from pathlib import Path

from pgolf.data import shards
from pgolf.data.prepare import MANIFEST_FORMAT, MANIFEST_NAME
from pgolf.data.tokenizer import load_tokenizer
from pgolf.errors import PgolfError
from pgolf.fileio import sha256_file


def _check_against_manifest(directory: Path, manifest: dict) -> int:
    checked = 0
    for split, entry in manifest.get("splits", {}).items():
        for f in [*entry.get("shards", []), *entry.get("sidecars", [])]:
            path = directory / f["name"]
            if not path.is_file():
                raise PgolfError(f"{path}: listed in {MANIFEST_NAME} but missing")
            if shards.read_header(path) != f["tokens"]:
                raise shards.ShardError(path, f"holds {shards.read_header(path)} tokens, {MANIFEST_NAME} says {f['tokens']}")
            if sha256_file(path) != f["sha256"]:
                raise shards.ShardError(path, f"sha256 differs from {MANIFEST_NAME}: the file changed after it was written")
            checked += 1
    return checked


def inspect_dataset(directory: str | Path, tokenizer_path: str | Path | None = None, verify_hashes: bool = True) -> dict:
    directory = Path(directory)
    tok = load_tokenizer(tokenizer_path) if tokenizer_path else None
    vocab = tok.vocab_size if tok else None
    report: dict = {"directory": str(directory)}
    for split in shards.SPLITS:
        paths = shards.list_token_shards(directory, split)
        report[split] = {"shards": len(paths), "tokens": sum(int(shards.read_shard(p, vocab).size) for p in paths)}
    if not report["val"]["shards"]:
        raise PgolfError(f"{directory}: no fineweb_val_NNNNNN.bin shards")
    sidecars = shards.list_sidecar_shards(directory)
    report["val"]["sidecar_shards"] = len(sidecars)

    manifest_path = directory / MANIFEST_NAME
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") == MANIFEST_FORMAT:
            report["manifest_files_verified"] = _check_against_manifest(directory, manifest) if verify_hashes else 0

    if tok is not None:
        from pgolf.metric.valset import load_val_set  # torch only when bytes are asked for

        val = load_val_set(directory, tok)
        scored_bytes = int(val.position_bytes.sum())
        report["val"].update(byte_source=val.byte_source, scored_tokens=len(val) - 1, scored_bytes=scored_bytes,
                             bytes_per_token=scored_bytes / (len(val) - 1))
    return report
