import pytest

from pgolf.data.tokenizer import load_tokenizer
from pgolf.data.tokenizer_training import train_tokenizer
from pgolf.errors import PgolfError


def test_trained_model_has_the_challenge_settings(own_tokenizer):
    sp = own_tokenizer.sp
    assert sp.vocab_size() == 1024
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sum(sp.is_byte(i) for i in range(sp.vocab_size())) == 256  # byte_fallback
    assert sp.unk_id() not in sp.encode("unseen ☃ characters 𝔘")  # ... so nothing maps to <unk>
    assert len(sp.encode("2025")) == 4  # split_digits
    assert not sp.id_to_piece(sp.encode("hello")[0]).startswith("\u2581")  # add_dummy_prefix=False
    assert sp.decode(sp.encode("ﬁ")) == "fi"  # nmt_nfkc
    assert own_tokenizer.transform == "identity"


def test_user_symbols_are_reserved_after_the_specials(tmp_path, bbc_docs):
    tok = train_tokenizer(bbc_docs[:200], tmp_path / "t.model", vocab_size=400, user_symbols=["<|x|>"])
    assert tok.sp.piece_to_id("<|x|>") == 4
    assert (tmp_path / "t.vocab").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.model", "t.vocab"]  # no temp dir left


def test_bad_tokenizer_inputs(tmp_path, bbc_docs):
    with pytest.raises(PgolfError, match="must end in .model"):
        train_tokenizer(bbc_docs[:10], tmp_path / "t.bin", vocab_size=300)
    with pytest.raises(PgolfError, match="--transform must be one of"):
        train_tokenizer(bbc_docs[:10], tmp_path / "t.model", vocab_size=300, transform="upper")
    with pytest.raises(PgolfError, match="only supports .* pieces, fewer than --vocab-size 100000"):
        train_tokenizer(bbc_docs[:3], tmp_path / "t.model", vocab_size=100000)
    with pytest.raises(PgolfError, match="hold no text to train a tokenizer on"):  # not SentencePiece's message
        train_tokenizer(["", " \n"], tmp_path / "new" / "t.model", vocab_size=300)
    assert not (tmp_path / "t.model").exists() and not (tmp_path / "new").exists()
    with pytest.raises(PgolfError, match="--max-docs must be at least 1"):
        train_tokenizer(bbc_docs[:10], tmp_path / "t.model", vocab_size=300, max_docs=-1)
    (tmp_path / "d.model").mkdir()  # used to write d.vocab, then fail on the .model with a traceback
    with pytest.raises(PgolfError, match="d.model is an existing directory"):
        train_tokenizer(bbc_docs[:10], tmp_path / "d.model", vocab_size=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.model"]
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(PgolfError, match="junk.model: not a SentencePiece model"):
        load_tokenizer(tmp_path / "junk.model")
    with pytest.raises(PgolfError, match="nope.model does not exist"):
        load_tokenizer(tmp_path / "nope.model")
