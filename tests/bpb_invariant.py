"""The bytes/token invariant (spec §3.3) as a reusable test helper.

For a fixed val stream and tokenizer, every eval mode must report the same token count
(every target scored once) and the same byte count, so (val_loss / ln 2) / val_bpb equals
a constant, bytes per token. Eval-mode tests call `assert_bpb_invariant` with an
independently computed ground truth for the bytes.
"""
from __future__ import annotations

import math

import numpy as np

from pgolf.metric.bpb import BPBResult

# Published constants for the official val sets (spec §3.3), for runs on the real data.
# sp1024/sp8192 come from streams truncated to a multiple of the eval seq_len (1024/2048);
# the CaseOps figure is the TTT path's, which scores the whole stream.
KNOWN_BYTES_PER_TOKEN = {"sp1024": 2.44230, "sp8192": 3.72663, "caseops": 3.157152}


def decoded_document_bytes(sp, tokens, bos_id: int) -> int:
    """Ground truth independent of any LUT: UTF-8 bytes of SentencePiece's decode of each document."""
    tokens = np.asarray(tokens)
    starts = np.flatnonzero(tokens == bos_id).tolist() + [len(tokens)]
    total = 0
    for a, b in zip(starts[:-1], starts[1:]):
        total += len(sp.decode(tokens[a + 1:b].tolist()).encode("utf-8"))
    return total


def assert_bpb_invariant(result: BPBResult, n_tokens: int, expected_bytes: int, end: int | None = None) -> None:
    end = n_tokens if end is None else end
    assert result.token_count == end - 1, f"scored {result.token_count} targets, expected {end - 1}"
    assert result.byte_count == expected_bytes, f"counted {result.byte_count} bytes, ground truth {expected_bytes}"
    ratio = (result.val_loss / math.log(2)) / result.val_bpb
    assert math.isclose(ratio, expected_bytes / (end - 1), rel_tol=1e-12), (ratio, expected_bytes / (end - 1))
