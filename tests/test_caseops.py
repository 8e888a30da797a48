import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.data.caseops import ALLCAPS, CAPNEXT, ESC, OPERATORS, TITLE
from pgolf.data.caseops_codec import CaseOpsDecoder, CaseOpsError, decode_caseops, encode_caseops, original_byte_counts
from pgolf.data.encode import encode_with_surfaces

# Text that exercises every rule: mixed-case ASCII words, separators, non-ASCII letters and literal operators.
tricky = st.text(alphabet=st.sampled_from(list("aAbBzZqQ '1_-\n\té日😀") + list(OPERATORS)), max_size=60)


@given(st.text())
@settings(max_examples=500)
def test_roundtrip_arbitrary_unicode(s):
    assert decode_caseops(encode_caseops(s)) == s


@given(tricky)
@settings(max_examples=1000)
def test_roundtrip_tricky_alphabet(s):
    assert decode_caseops(encode_caseops(s)) == s


@given(tricky, st.lists(st.integers(min_value=0, max_value=200), max_size=12))
@settings(max_examples=500)
def test_streaming_decode_and_byte_counts_hold_however_the_text_is_cut(s, cuts):
    enc = encode_caseops(s)
    points = sorted({min(c, len(enc)) for c in cuts} | {0, len(enc)})
    surfaces = [enc[a:b] for a, b in zip(points[:-1], points[1:])]
    dec = CaseOpsDecoder()
    pieces = [dec.feed(x) for x in surfaces]
    dec.finish()
    assert "".join(pieces) == s
    counts = original_byte_counts(surfaces)
    assert counts == [len(p.encode("utf-8")) for p in pieces]
    assert sum(counts) == len(s.encode("utf-8"))


def test_rules_from_the_spec():
    assert encode_caseops("The NASA iPhone") == TITLE + "the " + ALLCAPS + "nasa i" + CAPNEXT + "phone"
    assert encode_caseops("McDonald") == TITLE + "mc" + CAPNEXT + "donald"
    assert encode_caseops("I A a") == TITLE + "i " + TITLE + "a a"  # single capitals are TITLE
    assert encode_caseops("ABc") == TITLE + "a" + CAPNEXT + "bc"
    assert encode_caseops("NASA's CafÉ x2Y") == ALLCAPS + "nasa's " + TITLE + "caf" + "É x2" + TITLE + "y"
    assert encode_caseops("lit" + TITLE) == "lit" + ESC + TITLE


def test_operators_count_zero_and_escaped_literals_count_their_bytes():
    assert original_byte_counts([TITLE, "the", " ", ALLCAPS, "nasa"]) == [0, 3, 1, 0, 4]
    assert original_byte_counts([ESC, TITLE + "x"]) == [0, 4]  # the escaped literal is 3 bytes


@pytest.mark.parametrize("bad", [TITLE, TITLE + " x", "a" + TITLE + "b", CAPNEXT + CAPNEXT + "a", ESC,
                                 ALLCAPS + TITLE + "a", CAPNEXT + "1", TITLE + ESC + TITLE])
def test_malformed_text_raises(bad):
    with pytest.raises(CaseOpsError):
        decode_caseops(bad)


def test_real_caseops_tokenizer_sidecar_sums_to_original_bytes(fineweb_docs):
    from conftest import CASEOPS_MODEL
    from pgolf.data.encode import surface_bytes
    from pgolf.data.tokenizer import load_tokenizer

    if not CASEOPS_MODEL.is_file():
        pytest.skip("CaseOps model not in ../shared")
    tok = load_tokenizer(CASEOPS_MODEL)
    assert tok.transform == "caseops_v1"
    for doc in fineweb_docs[:100]:
        assert doc == doc.strip()  # the normalizer drops outer whitespace, which no surface covers
        ids, surfaces = encode_with_surfaces(tok, encode_caseops(doc))
        counts = surface_bytes(tok, surfaces)
        assert sum(counts) == len(doc.encode("utf-8"))
        assert all(c == 0 for i, c in zip(ids, counts) if 4 <= i <= 7)  # operator pieces carry no bytes
