"""Loader of the C++ state build (csrc/ngram_state.cpp, built by `python setup.py build_ext` into
pgolf/ngram/_ngram_state*.so) through ctypes. `load()` returns None where it was not built; the
caller then uses the numpy fallback (pgolf.ngram.fallback), which is tested to give equal hints.
"""
from __future__ import annotations

import ctypes
import importlib.util
from functools import lru_cache

import numpy as np

from pgolf.errors import PgolfError
from pgolf.ngram.settings import NgramSettings

ABI_VERSION = 1
LOAD_FACTOR = 0.6  # table buckets = positions / 0.6: linear probes stay short
MODULE = "pgolf.ngram._ngram_state"
_ERRORS = {-1: "invalid arguments", -3: "out of memory for the hash tables", -4: "a hash table filled up"}

_i64p = ctypes.POINTER(ctypes.c_int64)


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The built library, or None where it is absent. A library of another ABI is an error, not a fallback."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or spec.origin is None:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError as e:
        raise PgolfError(f"{spec.origin}: cannot be loaded ({e}); rebuild with `python setup.py build_ext --inplace` "
                         "or delete it to use the numpy fallback") from None
    lib.pgolf_ngram_abi_version.restype = ctypes.c_int
    if lib.pgolf_ngram_abi_version() != ABI_VERSION:
        raise PgolfError(f"{spec.origin}: n-gram ABI {lib.pgolf_ngram_abi_version()}, expected {ABI_VERSION}; "
                         "rebuild with `python setup.py build_ext --inplace`")
    lib.pgolf_ngram_context_key.restype = ctypes.c_uint64
    lib.pgolf_ngram_context_key.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.pgolf_ngram_build.restype = ctypes.c_int
    lib.pgolf_ngram_build.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, _i64p, _i64p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32,
        ctypes.c_float, ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p, _i64p,
    ]
    return lib


def native_hints(lib: ctypes.CDLL, tokens: np.ndarray, spans: np.ndarray, vocab_size: int,
                 settings: NgramSettings) -> tuple[np.ndarray, np.ndarray]:
    """(hint int32, confidence float32) per stream position; tokens int32 contiguous, spans int64 (n, 2)."""
    hint = np.full(len(tokens), -1, dtype=np.int32)
    conf = np.zeros(len(tokens), dtype=np.float32)
    starts = np.ascontiguousarray(spans[:, 0], dtype=np.int64)
    lens = np.ascontiguousarray(spans[:, 1], dtype=np.int64)
    stats = np.zeros(2, dtype=np.int64)
    rc = lib.pgolf_ngram_build(
        tokens.ctypes.data, len(tokens), starts.ctypes.data_as(_i64p), lens.ctypes.data_as(_i64p), len(starts),
        vocab_size, settings.order, settings.threshold, LOAD_FACTOR, hint.ctypes.data, conf.ctypes.data,
        stats.ctypes.data_as(_i64p))
    if rc == -2:
        raise PgolfError(f"tokens: position {stats[1]} holds {tokens[stats[1]]}, outside [0, {vocab_size})")
    if rc != 0:
        raise PgolfError(f"n-gram state build failed: {_ERRORS.get(rc, f'code {rc}')}")
    return hint, conf
