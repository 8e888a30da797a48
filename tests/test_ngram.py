"""The token-only n-gram state (pgolf.ngram.state): native == numpy fallback == literal reference on
random and real streams; C1 in scoring order; read before write; the given scoring order; settings;
bad input."""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from conftest import REPO, TOKENIZERS
from pgolf.data.encode import document_tokens
from pgolf.errors import PgolfError
from pgolf.ngram import NgramSettings, build_hints, doc_starts_at_bos, native, native_available
from pgolf.ngram.reference import reference_hints
from pgolf.ngram.state import scoring_spans, span_positions

CXX = shutil.which("c++") or shutil.which("g++")
BACKENDS = ["native", "numpy"]
needs_native = pytest.mark.skipif(not native_available(), reason="pgolf.ngram._ngram_state not built")


def _repetitive(rng, n: int, vocab: int) -> np.ndarray:
    """Random tokens with copied runs (so long contexts recur) and a few near-copies."""
    out = list(rng.integers(0, vocab, size=min(n, 64)))
    while len(out) < n:
        if rng.random() < 0.5 and len(out) > 40:
            s = int(rng.integers(0, len(out) - 30))
            run = out[s:s + int(rng.integers(16, 30))]
            if rng.random() < 0.3:
                run[int(rng.integers(0, len(run)))] = int(rng.integers(0, vocab))
            out.extend(run)
        else:
            out.extend(rng.integers(0, vocab, size=int(rng.integers(1, 20))))
    return np.asarray(out[:n], dtype=np.int32)


def _random_docs(rng, n: int) -> np.ndarray:
    cuts = np.sort(rng.choice(np.arange(1, n), size=int(rng.integers(1, 12)), replace=False))
    return np.concatenate([[0], cuts]).astype(np.int64)


def _reference(tokens, starts, order, settings):
    return reference_hints(tokens, [tuple(map(int, s)) for s in scoring_spans(len(tokens), starts, order)], settings)


def _build(backend, tokens, vocab, starts=None, order=None, settings=NgramSettings()):
    if backend == "native" and not native_available():
        pytest.skip("pgolf.ngram._ngram_state not built")
    return build_hints(tokens, vocab, doc_starts=starts, order=order, settings=settings, backend=backend)


def _assert_equal(h, ref):
    np.testing.assert_array_equal(h.token, ref[0])
    np.testing.assert_array_equal(h.confidence, ref[1])


# ---- equality with the reference ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(6))
def test_equal_to_reference_on_random_streams(backend, seed):
    rng = np.random.default_rng(seed)
    vocab = int(rng.choice([2, 5, 40, 8192]))
    tokens = _repetitive(rng, int(rng.integers(20, 3000)), vocab)
    starts = _random_docs(rng, len(tokens))
    order = rng.permutation(len(starts))
    for n in (2, 3, 7, 16, 32):
        settings = NgramSettings(order=n, threshold=float(rng.choice([0.3, 0.5, 0.8, 1.0])))
        ref = _reference(tokens, starts, order, settings)
        h = _build(backend, tokens, vocab, starts, order, settings)
        _assert_equal(h, ref)
        assert h.backend == backend


@pytest.fixture(scope="module")
def real_stream(fineweb_docs):
    """Real FineWeb text, sp8192, BOS-prefixed documents, with some documents repeated later (as the
    web repeats boilerplate), so long contexts recur."""
    from pgolf.data.tokenizer import load_tokenizer

    path = TOKENIZERS / "fineweb_8192_bpe.model"
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared)")
    tok = load_tokenizer(path)
    docs = fineweb_docs[:120] + fineweb_docs[10:14] + fineweb_docs[120:160]
    tokens = np.concatenate([document_tokens(tok, d) for d in docs]).astype(np.uint16)
    return tokens, tok.vocab_size, tok.bos_id


REAL_CASES = ((16, False), (16, True), (4, True))  # (order, scored in a shuffled document order)


