"""The CaseOps codec (pgolf.data.caseops defines the transform and its operators): the encoder,
which `pgolf data prepare` runs on documents, and the streaming decoder, which gives the exact
inverse (`decode_caseops`, `pgolf check`) and the original bytes per token (`original_byte_counts`,
the val byte sidecar (§2.6): operators count 0, letters 1, any other character its UTF-8 length).
The decoder is a small state machine fed one piece of text at a time. Data tools' code, never a run's.
"""
from __future__ import annotations

import re
from typing import Iterable

from pgolf.data.caseops import ALLCAPS, CAPNEXT, ESC, OPERATORS, TITLE
from pgolf.errors import PgolfError

# Only words holding a capital change; a match always spans the whole maximal letter run.
_CASED_WORD_OR_OPERATOR = re.compile("[a-z]*[A-Z][A-Za-z]*|[\ue001-\ue004]")
_OPERATOR = re.compile("[\ue001-\ue004]")
_LEADING_LETTERS = re.compile("[A-Za-z]*")


class CaseOpsError(PgolfError, ValueError):
    """Transformed text that no original string encodes to."""


def _encode_match(m: re.Match) -> str:
    run = m.group()
    if run in OPERATORS:
        return ESC + run
    if len(run) >= 2 and run.isupper():
        return ALLCAPS + run.lower()
    out = [TITLE + run[0].lower() if run[0].isupper() else run[0]]
    out.extend(CAPNEXT + c.lower() if c.isupper() else c for c in run[1:])
    return "".join(out)


def encode_caseops(text: str) -> str:
    """Original text -> CaseOps text."""
    return _CASED_WORD_OR_OPERATOR.sub(_encode_match, text)


def _is_ascii_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


class CaseOpsDecoder:
    """Streaming inverse of `encode_caseops`; state carries across `feed` calls."""

    def __init__(self) -> None:
        self.pending_escape = False
        self.pending_mode: str | None = None  # TITLE or ALLCAPS, waiting for a word start
        self.pending_capnext = False
        self.active_allcaps = False  # inside a word opened by ALLCAPS
        self.in_word = False

    def feed(self, text: str) -> str:
        if not (self.pending_escape or self.pending_mode or self.pending_capnext) and not _OPERATOR.search(text):
            return self._feed_plain(text)
        out = []
        for ch in text:
            if self.pending_escape:
                if self.pending_mode is not None and not _is_ascii_letter(ch):
                    raise CaseOpsError("an escaped character cannot take a pending TITLE/ALLCAPS")
                self.pending_escape = False
                self.in_word = _is_ascii_letter(ch)
                if not self.in_word:
                    self.active_allcaps = False
                out.append(ch)
            elif ch == ESC:
                self.pending_escape = True
            elif ch == TITLE or ch == ALLCAPS:
                if self.pending_mode is not None or self.in_word or self.pending_capnext:
                    raise CaseOpsError(f"misplaced {'TITLE' if ch == TITLE else 'ALLCAPS'} marker")
                self.pending_mode = ch
            elif ch == CAPNEXT:
                if self.pending_capnext:
                    raise CaseOpsError("two CAPNEXT markers in a row")
                self.pending_capnext = True
            elif _is_ascii_letter(ch):
                if not self.in_word:
                    upper = self.pending_mode is not None or self.pending_capnext
                    self.active_allcaps = self.pending_mode == ALLCAPS
                    self.pending_mode = None
                    self.in_word = True
                else:
                    if self.pending_mode is not None:
                        raise CaseOpsError("a TITLE/ALLCAPS marker inside a word")
                    upper = self.active_allcaps or self.pending_capnext
                self.pending_capnext = False
                out.append(ch.upper() if upper else ch)
            else:
                if self.pending_mode is not None or self.pending_capnext:
                    raise CaseOpsError(f"a case marker followed by {ch!r}, not an ASCII letter")
                self.in_word = False
                self.active_allcaps = False
                out.append(ch)
        return "".join(out)

    def _feed_plain(self, text: str) -> str:
        """Fast path for text without operators and with nothing pending (most surfaces):
        only an ALLCAPS word continuing from the previous piece changes case."""
        lead = _LEADING_LETTERS.match(text).end()
        out = text[:lead].upper() + text[lead:] if (self.in_word and self.active_allcaps and lead) else text
        if lead < len(text):  # a non-letter ends the current word
            self.active_allcaps = False
            self.in_word = _is_ascii_letter(text[-1])
        elif lead and not self.in_word:  # a plain word starts
            self.active_allcaps = False
            self.in_word = True
        return out

    def finish(self) -> None:
        if self.pending_escape or self.pending_mode is not None or self.pending_capnext:
            raise CaseOpsError("text ends with a dangling CaseOps marker")


def decode_caseops(text: str) -> str:
    """CaseOps text -> original text (raises CaseOpsError on malformed input)."""
    dec = CaseOpsDecoder()
    out = dec.feed(text)
    dec.finish()
    return out


def original_byte_counts(surfaces: Iterable[str]) -> list[int]:
    """Original UTF-8 bytes contributed by each surface piece of a CaseOps document.

    `surfaces` are SentencePiece's surface strings in order (the slices of the
    transformed input each token covers). Their counts sum to the original document's
    UTF-8 length, less any leading/trailing whitespace the normalizer dropped.
    """
    dec = CaseOpsDecoder()
    counts = [len(dec.feed(s).encode("utf-8")) for s in surfaces]
    dec.finish()
    return counts
