"""The numpy fallback: the same hints as the native online pass, computed offline by sorting.

Used when the C++ extension is absent. For each position i (in scoring order) with a full context,
the online state read at i holds exactly the earlier positions with the same context key. Grouping
positions by key (a stable sort keeps them in scoring order) turns the online pass into prefix
statistics per group:
- total before i: i's rank in its group;
- count of (context, token) up to i: the rank of i among its group's equal tokens, plus one;
- top count after i: the running maximum of that count over the group;
- top token after i: the token of the last position whose count set a new maximum (the maximum
  grows by exactly one at such a position; a count that only ties it keeps the older token).
The read at i sees the group's state after the previous member. No state is ever built, so "read
before write" holds by construction: i's own token is excluded by reading the previous member's
running values. Memory: a dozen int64 arrays of the stream's length (5.7 GB peak RSS measured at
47.85M tokens, against 4 GB for the native pass; benchmarks/RESULTS.md).
"""
from __future__ import annotations

import numpy as np

from pgolf.ngram.keys import context_keys
from pgolf.ngram.settings import NgramSettings


def _group_starts(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is the first of its group, rank within its group) for an already-sorted key array."""
    first = np.empty(len(sorted_keys), dtype=bool)
    first[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    idx = np.arange(len(sorted_keys), dtype=np.int64)
    start = np.maximum.accumulate(np.where(first, idx, 0))
    return first, idx - start


def _prefix_hints(keys: np.ndarray, y: np.ndarray, vocab_size: int, settings: NgramSettings):
    """Per context position (scoring order): (hint, confidence), from keys and the tokens scored there."""
    m = len(keys)
    order_c = np.argsort(keys, kind="stable")
    first, total_before = _group_starts(keys[order_c])
    gid = np.cumsum(first, dtype=np.int64) - 1
    ys = y[order_c].astype(np.int64)
    # (context, token) occurrence count up to and including each member, in context-sorted order
    composite = gid * vocab_size + ys
    order_p = np.argsort(composite, kind="stable")
    _, pair_rank = _group_starts(composite[order_p])
    pair_count = np.empty(m, dtype=np.int64)
    pair_count[order_p] = pair_rank + 1
    del composite, order_p, pair_rank
    offset = gid * (m + 1)  # lifts each group above every earlier one: one running max, reset per group
    top_count = np.maximum.accumulate(pair_count + offset) - offset
    del offset
    prev_top = np.where(first, 0, np.roll(top_count, 1))
    idx = np.arange(m, dtype=np.int64)
    last_new_max = np.maximum.accumulate(np.where(pair_count > prev_top, idx, -1))  # a group's first always qualifies
    top_token = ys[last_new_max]
    del pair_count, last_new_max, idx
    # the read at a member: the state after the group's previous member
    seen = total_before > 0
    share = np.zeros(m, dtype=np.float32)
    share[seen] = (np.roll(top_count, 1)[seen] / total_before[seen]).astype(np.float32)
    hint = np.full(m, -1, dtype=np.int32)
    fire = seen & (share >= np.float32(settings.threshold))
    hint[fire] = np.roll(top_token, 1)[fire]
    out_hint = np.empty(m, dtype=np.int32)
    out_conf = np.empty(m, dtype=np.float32)
    out_hint[order_c] = hint
    out_conf[order_c] = share
    return out_hint, out_conf


def numpy_hints(tokens: np.ndarray, positions: np.ndarray, vocab_size: int, settings: NgramSettings):
    """(hint int32, confidence float32) per stream position; `positions` = stream positions in scoring order."""
    k = settings.order - 1
    hint = np.full(len(tokens), -1, dtype=np.int32)
    conf = np.zeros(len(tokens), dtype=np.float32)
    stream = tokens[positions]
    if len(stream) > k:
        h, c = _prefix_hints(context_keys(stream, k), stream[k:], vocab_size, settings)
        hint[positions[k:]] = h
        conf[positions[k:]] = c
    return hint, conf