@pytest.fixture(scope="module")
def real_reference(real_stream):
    tokens, _, bos = real_stream
    starts = doc_starts_at_bos(tokens, bos)
    shuffled = np.random.default_rng(1).permutation(len(starts))
    cases = [(n, starts, shuffled if shuffle else None) for n, shuffle in REAL_CASES]
    return [(n, s, o, _reference(tokens, s, o, NgramSettings(order=n))) for n, s, o in cases]


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_to_reference_on_a_real_stream(backend, real_stream, real_reference):
    tokens, vocab, _ = real_stream
    for n, starts, order, ref in real_reference:
        h = _build(backend, tokens, vocab, starts, order, NgramSettings(order=n))
        _assert_equal(h, ref)
        assert h.fired > 100  # the repeated documents and real repeats do fire


@needs_native
def test_native_equals_fallback_on_a_long_stream():
    rng = np.random.default_rng(7)
    tokens = _repetitive(rng, 400_000, 8192)
    starts = _random_docs(rng, len(tokens))
    order = rng.permutation(len(starts))
    a = build_hints(tokens, 8192, doc_starts=starts, order=order, backend="native")
    b = build_hints(tokens, 8192, doc_starts=starts, order=order, backend="numpy")
    np.testing.assert_array_equal(a.token, b.token)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    assert a.fired > 10_000


# ---- C1 and read-before-write --------------------------------------------------------------------------

def _write_first(tokens, spans, settings):
    """A planted wrong build: it counts the scored token before reading its context."""
    k = settings.order - 1
    hint = np.full(len(tokens), -1, dtype=np.int32)
    conf = np.zeros(len(tokens), dtype=np.float32)
    counts: dict[tuple, dict[int, int]] = {}
    window: list[int] = []
    for start, length in spans:
        for pos in range(start, start + length):
            if len(window) == k:
                c = counts.setdefault(tuple(window), {})
                c[int(tokens[pos])] = c.get(int(tokens[pos]), 0) + 1
                top = max(c, key=c.get)
                conf[pos] = c[top] / sum(c.values())
                hint[pos] = top if conf[pos] >= np.float32(settings.threshold) else -1
            window = (window + [int(tokens[pos])])[-k:]
    return hint, conf


def _causal_violations(build, tokens, starts, order, vocab, rng, trials=12) -> int:
    """Positions whose hint changed when only tokens at or after them, in scoring order, changed."""
    positions = span_positions(scoring_spans(len(tokens), starts, order))
    base = build(tokens)
    bad = 0
    for v in rng.integers(0, len(tokens), size=trials):
        changed = tokens.copy()
        later = positions[v:]
        changed[later] = (changed[later] + rng.integers(1, vocab, size=len(later))) % vocab
        h = build(changed)
        upto = positions[:v + 1]  # the hint at v depends on tokens before v only
        bad += int(np.count_nonzero((h[0][upto] != base[0][upto]) | (h[1][upto] != base[1][upto])))
    return bad


@pytest.mark.parametrize("impl", ["native", "numpy", "reference", "planted_write_first"])
def test_c1_hints_ignore_the_token_they_score_and_everything_after(impl):
    rng = np.random.default_rng(3)
    vocab = 4
    tokens = _repetitive(rng, 1500, vocab)
    starts = _random_docs(rng, len(tokens))
    settings = NgramSettings(order=4, threshold=0.5)
    for order in (None, rng.permutation(len(starts))):  # file order, then a scoring order ("later documents")
        spans = [tuple(map(int, s)) for s in scoring_spans(len(tokens), starts, order)]
        build = {
            "native": lambda t: tuple(_pair(_build("native", t, vocab, starts, order, settings))),
            "numpy": lambda t: tuple(_pair(_build("numpy", t, vocab, starts, order, settings))),
            "reference": lambda t: reference_hints(t, spans, settings),
            "planted_write_first": lambda t: _write_first(t, spans, settings),
        }[impl]
        bad = _causal_violations(build, tokens, starts, order, vocab, rng)
        if impl == "planted_write_first":
            assert bad > 0  # the check catches a build that writes before it reads
        else:
            assert bad == 0


def _pair(h):
    return h.token, h.confidence


def test_a_context_seen_once_hints_its_continuation_from_the_next_occurrence_on():
    # read before write: the first occurrence of a context has no state; the second sees the first
    run = [5, 6, 7, 8]
    tokens = np.array(run + [1, 2] + run + [3, 4] + run + [1], dtype=np.int32)
    for backend in BACKENDS:
        h = _build(backend, tokens, 9, settings=NgramSettings(order=5, threshold=0.5))
        assert h.token[4] == -1 and h.confidence[4] == 0  # first occurrence: nothing read
        assert h.token[10] == 1 and h.confidence[10] == 1.0  # second: the first one's continuation
        assert h.token[16] == 1 and h.confidence[16] == 0.5  # third: 1 and 3 tie, the older (1) stays top


