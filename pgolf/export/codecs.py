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


def decompress(codec: str, data: bytes, max_bytes: int = 1 << 31) -> bytes:
    """Decompress, refusing output beyond `max_bytes` (a decompression bomb)."""
    try:
        if codec == "zlib":
            d = zlib.decompressobj()
            out = d.decompress(data, max_bytes)
            if d.unconsumed_tail or not d.eof:
                raise PgolfError(f"zlib payload is truncated or inflates beyond {max_bytes} bytes")
            return out
        if codec == "lzma":
            d = lzma.LZMADecompressor()
            out = d.decompress(data, max_length=max_bytes)
            if not d.eof:
                raise PgolfError(f"lzma payload is truncated or inflates beyond {max_bytes} bytes")
            return out
        if codec == "brotli":
            import brotli

            d = brotli.Decompressor()
            out = d.process(data, output_buffer_limit=max_bytes)
            if not d.is_finished():
                raise PgolfError(f"brotli payload is truncated or inflates beyond {max_bytes} bytes")
            return out
        if codec == "zstd":
            import zstandard

            # compress() records the content size in the frame; decompress allocates that much,
            # so check it first (max_output_size applies only to frames without one)
            if zstandard.frame_content_size(data) > max_bytes:
                raise PgolfError(f"zstd payload declares more than {max_bytes} bytes")
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=max_bytes)
    except PgolfError:
        raise
    except Exception as e:  # each library raises its own type
        raise PgolfError(f"{codec} payload does not decompress ({type(e).__name__}: {e})") from None
    raise PgolfError(f"unknown codec {codec!r}; expected one of {CODECS}")
