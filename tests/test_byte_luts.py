"""Canonical byte LUTs against ground truth, for every tokenizer the challenge used.

What the LUT counts: the bytes of the text *as the tokenizer's normalizer left it*. All
the challenge's models use nmt_nfkc with remove_extra_whitespaces, which changes real
text: newlines and whitespace runs become one space, outer whitespace is dropped and
NFKC folds compatibility characters. So the LUT total is checked two ways:
- against the UTF-8 bytes of SentencePiece's own decode of each document (always), and
- against the raw text's UTF-8 bytes, on lines the normalizer leaves unchanged.
Models without byte fallback (the lab's 1024/2048/4096) map unseen characters to <unk>,
which the LUT counts as 0 bytes and decode renders as " ⁇ "; they are checked on the
documents they encode without <unk>.
"""
import numpy as np
import pytest
import torch

from bpb_invariant import decoded_document_bytes
from conftest import CASEOPS_MODEL, shared_tokenizer_paths
from pgolf.data.caseops_codec import encode_caseops
from pgolf.data.encode import document_tokens, encode_with_surfaces
from pgolf.data.tokenizer import load_tokenizer
from pgolf.errors import PgolfError
from pgolf.metric.bytes import SPACE, ByteLUT, position_bytes_for


def stream(tok, docs):
    return np.concatenate([document_tokens(tok, d) for d in docs])


def lut_total(tok, tokens):
    return int(ByteLUT.from_sentencepiece(tok.sp).position_bytes(torch.from_numpy(tokens))[1:].sum())


def covered_docs(tok, docs):
    """Documents the tokenizer encodes without <unk>."""
    unk = tok.sp.unk_id()
    return [d for d in docs if unk not in tok.sp.encode(d)]


def untouched_lines(tok, docs, limit=400):
    """Lines of real text that the tokenizer's normalizer leaves exactly as they are."""
    lines = [ln for d in docs for ln in d.split("\n") if ln.strip()]
    keep = [ln for ln in lines if tok.sp.decode(tok.sp.encode(ln)) == ln]
    return keep[:limit]


def check_lut_against_ground_truth(tok, docs):
    docs = covered_docs(tok, docs)
    assert len(docs) >= 20, "too few documents without <unk> to test on"
    tokens = stream(tok, docs)
    assert lut_total(tok, tokens) == decoded_document_bytes(tok.sp, tokens, tok.bos_id)
    # The normalizer does change real documents, so the two checks are different checks.
    assert any(tok.sp.decode(tok.sp.encode(d)) != d for d in docs)
    lines = untouched_lines(tok, docs)
    assert len(lines) >= 20
    assert lut_total(tok, stream(tok, lines)) == sum(len(ln.encode("utf-8")) for ln in lines)


# Every untransformed model; the CaseOps model is scored with its sidecar (tests below).
@pytest.mark.parametrize("model", [p for p in shared_tokenizer_paths() if p != CASEOPS_MODEL], ids=lambda p: p.name)
def test_shared_tokenizer_lut_matches_decoded_bytes(model, fineweb_docs):
    check_lut_against_ground_truth(load_tokenizer(model), fineweb_docs)


def test_self_trained_tokenizer_lut_matches_decoded_bytes(own_tokenizer, heldout_docs):
    assert own_tokenizer.transform == "identity"
    check_lut_against_ground_truth(own_tokenizer, heldout_docs)


def test_lut_rules(own_tokenizer):
    """The §3.1 rules, piece by piece, on the challenge's sp1024 (or, without ../shared, the suite's own model)."""
    paths = [p for p in shared_tokenizer_paths() if p.name == "fineweb_1024_bpe_bytefallback.model"]
    sp = load_tokenizer(paths[0]).sp if paths else own_tokenizer.sp
    lut = ByteLUT.from_sentencepiece(sp, table_size=1100)
    assert lut.base_bytes.dtype == torch.int16 and lut.base_bytes.numel() == 1100
    for i in (0, 1, 2, 3):  # <pad> <s> </s> <unk>: skipped, 0 bytes, boundary
        assert (int(lut.base_bytes[i]), bool(lut.has_leading_space[i]), bool(lut.is_boundary[i])) == (0, False, True)
    assert bool(lut.is_boundary[1050]) and int(lut.base_bytes[1050]) == 0  # padding past the vocab
    byte = sp.piece_to_id("<0xE6>")
    assert (int(lut.base_bytes[byte]), bool(lut.is_boundary[byte])) == (1, False)
    space = sp.piece_to_id(SPACE)
    assert (int(lut.base_bytes[space]), bool(lut.has_leading_space[space])) == (0, True)
    the = sp.piece_to_id(SPACE + "the")
    assert (int(lut.base_bytes[the]), bool(lut.has_leading_space[the])) == (3, True)
    bos = torch.tensor([1])
    assert lut.target_bytes(bos, torch.tensor([the])).item() == 3  # no space credited after a boundary
    assert lut.target_bytes(torch.tensor([byte]), torch.tensor([the])).item() == 4