# ---- scoring order (F1.7) ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_the_state_follows_the_given_scoring_order(backend):
    rng = np.random.default_rng(5)
    shared = list(rng.integers(10, 50, size=40))
    docs = [[0, *shared, *rng.integers(10, 50, size=30)], [0, *rng.integers(10, 50, size=60)], [0, *shared]]
    tokens = np.concatenate(docs).astype(np.int32)
    starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
    a, c = slice(starts[0], starts[1]), slice(starts[2], len(tokens))
    file_order = _build(backend, tokens, 50, starts, None)
    reversed_ = _build(backend, tokens, 50, starts, [2, 1, 0])
    # file order: the later copy (doc 2) is hinted from doc 0; reversed: doc 0 from doc 2, doc 2 from nothing
    assert (file_order.token[c] >= 0).sum() > 20 and (file_order.token[a] >= 0).sum() == 0
    assert (reversed_.token[a] >= 0).sum() > 20 and (reversed_.token[c] >= 0).sum() == 0
    # and it is exactly the file-order pass over the documents concatenated in that order
    perm = np.concatenate([np.arange(starts[2], len(tokens)), np.arange(starts[1], starts[2]), np.arange(starts[1])])
    flat = _build(backend, tokens[perm], 50)
    np.testing.assert_array_equal(reversed_.token[perm], flat.token)
    np.testing.assert_array_equal(reversed_.confidence[perm], flat.confidence)


def test_doc_starts_at_bos():
    np.testing.assert_array_equal(doc_starts_at_bos(np.array([1, 5, 6, 1, 7, 1]), 1), [0, 3, 5])
    np.testing.assert_array_equal(doc_starts_at_bos(np.array([5, 1, 6]), 1), [0, 1])


# ---- settings ------------------------------------------------------------------------------------------

def test_defaults_are_the_2135_run():
    s = NgramSettings()
    assert (s.order, s.threshold, s.beta) == (16, 0.8, 2.625)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gate_is_top_share_at_least_the_threshold_in_float32(backend):
    ctx = [7, 8, 9]
    body = []
    for nxt in (1, 1, 1, 1, 2, 3):  # after 5 continuations, the 6th read sees 4/5 = 0.8; the 7th 4/6
        body += ctx + [nxt]
    tokens = np.array(body + ctx + [1], dtype=np.int32)
    reads = [4 * i + 3 for i in range(7)]
    for thr, fires_at_6th in ((0.8, True), (0.80001, False)):
        h = _build(backend, tokens, 10, settings=NgramSettings(order=4, threshold=thr))
        assert h.confidence[reads[5]] == np.float32(0.8)
        assert (h.token[reads[5]] == 1) == fires_at_6th
        assert h.confidence[reads[6]] == np.float32(4 / 6) and h.token[reads[6]] == -1


@pytest.mark.parametrize("backend", BACKENDS)
def test_order_sets_the_context_length(backend):
    # "3 4 5 6" recurs, but after different tokens: a 4-token context (order 5) has never been seen
    tokens = np.array([1, 3, 4, 5, 6, 2, 3, 4, 5, 6], dtype=np.int32)
    h4 = _build(backend, tokens, 8, settings=NgramSettings(order=4, threshold=0.5))
    h5 = _build(backend, tokens, 8, settings=NgramSettings(order=5, threshold=0.5))
    assert h4.token[9] == 6 and h5.token[9] == -1
    assert h4.token[:4].tolist() == [-1] * 4  # no hint before a full context


# ---- native build and fallback -------------------------------------------------------------------------

