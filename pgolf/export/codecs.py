"""Byte compressors for artifacts, by name, at their strongest standard settings."""
from __future__ import annotations

import lzma
import zlib

from pgolf.errors import PgolfError

CODECS = ("zlib", "brotli", "zstd", "lzma")


def compress(codec: str, data: bytes) -> bytes:
    if codec == "zlib":
        return zlib.compress(data, level=9)
    if codec == "lzma":
        return lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
    if codec == "brotli":
        import brotli

        return brotli.compress(data, quality=11, lgwin=24)
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=22).compress(data)
    raise PgolfError(f"unknown codec {codec!r}; expected one of {CODECS}")


def decompress(codec: str, data: bytes) -> bytes:
    try:
        if codec == "zlib":
            return zlib.decompress(data)
        if codec == "lzma":
            return lzma.decompress(data)
        if codec == "brotli":
            import brotli

            return brotli.decompress(data)
        if codec == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompress(data)
    except (zlib.error, lzma.LZMAError, Exception) as e:  # each library raises its own type
        raise PgolfError(f"{codec} payload does not decompress ({type(e).__name__}: {e})") from None
    raise PgolfError(f"unknown codec {codec!r}; expected one of {CODECS}")
