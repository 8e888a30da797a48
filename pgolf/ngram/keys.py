"""Context and pair keys of the n-gram state, vectorised; identical to csrc/ngram_state.cpp.

A context key mixes the last `order-1` tokens (oldest first) as XOR_j (tok_j + 1) * C_j, then
MurmurHash3's finaliser. C_j are odd 64-bit constants drawn from splitmix64 with a fixed seed.
The numpy fallback groups positions by these keys, so it aliases exactly where the native table
would (a genuine 64-bit collision, ~N^2 / 2^65 expected pairs: about 6e-5 at N = 47.85M).
"""
from __future__ import annotations

import numpy as np

MAX_ORDER = 32
SEED = 0x70676F6C662D6E67  # "pgolf-ng"
MASK = (1 << 64) - 1


def _splitmix64(n: int, seed: int = SEED) -> list[int]:
    out, s = [], seed
    for _ in range(n):
        s = (s + 0x9E3779B97F4A7C15) & MASK
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out.append(z ^ (z >> 31))
    return out


SLOT = np.array([c | 1 for c in _splitmix64(MAX_ORDER)], dtype=np.uint64)  # SLOT[-1]: the pair's token


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place on a uint64 array (wrapping multiplies)."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


def context_keys(stream: np.ndarray, k: int) -> np.ndarray:
    """Key of the k tokens before each position i >= k of `stream` (length len(stream) - k)."""
    m = len(stream) - k
    h = np.zeros(max(m, 0), dtype=np.uint64)
    if m <= 0:
        return h
    for j in range(k):
        h ^= (stream[j:j + m].astype(np.uint64) + np.uint64(1)) * SLOT[j]
    return fmix64(h)