def pr1791_lut(sp):
    """The GDN lineage's LUT (spec §3.4.1): the leading space counted in base_bytes (and again
    at eval), byte pieces counted as the 6 characters of '<0xNN>', control pieces counted,
    and only control/unknown treated as boundaries."""
    n = sp.vocab_size()
    base = np.zeros(n, np.float32)
    lead = np.zeros(n, bool)
    boundary = np.zeros(n, bool)
    for i in range(n):
        piece = sp.id_to_piece(i)
        if sp.is_control(i) or sp.is_unknown(i):
            boundary[i] = True
        if piece.startswith(SPACE):
            lead[i] = True
            base[i] = len(piece[1:].encode("utf-8")) + 1
        else:
            base[i] = len(piece.encode("utf-8"))
    return ByteLUT(torch.from_numpy(base.astype(np.int16)), torch.from_numpy(lead), torch.from_numpy(boundary))


def assert_pr1791_fails_and_canonical_passes(tok, docs):
    tokens = stream(tok, covered_docs(tok, docs))
    truth = decoded_document_bytes(tok.sp, tokens, tok.bos_id)
    buggy = int(pr1791_lut(tok.sp).position_bytes(torch.from_numpy(tokens))[1:].sum())
    assert lut_total(tok, tokens) == truth
    assert buggy > truth * 1.05, (buggy, truth)  # overcounts, so the reported BPB looks better than it is
    return buggy / truth


def test_pr1791_lut_fails_where_the_canonical_lut_passes(own_tokenizer, heldout_docs):
    assert_pr1791_fails_and_canonical_passes(own_tokenizer, heldout_docs)


def test_pr1791_inflation_on_real_fineweb(fineweb_docs):
    """On FineWeb with the real sp8192 model the buggy LUT's bytes/token is ~17.7% high (spec §3.4.1)."""
    paths = [p for p in shared_tokenizer_paths() if p.name == "fineweb_8192_bpe.model"]
    if not paths:
        pytest.skip("sp8192 model not in ../shared")
    ratio = assert_pr1791_fails_and_canonical_passes(load_tokenizer(paths[0]), fineweb_docs)
    assert 1.12 < ratio < 1.24, ratio


def test_caseops_needs_the_sidecar_and_a_lut_would_overcount(fineweb_docs):
    if not CASEOPS_MODEL.is_file():
        pytest.skip("CaseOps model not in ../shared")
    tok = load_tokenizer(CASEOPS_MODEL)
    docs = fineweb_docs[:50]
    tokens = stream(tok, docs)
    with pytest.raises(PgolfError, match="needs the original-byte sidecar"):
        position_bytes_for(tokens, tok, sidecar=None)
    original = sum(len(d.encode("utf-8")) for d in docs)
    assert lut_total(tok, tokens) > original  # the LUT counts the 3-byte operator characters


def test_self_trained_caseops_tokenizer_reserves_operators(own_caseops_tokenizer, heldout_docs):
    tok = own_caseops_tokenizer
    assert tok.transform == "caseops_v1"
    assert [tok.sp.id_to_piece(i) for i in range(4, 8)] == ["\ue001", "\ue002", "\ue003", "\ue004"]
    ids, surfaces = encode_with_surfaces(tok, encode_caseops(heldout_docs[0].strip()))
    assert "".join(surfaces) != heldout_docs[0]  # surfaces are slices of the transformed text
