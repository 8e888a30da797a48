"""Byte compressors for artifacts, by name, at their strongest standard settings."""
from __future__ import annotations

import functools
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import zlib

from pgolf.errors import PgolfError

CODECS = ("zlib", "brotli", "zstd", "lzma", "lrzip")


@functools.cache
def lrzip_available() -> bool:
    return shutil.which("lrzip") is not None


def available_codecs() -> tuple[str, ...]:
    """Every codec this machine can run (lrzip is a system binary; the rest are wheels)."""
    return tuple(c for c in CODECS if c != "lrzip" or lrzip_available())


def smallest(data: bytes, codecs: tuple[str, ...]) -> tuple[str, bytes]:
    """(codec, compressed) of whichever codec compresses `data` smallest."""
    best = min(((c, compress(c, data)) for c in codecs), key=lambda cb: len(cb[1]))
    return best


def _lrzip(args: list[str], data: bytes) -> tuple[bytes, str]:
    """Run lrzip on `data` through temporary files (it works on files); return (output, stdout)."""
    if not lrzip_available():
        raise PgolfError("the lrzip codec needs the lrzip binary (apt-get install lrzip)")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        with open(src, "wb") as f:
            f.write(data)
        r = subprocess.run(["lrzip", "-q", "-f", *args, "-o", dst, src], capture_output=True, text=True)
        if r.returncode != 0:
            raise PgolfError(f"lrzip failed: {r.stderr.strip() or r.stdout.strip()}")
        with open(dst, "rb") as f:
            return f.read(), r.stdout


def _lrzip_size(data: bytes) -> int:
    """The decompressed size an lrzip stream declares (checked before inflating it)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.lrz")
        with open(path, "wb") as f:
            f.write(data)
        r = subprocess.run(["lrzip", "-i", path], capture_output=True, text=True)
    m = re.search(r"Decompressed file size:\s*([0-9,]+)", r.stdout + r.stderr)
    if r.returncode != 0 or not m:
        raise PgolfError("lrzip payload is not a valid lrzip stream")
    return int(m.group(1).replace(",", ""))


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
    if codec == "lrzip":
        return _lrzip(["-z", "-L", "9"], data)[0]  # ZPAQ context mixing, as the record
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
        if codec == "lrzip":
            if _lrzip_size(data) > max_bytes:
                raise PgolfError(f"lrzip payload declares more than {max_bytes} bytes")
            return _lrzip(["-d"], data)[0]
    except PgolfError:
        raise
    except Exception as e:  # each library raises its own type
        raise PgolfError(f"{codec} payload does not decompress ({type(e).__name__}: {e})") from None
    raise PgolfError(f"unknown codec {codec!r}; expected one of {CODECS}")
