"""`pgolf check` on the eval stack: the n-gram tilt (C1, C2 with the tilt on), the state built in an order
other than the scoring one (frontier-spec F1.7), document-isolated windows, and --artifact checking the
artifact's recorded eval settings."""
from __future__ import annotations

import numpy as np
import pytest

from pgolf.check.harness import format_table, run_checks
from pgolf.check.modes import PackedDocsMode, WindowsMode
from pgolf.config import NgramConfig
from pgolf.eval.ngram_tilt import document_starts
from test_check import check_data, plan, tiny_model  # noqa: F401 - the fixture too

# A low order and gate so the hints fire often on the check set's distinct paragraphs.
NGRAM = NgramConfig(enabled=True, order=3, threshold=0.5, beta=2.625)


def _rows(check_data, mode, model=None, **kw):  # noqa: F811
    rows = run_checks(model or tiny_model(), plan(check_data, mode, disjoint=False, **kw))
    return rows, format_table(rows, mode.name, 0)


def _scoring_order_row(rows):
    (row,) = [r for r in rows if "scoring order" in r.method]
    return row


class ReversedWindows(WindowsMode):
    """Planted: the n-gram state built over the documents last to first, scored first to last."""

    def doc_order(self, tokens):
        return np.arange(len(document_starts(tokens.numpy(), self.bos_id)))[::-1].copy()


class FileOrderDocs(PackedDocsMode):
    """Planted (F1.7, the records' mismatch): documents scored length-sorted, the state built in file order."""

    def doc_order(self, tokens):
        return None


def test_the_tilted_windows_mode_passes_every_condition(check_data):  # noqa: F811
    bos = check_data[1].bos_id
    for mode in (WindowsMode(128, ngram=NGRAM, bos_id=bos), WindowsMode(128, 32, ngram=NGRAM, bos_id=bos),
                 WindowsMode(128, 32, doc_isolated=True, ngram=NGRAM, bos_id=bos)):
        rows, table = _rows(check_data, mode)
        assert all(r.passed for r in rows), table
        assert {r.condition for r in rows} == {"C1", "C2", "C3", "C4"}
        assert "n-gram tilt" in mode.name


def test_the_tilt_really_changes_the_checked_distributions(check_data):  # noqa: F811
    """C2 with the tilt on checks tilted distributions: the scores differ from the untilted mode's."""
    from pgolf.check.conditions import run_mode
    from pgolf.metric.valset import load_val_set

    data, tok = check_data
    tokens = load_val_set(data, tok).tokens[:1200]
    model = tiny_model()
    on = run_mode(WindowsMode(128, ngram=NGRAM, bos_id=tok.bos_id), model, tokens)
    off = run_mode(WindowsMode(128, bos_id=tok.bos_id), model, tokens)
    changed = (on.nll - off.nll).abs() > 1e-4
    assert int(changed.sum()) > 50


def test_a_state_built_in_another_order_than_the_scoring_one_fails(check_data):  # noqa: F811
    rows, table = _rows(check_data, ReversedWindows(128, ngram=NGRAM, bos_id=check_data[1].bos_id))
    failed = {r.method for r in rows if not r.passed}
    assert failed and all(r.condition == "C1" for r in rows if not r.passed), table
    assert not _scoring_order_row(rows).passed


def test_f17_a_file_order_state_under_a_reordering_mode_fails_only_in_scoring_order(check_data):  # noqa: F811
    """The records' mismatch: stream-order C1 cannot see it (each hint uses only stream-earlier tokens),
    the scoring-order condition does; the same mode with the state built in its own order passes it."""
    model = tiny_model(doc_isolation=True)
    bos = check_data[1].bos_id
    rows, table = _rows(check_data, FileOrderDocs(128, bos, ngram=NGRAM), model)
    stream_c1 = [r for r in rows if r.condition == "C1" and "scoring order" not in r.method]
    assert all(r.passed for r in stream_c1), table
    assert not _scoring_order_row(rows).passed, table
    rows, table = _rows(check_data, PackedDocsMode(128, bos, ngram=NGRAM), model)
    assert _scoring_order_row(rows).passed, table


def test_check_artifact_uses_its_recorded_eval_settings(check_data, tmp_path, capsys):  # noqa: F811
    from pgolf.cli import main
    from pgolf.config import load_config
    from pgolf.export.export import run_meta
    from pgolf.export.offline import export_model
    from pgolf.model import GPT

    data, tok = check_data
    model_args = ["model.num_layers=2", "model.model_dim=32", "model.num_heads=2", "model.num_kv_heads=1"]
    cfg = load_config("smoke", [*model_args, f"data.path={data}", f"data.tokenizer={tok.path}", "eval.seq_len=96",
                                "eval.stride=32", "eval.doc_isolated=true", "eval.ngram.enabled=true",
                                "eval.ngram.order=3", "eval.ngram.threshold=0.5"], env={})
    path = tmp_path / "m.pgolf"
    export_model(GPT(cfg.model).state_dict(), cfg.to_dict()["model"], cfg.export, path, meta=run_meta(cfg, 0))
    common = ["--tokens", "400", "--cuts", "1", "--no-disjoint", f"data.path={data}", f"data.tokenizer={tok.path}",
              *model_args]
    assert main(["check", "--config", "smoke", "--artifact", str(path), *common]) == 0  # the preset: no tilt, 0 stride
    out = capsys.readouterr().out
    assert "mode windows(seq_len=96, stride=32, doc-isolated, n-gram tilt)" in out and "FAIL" not in out
    from pgolf.check.commands import _check_mode
    from pgolf.check.modes import LoraTTTMode, SlidingTTTMode
    from pgolf.config import Config

    e = Config().eval  # a recorded TTT mode is checked through its own engine
    e.mode = "lora_ttt"
    assert isinstance(_check_mode(None, e, 64, 1, cfg.model), LoraTTTMode)
    e.mode = "sliding_ttt"
    assert isinstance(_check_mode(None, e, 64, 1, cfg.model), SlidingTTTMode)
