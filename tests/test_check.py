"""pgolf check: clean configurations pass; each planted violation fails its condition."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from pgolf.errors import PgolfError
from pgolf.check import conditions as c
from pgolf.check.harness import CheckPlan, format_table, random_weights, run_checks
from pgolf.check.modes import PackedDocsMode, Scored, WindowsMode, distribution
from pgolf.config import LayerSet, ModelConfig, StackConfig
from pgolf.data import shards
from pgolf.data.tokenizer import load_tokenizer
from pgolf.metric.bytes import ByteLUT
from pgolf.metric.ledger import ScoreLedger
from pgolf.metric.ledger_audit import c3_violations, load_ledger, reads, update_positions
from pgolf.metric.valset import ValSet, load_val_set
from pgolf.model import GPT
from pgolf.model.embeddings import InputGatedSmearGate, SmearGate


@pytest.fixture(scope="module")
def check_data(tmp_path_factory, own_tokenizer, bbc_docs):
    """Short documents (the distinct paragraphs of 150 articles: many documents per window), 60 of them
    val, several train shards, a byte sidecar."""
    from pgolf.data.prepare import PrepareOptions, prepare

    src = tmp_path_factory.mktemp("check") / "docs.jsonl"
    paragraphs = [p.strip() for d in bbc_docs[:150] for p in d.split("\n") if len(p.strip()) > 20]
    docs = list(dict.fromkeys(paragraphs))
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = src.parent / "data"
    prepare(PrepareOptions(inputs=[src], tokenizer=own_tokenizer.path, out_dir=out, val_docs=60, shard_tokens=20_000,
                           byte_sidecar=True, workers=1, progress=False))
    return out, load_tokenizer(own_tokenizer.path)


def tiny_model(attn_layers: str = "", **kw) -> GPT:
    cfg = ModelConfig(vocab_size=1024, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2, **kw)
    cfg.stack.attn_layers = LayerSet(attn_layers)
    torch.manual_seed(0)
    return random_weights(GPT(cfg))


def plan(check_data, mode, **kw) -> CheckPlan:
    data, tok = check_data
    return CheckPlan(data, tok, mode, n_tokens=kw.pop("n_tokens", 1200), cuts=2, **kw)


def failed(rows) -> set[str]:
    return {f"{r.condition}:{r.method}" for r in rows if not r.passed}


def conditions_failed(rows) -> set[str]:
    return {r.condition for r in rows if not r.passed}


def test_clean_windows_and_sliding_pass(check_data):
    model = tiny_model()
    for mode in (WindowsMode(seq_len=128), WindowsMode(seq_len=128, stride=32)):
        rows = run_checks(model, plan(check_data, mode))
        assert all(r.passed for r in rows), format_table(rows, mode.name, 0)
        assert {r.condition for r in rows} == {"C1", "C2", "C3", "C4", "F10"}


def test_clean_document_packing_passes(check_data):
    model = tiny_model(doc_isolation=True, smear_gate=True, bigram_buckets=64, bigram_dim=16)
    rows = run_checks(model, plan(check_data, PackedDocsMode(128, check_data[1].bos_id), disjoint=False))
    assert all(r.passed for r in rows), format_table(rows, "docs", 0)


def test_clean_gdn_hybrid_passes_both_modes(check_data):
    """GatedDeltaNet with an attention layer, SmearGate, BigramHash and doc isolation (spec 6.1's shape)."""
    model = tiny_model(arch="gdn", attn_layers="1", gdn_head_dim=16, gdn_chunk_size=16, doc_isolation=True,
                       smear_gate=True, bigram_buckets=64, bigram_dim=16)
    for mode in (PackedDocsMode(128, check_data[1].bos_id), WindowsMode(128, stride=64)):
        rows = run_checks(model, plan(check_data, mode, disjoint=False))
        assert all(r.passed for r in rows), format_table(rows, mode.name, 0)


class SmearGateWithoutBOSMask(SmearGate):
    """The planted bug of PR #1797 (spec 5.6): the previous token leaks across a BOS."""

    def forward(self, x, segments=None):
        return super().forward(x, None)


class InputGatedSmearGateWithoutBOSMask(InputGatedSmearGate):
    """The record's SmearGate before its BOS fix (#1851): no mask, no document boundaries."""

    def forward(self, x, segments, input_ids):
        return super().forward(x, None, torch.full_like(input_ids, self.bos_id + 1))


def test_the_record_wiring_keeps_documents_apart(check_data):
    """Issue 14: the input-gated SmearGate with its BOS mask and the record's stack (LN scale, gated
    skips, recurrence, two lanes) pass every condition in document packing; without the mask, C1 fails."""
    stack = StackConfig(ln_scale=True, skip_gates=True, loop_layers=LayerSet("0"), loop_count=2, parallel_start=1)
    model = tiny_model(doc_isolation=True, smear_gate=True, smear_form="input_gated", stack=stack)
    mode = PackedDocsMode(128, check_data[1].bos_id)
    rows = run_checks(model, plan(check_data, mode, disjoint=False))
    assert all(r.passed for r in rows), format_table(rows, mode.name, 0)
    leaky = InputGatedSmearGateWithoutBOSMask(model.cfg.model_dim, model.cfg.bos_id)
    leaky.load_state_dict(model.smear.state_dict())
    model.smear = leaky
    rows = run_checks(model, plan(check_data, mode, disjoint=False))
    assert conditions_failed(rows) == {"C1"}, format_table(rows, mode.name, 0)


def test_smeargate_without_bos_mask_fails_c1(check_data):
    model = tiny_model(doc_isolation=True, smear_gate=True)
    model.smear = SmearGateWithoutBOSMask(model.cfg.model_dim)
    with torch.no_grad():
        model.smear.gate.fill_(1.0)
    mode = PackedDocsMode(128, check_data[1].bos_id)
    rows = run_checks(model, plan(check_data, mode, disjoint=False))
    assert conditions_failed(rows) == {"C1"}, format_table(rows, mode.name, 0)
    # In the flat stream the previous token is the prefix: the same model is causal there.
    rows = run_checks(model, plan(check_data, WindowsMode(128), disjoint=False))
    assert all(r.passed for r in rows)


class TinyTTT:
    """A score/update loop: chunks of 48 targets scored with up to 128 tokens of context and
    one SGD step on each chunk, written to the ledger; `score_first=False` is the planted bug."""

    name = "tiny ttt"

    def __init__(self, score_first: bool):
        self.score_first = score_first

    def score(self, model: nn.Module, tokens: torch.Tensor) -> Scored:
        ledger = ScoreLedger(tokens.numel())
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        pos, nll, lp = [], [], []
        for a in range(1, tokens.numel(), 48):
            b = min(a + 48, tokens.numel())  # targets [a, b)
            lo = max(0, b - 1 - 128)
            x, y = tokens[lo:b - 1].long()[None], tokens[lo + 1:b].long()[None]
            keep = torch.arange(lo + 1, b) >= a

            def score():
                with torch.no_grad():
                    pos.append(torch.arange(lo + 1, b)[keep])
                    nll.append(model(x, y, reduction="none")[keep])
                    lp.append(distribution(model, x)[0][keep])
                ledger.scored(pos[-1])

            def update():
                opt.zero_grad()
                model(x[:, -(b - a):], y[:, -(b - a):]).backward()
                opt.step()
                ledger.update(torch.arange(a - 1, b))  # inputs a-1..b-2, targets a..b-1

            if self.score_first:
                score()
                update()
            else:
                update()
                score()
        return Scored(torch.cat(pos), torch.cat(nll), torch.cat(lp), ledger)


def test_ttt_that_updates_before_scoring_fails_c3(check_data):
    model = tiny_model()
    good = run_checks(model, plan(check_data, TinyTTT(score_first=True), disjoint=False, n_tokens=600))
    assert all(r.passed for r in good), format_table(good, "ttt", 0)
    c3 = [r for r in good if r.condition == "C3"][0]
    assert "13 updates" in c3.method
    bad = run_checks(model, plan(check_data, TinyTTT(score_first=False), disjoint=False, n_tokens=600))
    assert {"C1", "C3"} <= conditions_failed(bad), format_table(bad, "ttt", 0)
    c3 = [r for r in bad if r.condition == "C3"][0]
    assert "update 1 read position 1 (scored after 1 updates)" in c3.detail


def pr1791_loader(data_dir, tok) -> ValSet:
    """The GDN lineage's LUT (spec 3.4.1), as tests/test_byte_luts.py reproduces it."""
    from test_byte_luts import pr1791_lut

    val = load_val_set(data_dir, tok)
    return ValSet(val.tokens, pr1791_lut(tok.sp).position_bytes(val.tokens), "lut", val.bos_id)


def globbing_loader(data_dir, tok) -> ValSet:
    """`fineweb_val_*.bin`: the loose glob of PR #1738 that also reads the `_bytes_` sidecars."""
    files = sorted(data_dir.glob("fineweb_val_*.bin"))
    tokens = np.concatenate([shards.read_shard(p) for p in files]).astype(np.int64)
    t = torch.from_numpy(tokens)
    return ValSet(t.to(torch.int32), ByteLUT.from_sentencepiece(tok.sp).position_bytes(t), "lut", tok.bos_id)


def test_pr1791_byte_lut_fails_c4(check_data):
    rows = run_checks(tiny_model(), plan(check_data, WindowsMode(128), val_loader=pr1791_loader, disjoint=False))
    assert failed(rows) == {"C4:bytes/token = UTF-8 bytes of the decoded documents / targets (spec 3.3)"}
    detail = [r.detail for r in rows if not r.passed][0]
    counted, decoded = (int(s.replace(",", "")) for s in (detail.split()[0], detail.split()[3]))
    assert counted > 1.05 * decoded


def test_val_glob_reading_sidecars_fails_c4(check_data):
    data, _ = check_data
    assert shards.list_sidecar_shards(data)  # the planted glob has something to pick up
    rows = run_checks(tiny_model(), plan(check_data, WindowsMode(128), val_loader=globbing_loader, disjoint=False))
    assert "C4:eval's val stream = the exact-named val shards (token count and ids)" in failed(rows)


def test_sliding_window_scoring_twice_fails_c4(check_data, monkeypatch):
    from pgolf.eval import evaluator
    from pgolf.eval.windows import Windows, plan_windows

    def overlapping(n_tokens, seq_len, stride=0):
        w = plan_windows(n_tokens, seq_len, stride)
        return Windows(w.starts, w.starts + 1, w.seq_len)  # every window scores all its targets

    monkeypatch.setattr(evaluator, "plan_windows", overlapping)
    rows = run_checks(tiny_model(), plan(check_data, WindowsMode(128, stride=32), disjoint=False))
    bad = [r for r in rows if not r.passed]
    assert {r.condition for r in bad} == {"C4"} and any("scored more than once" in r.detail for r in bad)


def test_overlap_fails_f10(tiny_data, own_tokenizer):
    data, _ = tiny_data  # holds the corpus's real duplicate
    rows = run_checks(tiny_model(), CheckPlan(data, load_tokenizer(own_tokenizer.path), WindowsMode(128), n_tokens=600,
                                              cuts=1, tokens_per_step=1025))
    assert conditions_failed(rows) == {"F10"}
    assert "read at training step" in [r.detail for r in rows if not r.passed][0]


def test_ledger_rules_and_roundtrip(tmp_path):
    ledger = ScoreLedger(10)
    ledger.scored([1, 2, 3])
    ledger.update([0, 1, 2, 3])  # position 0 (the first BOS) is known before any update
    ledger.scored([4, 5])
    ledger.update([3, 4, 5, 6])  # 6 not scored yet
    ledger.scored([6, 7, 8, 9])
    total, found = c3_violations(ledger)
    assert total == 1
    assert (found[0].update, found[0].position) == (2, 6)
    ledger.save(tmp_path / "l.npz")
    again = load_ledger(tmp_path / "l.npz")
    assert again.updates == 2 and c3_violations(again)[0] == 1
    assert np.array_equal(again.scored_after, ledger.scored_after)
    with np.load(tmp_path / "l.npz") as z:  # an edited ledger (update 2 "scored" first) is refused
        edited = {k: z[k] for k in z.files}
    edited["scored_after"][6] = 0
    np.savez(tmp_path / "edited.npz", **edited)
    with pytest.raises(PgolfError, match="does not match its checksum"):
        load_ledger(tmp_path / "edited.npz")
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(PgolfError, match="not a readable score ledger"):
        load_ledger(tmp_path / "bad.npz")


def test_perturbation_changes_every_later_token_and_keeps_documents():
    tokens = torch.tensor([1, 5, 9, 1, 0, 1023, 2, 1, 1, 7], dtype=torch.int32)
    for seed in range(20):
        out = c.perturb_from(tokens, 4, 1, 1024, torch.Generator().manual_seed(seed))
        assert torch.equal(out[:4], tokens[:4]) and torch.equal(out == 1, tokens == 1)
        later = tokens[4:] != 1
        assert (out[4:][later] != tokens[4:][later]).all() and int(out.max()) < 1024 and int(out.min()) >= 0


def test_cli_exit_codes(check_data, tiny_data, capsys):
    from pgolf.cli import main

    data, tok = check_data
    common = ["--tokens", "600", "--cuts", "1", f"data.path={data}", f"data.tokenizer={tok.path}",
              "model.num_layers=2", "model.model_dim=32", "model.num_heads=2", "model.num_kv_heads=1"]
    assert main(["check", "--config", "smoke", *common]) == 0
    out = capsys.readouterr().out
    assert "F10" in out and "FAIL" not in out
    with pytest.raises(SystemExit) as e:
        main(["check", "--config", "smoke", *common, f"data.path={tiny_data[0]}"])
    assert e.value.code == 1 and "F10" in capsys.readouterr().out
    ledger = ScoreLedger(50)  # a saved ledger of an eval run whose first update read unscored positions
    ledger.update(range(0, 10))
    ledger.scored(range(1, 50))
    ledger.save(data.parent / "ttt_ledger.npz")
    with pytest.raises(SystemExit) as e:
        main(["check", "--config", "smoke", *common, "--no-disjoint", "--ledger", str(data.parent / "ttt_ledger.npz")])
    out = capsys.readouterr().out
    assert e.value.code == 1 and "(ttt_ledger.npz)" in out and "update 1 read position 1" in out


def test_the_overlap_step_counts_the_runs_micro_batches():
    """The loader reads batch_tokens plus one token per rank and micro-batch each step (8 in all on the
    record track: 8 GPUs x 1, or 1 GPU x 8 accumulation steps)."""
    from pgolf.check.commands import _tokens_per_step
    from pgolf.config import load_config

    cfg = load_config("baseline", [], env={})
    assert _tokens_per_step(cfg, 8) == _tokens_per_step(cfg, 1) == 524_288 + 8
    assert _tokens_per_step(load_config("baseline", ["train.grad_accum_steps=2"], env={}), 4) == 524_288 + 8


def test_ledger_keeps_ranges_and_judges_each_position():
    rng = np.random.default_rng(0)
    ledger = ScoreLedger(1000)
    ledger.scored(np.arange(1, 400))
    ledger.update_ranges([0], [399])  # all scored before: fine
    ledger.update(np.r_[10:20, 30:35, 398:402])  # 400, 401 not scored yet
    ledger.scored(np.arange(400, 1000))
    ledger.update(rng.permutation(np.r_[0:1000]))  # repeats and order do not matter
    total, found = c3_violations(ledger)
    assert total == 2 and [(v.update, v.position, v.scored_after) for v in found] == [(2, 400, 2), (2, 401, 2)]
    assert reads(ledger) == 400 + 19 + 1000 and ledger.read_ranges[2].tolist() == [[0, 999]]  # one range, 1000 reads
    assert update_positions(ledger, 2).tolist() == [*range(10, 20), *range(30, 35), 398, 399, 400, 401]
    with pytest.raises(PgolfError, match="out of range"):
        ledger.update_ranges([5], [1000])
