"""The slow, literal reference of the online n-gram state: the truth the fast paths are tested against.

Python dicts keyed by exact token tuples (no hashing, so no aliasing), walked one position at a time
in scoring order, each position read before it is written.
"""
from __future__ import annotations

import numpy as np

from pgolf.ngram.settings import NgramSettings


def reference_hints(tokens: np.ndarray, spans: list[tuple[int, int]], settings: NgramSettings) -> tuple[np.ndarray, np.ndarray]:
    """(hint int32, confidence float32) per stream position; `spans` = (start, length) in scoring order."""
    k = settings.order - 1
    hint = np.full(len(tokens), -1, dtype=np.int32)
    conf = np.zeros(len(tokens), dtype=np.float32)
    contexts: dict[tuple[int, ...], list[int]] = {}  # context -> [total, top count, top token]
    pairs: dict[tuple[tuple[int, ...], int], int] = {}
    window: list[int] = []
    threshold = np.float32(settings.threshold)
    for start, length in spans:
        for pos in range(start, start + length):
            token = int(tokens[pos])
            if len(window) == k:
                ctx = tuple(window)
                state = contexts.get(ctx)
                if state is not None:  # read: only positions before this one are in the state
                    share = np.float32(state[1] / state[0])
                    conf[pos] = share
                    if share >= threshold:
                        hint[pos] = state[2]
                else:
                    state = contexts[ctx] = [0, 0, -1]
                count = pairs[(ctx, token)] = pairs.get((ctx, token), 0) + 1  # write, after the read
                state[0] += 1
                if count > state[1]:  # ties keep the older top token
                    state[1], state[2] = count, token
            window.append(token)
            if len(window) > k:
                window.pop(0)
    return hint, conf
