"""How many bytes the code counts for, explicitly (spec §1.2).

"raw": the UTF-8 size of every source file a training run needs (`code_files`). "wrapped":
the size of a real self-extracting script (base85 of an lzma'd tar of those files, plus a
two-line loader) that runs `python -m pgolf.train` from the extracted copy; reviewers accept
such wrappers. Both are measured on the files themselves, never estimated.
"""
from __future__ import annotations

import base64
import io
import lzma
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pgolf.config import PRESET_DIR
from pgolf.export.trace import archive_name, import_closure

CODE_MODES = ("raw", "wrapped")


@dataclass(frozen=True)
class CodeBytes:
    mode: str
    files: tuple[str, ...]
    raw_bytes: int
    counted_bytes: int


def code_files() -> list[tuple[str, Path]]:
    """(archive name, file) for every source file a training run needs: the import closure of
    `python -m pgolf.train` and of the artifact scorer (pgolf.export.trace: module-level and
    function-level imports, kernels loaded by name; the CUDA sources in csrc/ when pgolf._C is
    imported, since they add capability), and the presets. Tools a run never imports (the data
    pipeline's writers, check, submit, stats, the rest of the CLI) are not shipped or counted."""
    closure = import_closure()
    files = [(archive_name(module, path), path) for module, path in closure.modules.items()]
    configs = PRESET_DIR.resolve()
    files += [(f"pgolf/{p.relative_to(configs.parent).as_posix()}", p) for p in sorted(configs.glob("*.toml"))]
    files += [(f"csrc/{p.name}", p) for p in closure.native]
    return sorted(files)


def build_wrapper(files: list[tuple[str, Path]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, path in files:
            info = tarfile.TarInfo(name)
            data = path.read_bytes()
            info.size, info.mtime, info.mode = len(data), 0, 0o644  # reproducible bytes
            tar.addfile(info, io.BytesIO(data))
    blob = base64.b85encode(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME)).decode("ascii")
    return (
        "import base64,io,lzma,sys,tarfile,tempfile\n"
        "d=tempfile.mkdtemp();tarfile.open(fileobj=io.BytesIO(lzma.decompress(base64.b85decode("
        f"'{blob}')))).extractall(d,filter='data');sys.path.insert(0,d)\n"
        "import runpy;runpy.run_module('pgolf.train',run_name='__main__')\n"
    ).encode("ascii")


def count_code_bytes(mode: str) -> CodeBytes:
    files = code_files()
    raw = sum(p.stat().st_size for _, p in files)
    counted = raw if mode == "raw" else len(build_wrapper(files))
    return CodeBytes(mode, tuple(name for name, _ in files), raw, counted)
