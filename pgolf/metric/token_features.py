"""Fixed per-token features of a SentencePiece vocabulary: the 14 categories logit calibration
(PR #1924 / #1884, challenge-spec §5.13) learns one bias each for.

The PR names the families (length buckets, case, alpha/digit/punct, leading space, newline) but
not the exact definition (spec §8.7), so pgolf's is this, one bit per feature, from the piece
alone (its text as the tokenizer holds it, the leading marker removed):

    0-4   UTF-8 length of the text: 0, 1, 2-3, 4-6, 7 or more bytes (a byte piece is 1)
    5     capitalized: the first character is an uppercase letter
    6     all caps: at least two letters, all uppercase
    7-9   alpha / digit / punct: every character is a letter / a digit / neither (nor space)
    10    leading space: the piece began with the marker "▁"
    11    newline: the text holds a line feed (the byte piece <0x0A> included)
    12    byte fallback piece
    13    special: control, unknown or unused, or only private-use characters (CaseOps operators)

Like the byte LUTs (pgolf.metric.bytes) it is a table the tokenizer decides; ids past the
tokenizer (a padded vocabulary) have no bit set.
"""
from __future__ import annotations

import unicodedata

import numpy as np
import sentencepiece as spm

SPACE = "\u2581"
FEATURES = ("len0", "len1", "len2_3", "len4_6", "len7_plus", "capitalized", "all_caps", "alpha", "digit", "punct",
            "leading_space", "newline", "byte", "special")
NUM_FEATURES = len(FEATURES)
_BIT = {name: i for i, name in enumerate(FEATURES)}
_LENGTH_BUCKETS = ((0, "len0"), (1, "len1"), (3, "len2_3"), (6, "len4_6"))  # (longest, bucket)


def _length_bucket(n: int) -> str:
    return next((name for longest, name in _LENGTH_BUCKETS if n <= longest), "len7_plus")


def _char_class(text: str) -> list[str]:
    if not text:
        return []
    if all(ch.isalpha() for ch in text):
        return ["alpha"]
    if all(ch.isdigit() for ch in text):
        return ["digit"]
    return ["punct"] if all(not ch.isalnum() and not ch.isspace() for ch in text) else []


def _case(text: str) -> list[str]:
    letters = [ch for ch in text if ch.isalpha()]
    out = ["capitalized"] if text[:1].isupper() else []
    return out + (["all_caps"] if len(letters) >= 2 and all(ch.isupper() for ch in letters) else [])


def piece_features(sp: spm.SentencePieceProcessor, i: int) -> list[str]:
    """The feature names of piece `i`."""
    if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
        return ["len0", "special"]
    piece = sp.id_to_piece(i)
    if sp.is_byte(i):  # "<0xHH>"
        text = chr(int(piece[3:5], 16))
        return ["len1", "byte", *(_char_class(text) if text.isascii() and text.isprintable() else []),
                *(["newline"] if text == "\n" else [])]
    lead = piece.startswith(SPACE)
    text = piece[1:] if lead else piece
    if text and all(unicodedata.category(ch) == "Co" for ch in text):
        return [_length_bucket(len(text.encode("utf-8"))), "special", *(["leading_space"] if lead else [])]
    return [_length_bucket(len(text.encode("utf-8"))), *_case(text), *_char_class(text),
            *(["leading_space"] if lead else []), *(["newline"] if "\n" in text else [])]


def token_feature_codes(sp: spm.SentencePieceProcessor, table_size: int | None = None) -> np.ndarray:
    """int16 [max(vocab, table_size)]: bit k set when the piece has feature k (FEATURES[k])."""
    n = sp.vocab_size()
    codes = np.zeros(max(n, table_size or 0), dtype=np.int16)
    for i in range(n):
        codes[i] = sum(1 << _BIT[name] for name in set(piece_features(sp, i)))
    return codes