@needs_native
def test_native_context_keys_are_the_numpy_ones():
    from pgolf.ngram.keys import context_keys

    lib = native.load()
    rng = np.random.default_rng(11)
    for k in (1, 3, 15, 31):
        stream = rng.integers(0, 8192, size=k + 20).astype(np.int32)
        want = context_keys(stream, k)
        got = [lib.pgolf_ngram_context_key(stream[i:i + k].ctypes.data, k) for i in range(20)]
        assert got == want.tolist()


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
def test_native_is_built_where_a_compiler_exists():
    assert native_available(), "a C++ compiler exists but pgolf/ngram/_ngram_state is not built (make install)"


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
def test_source_compiles_alone_without_torch_or_python_headers(tmp_path):
    so = tmp_path / "ngram.so"
    r = subprocess.run([CXX, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                        str(REPO / "csrc" / "ngram_state.cpp"), "-o", str(so)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert ctypes.CDLL(str(so)).pgolf_ngram_abi_version() == native.ABI_VERSION


def test_fallback_when_the_extension_is_absent(monkeypatch):
    monkeypatch.setattr(native, "load", lambda: None)
    tokens = np.array([1, 2, 3, 1, 2, 3, 1, 2], dtype=np.int32)
    with pytest.warns(RuntimeWarning, match="numpy fallback"):
        h = build_hints(tokens, 4, settings=NgramSettings(order=3))
    assert h.backend == "numpy" and h.token.tolist() == [-1, -1, -1, -1, -1, 3, 1, 2]
    with pytest.raises(PgolfError, match="not built"):
        build_hints(tokens, 4, backend="native")


# ---- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("tokens, vocab, match", [
    (np.array([0.0, 1.0]), 4, "integer dtype"),
    (np.array([True, False]), 4, "integer dtype"),
    ([1, 2, 3], 4, "numpy array"),
    (np.zeros((2, 3), dtype=np.int32), 4, "1-D"),
    (np.array([1, 2, 4, 0], dtype=np.int32), 4, r"position 2 holds 4, outside \[0, 4\)"),
    (np.array([1, -1], dtype=np.int64), 4, r"position 1 holds -1"),
    (np.array([1, 2], dtype=np.int32), 0, "vocab_size"),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_tokens_are_a_clear_error(backend, tokens, vocab, match):
    with pytest.raises(PgolfError, match=match):
        _build(backend, tokens, vocab)


@needs_native
def test_native_checks_the_token_range_itself():
    tokens = np.array([1, 2, 9, 0], dtype=np.int32)
    with pytest.raises(PgolfError, match=r"position 2 holds 9, outside \[0, 5\)"):
        native.native_hints(native.load(), tokens, np.array([[0, 4]], dtype=np.int64), 5, NgramSettings())


@pytest.mark.parametrize("starts, order, match", [
    ([1, 3], None, "doc_starts"),
    ([0, 3, 3], None, "doc_starts"),
    ([0, 10], None, "doc_starts"),
    ([0.0, 3.0], None, "doc_starts"),
    ([0, 3], [0, 0], "permutation"),
    ([0, 3], [1], "permutation"),
    ([0, 3], [0, 2], "permutation"),
])
def test_bad_documents_or_order_are_a_clear_error(starts, order, match):
    with pytest.raises(PgolfError, match=match):
        build_hints(np.arange(6, dtype=np.int32), 8, doc_starts=np.array(starts), order=order, backend="numpy")


@pytest.mark.parametrize("kwargs, match", [
    (dict(order=1), "order"), (dict(order=33), "order"), (dict(order=16.0), "order"),
    (dict(threshold=0.0), "threshold"), (dict(threshold=1.5), "threshold"),
    (dict(beta=-1.0), "beta"), (dict(beta=float("nan")), "beta"),
])
def test_bad_settings_are_a_clear_error(kwargs, match):
    with pytest.raises(PgolfError, match=match):
        NgramSettings(**kwargs)


def test_bad_backend_and_empty_stream():
    with pytest.raises(PgolfError, match="backend"):
        build_hints(np.arange(3, dtype=np.int32), 4, backend="gpu")
    for backend in BACKENDS:
        h = _build(backend, np.zeros(0, dtype=np.int32), 4)
        assert h.token.shape == (0,) and h.fired == 0


def test_a_library_that_does_not_load_is_a_clear_error(monkeypatch, tmp_path):
    import importlib.util
    from types import SimpleNamespace

    bad = tmp_path / "_ngram_state.so"
    bad.write_bytes(b"not a shared object")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: SimpleNamespace(origin=str(bad)))
    native.load.cache_clear()
    try:
        with pytest.raises(PgolfError, match="cannot be loaded"):
            native.load()
    finally:
        monkeypatch.undo()
        native.load.cache_clear()  # the real library again for the tests after this one
