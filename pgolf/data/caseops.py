"""CaseOps (`lossless_caps_caseops_v1`, spec §5.1): a lossless case transform.

Over maximal runs of ASCII letters:
- lowercase word: unchanged
- ALLCAPS word of length >= 2: ALLCAPS + lowercase(word)
- otherwise: TITLE if the first letter is uppercase, then each later uppercase letter gets
  CAPNEXT before its lowercase form (so "The" -> TITLE "the", "iPhone" -> "i" CAPNEXT "phone")
Any literal U+E001..U+E004 in the input is escaped as ESC + that character.

The codec (the encoder, and the streaming decoder that also counts each token's original bytes
for the val sidecar) is pgolf.data.caseops_codec: the data tools and `pgolf check` run it, never a
run, which needs only what is here (`Tokenizer.transform` recognises a CaseOps tokenizer by its
operators; byte accounting leaves them uncounted in training weights).
"""
from __future__ import annotations

TITLE = "\ue001"
ALLCAPS = "\ue002"
CAPNEXT = "\ue003"
ESC = "\ue004"
OPERATORS = (TITLE, ALLCAPS, CAPNEXT, ESC)
NAME = "caseops_v1"
