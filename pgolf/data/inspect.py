"""`pgolf data inspect`: validate a dataset directory end to end and summarise it.

Checks every shard's header, size and (with a tokenizer) id range, the sidecar's pairing
with the val shards, and, when the directory has a pgolf manifest, every file's sha256
and token count against it. With a tokenizer it also reports the val split's canonical
byte total and bytes/token, the constant of spec §3.3.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pgolf.data import shard_writer, shards
from pgolf.data.manifest import MANIFEST_NAME, read_manifest
from pgolf.data.tokenizer import load_tokenizer
from pgolf.errors import PgolfError
from pgolf.fileio import sha256_file


def _check_against_manifest(directory: Path, manifest: dict, verify_hashes: bool) -> int:
    """Every listed file is there with its token count (and sha256); every shard there is listed."""
    checked, listed = 0, set()
    for split, entry in manifest["splits"].items():
        for f in [*entry.get("shards", []), *entry.get("sidecars", [])]:
            path = directory / f["name"]
            listed.add(f["name"])
            if not path.is_file():
                raise PgolfError(f"{path}: listed in {MANIFEST_NAME} but missing")
            if shards.read_header(path) != f["tokens"]:
                raise shards.ShardError(path, f"holds {shards.read_header(path)} tokens, {MANIFEST_NAME} says {f['tokens']}")
            if verify_hashes and sha256_file(path) != f["sha256"]:
                raise shards.ShardError(path, f"sha256 differs from {MANIFEST_NAME}: the file changed after it was written")
            checked += 1
    extra = [p.name for p in shard_writer.list_any_shards(directory) if p.name not in listed]
    if extra:
        raise shards.ShardError(directory / extra[0], f"not listed in {MANIFEST_NAME}: it was not written by this export")
    return checked


def inspect_dataset(directory: str | Path, tokenizer_path: str | Path | None = None, verify_hashes: bool = True) -> dict:
    directory = Path(directory)
    tok = load_tokenizer(tokenizer_path) if tokenizer_path else None
    vocab = tok.vocab_size if tok else None
    manifest = read_manifest(directory) if directory.is_dir() else None
    report: dict = {"directory": str(directory)}
    for split in shards.SPLITS:
        paths = shards.list_token_shards(directory, split)
        report[split] = {"shards": len(paths), "tokens": sum(int(shards.read_shard(p, vocab).size) for p in paths)}
    if not report["val"]["shards"]:
        raise PgolfError(f"{directory}: no fineweb_val_NNNNNN.bin shards")
    sidecars = shards.list_sidecar_shards(directory)
    report["val"]["sidecar_shards"] = len(sidecars)
    if sidecars:  # pairing, BOS credits and a non-zero total, whether or not a tokenizer needs it
        val_tokens = shards.load_split(directory, "val", vocab)
        bos = tok.bos_id if tok else manifest["tokenizer"]["bos_id"] if manifest else int(val_tokens[0])
        shards.load_sidecar(directory, np.asarray(val_tokens), bos)

    if manifest is not None:
        report["manifest_files_verified"] = _check_against_manifest(directory, manifest, verify_hashes)
        report["manifest_hashes_verified"] = verify_hashes

    if tok is not None:
        from pgolf.metric.valset import load_val_set  # torch only when bytes are asked for

        val = load_val_set(directory, tok)  # also checks the tokenizer against the manifest's sha256
        scored_bytes = int(val.position_bytes.sum())
        report["val"].update(byte_source=val.byte_source, scored_tokens=len(val) - 1, scored_bytes=scored_bytes,
                             bytes_per_token=scored_bytes / (len(val) - 1))
    return report
