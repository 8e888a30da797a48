"""`pgolf check` on the real TTT modes: the product's LoRA and sliding-window engines, scored on the
check stream and judged C1 (in their scoring order), C2 (the distribution each score was taken under,
tilt included), C3 (their own ledgers) and C4; a planted engine that trains before it scores fails."""
from __future__ import annotations

import re

import pytest

from pgolf.check.harness import format_table, run_checks
from pgolf.check.modes import LoraTTTMode, SlidingTTTMode
from pgolf.config import NgramConfig, TTTConfig
from test_check import check_data, plan, tiny_model  # noqa: F401 - the fixture too

TTT = TTTConfig(seq_len=64, chunk_size=16, batch_docs=8, lora_rank=4, lora_alpha=8.0, lora_lr=0.01,
                phases=1, prefix_docs=8, global_chunk_tokens=128, global_batch_seqs=4,
                sliding_chunk_tokens=200, sliding_epochs=1, sliding_lr=0.01)
NGRAM = NgramConfig(enabled=True, order=3, threshold=0.5, beta=2.625)


def _run(check_data, mode, n_tokens=700):  # noqa: F811
    rows = run_checks(tiny_model(), plan(check_data, mode, disjoint=False, n_tokens=n_tokens))
    return rows, format_table(rows, mode.name, 0)


@pytest.mark.parametrize("ngram", [None, NGRAM], ids=["plain", "tilted"])
def test_lora_ttt_passes_every_condition_in_its_scoring_order(check_data, ngram):  # noqa: F811
    mode = LoraTTTMode(TTT, check_data[1].bos_id, ngram=ngram)
    rows, table = _run(check_data, mode)
    assert all(r.passed for r in rows), table
    c3 = [r for r in rows if r.condition == "C3"][0]
    assert int(re.search(r"(\d+) updates", c3.method).group(1)) > 0 and "all of scored positions" in c3.detail, table
    assert "not applicable" in [r for r in rows if "stream order" in r.method][0].detail


def test_sliding_ttt_passes_every_condition(check_data):  # noqa: F811
    rows, table = _run(check_data, SlidingTTTMode(64, 32, TTT, check_data[1].bos_id))
    assert all(r.passed for r in rows), table
    assert any(r.condition == "C3" and "reads, all of scored positions" in r.detail for r in rows), table


class TrainFirstSliding(SlidingTTTMode):
    """Planted: each chunk trained on before it is scored (the product's functions, swapped order)."""

    def score(self, model, tokens):
        import pgolf.eval.ttt.sliding as sliding

        score, train = sliding.score_chunk, sliding.train_chunk
        pending = {}

        def train_first(model_, val, plan_, a, b, acc, ledger, *rest):
            pending["args"] = (model_, val, plan_, a, b, acc, ledger, *rest)

        def then_score(model_, tokens_, a, b, opt, params, settings, ledger, env):
            steps = train(model_, tokens_, a, b, opt, params, settings, ledger, env)
            score(*pending.pop("args"))
            return steps

        sliding.score_chunk, sliding.train_chunk = train_first, then_score
        try:
            return super().score(model, tokens)
        finally:
            sliding.score_chunk, sliding.train_chunk = score, train


def test_a_sliding_ttt_that_trains_before_scoring_fails_c3(check_data):  # noqa: F811
    rows, table = _run(check_data, TrainFirstSliding(64, 32, TTT, check_data[1].bos_id))
    assert any(r.condition == "C3" and not r.passed for r in rows), table
