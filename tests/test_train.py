"""The trainer end to end on a CPU: real text, tiny model."""
import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as tmp_mp

from conftest import tiny_config, train_losses
from pgolf.errors import PgolfError
from pgolf.eval.scoring import score_artifact
from pgolf.train.trainer import Trainer, run_training


def test_a_few_steps_on_real_text_lower_the_loss(tmp_path, tiny_data):
    result = run_training(tiny_config(tiny_data, tmp_path, "train.iterations=30", "train.warmdown_iters=0"))
    losses = train_losses(result.run_dir)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5, losses
    assert result.final.val_loss < math.log(1024) - 0.5  # better than uniform over the vocab
    run = result.run_dir
    assert {"config.json", "metrics.jsonl", "train.log", "checkpoint.pt", "model.pgolf", "result.json"} <= {
        p.name for p in run.iterdir()}
    assert "curves.png" not in {p.name for p in run.iterdir()}  # the commands draw it (a packed script needs no matplotlib)
    assert json.loads((run / "result.json").read_text())["final"]["val_bpb"] == result.final.val_bpb


def test_final_score_is_the_score_of_the_file_on_disk(tmp_path, tiny_data):
    result = run_training(tiny_config(tiny_data, tmp_path, "export.matrix_bits=6", "export.codec=brotli",
                                      "export.layout=grouped", "eval.stride=16"))
    again = score_artifact(result.export.path, seq_len=64, stride=16, batch_tokens=4096, device="cpu")
    assert again["val_bpb"] == result.final.val_bpb and again["token_count"] == result.final.token_count


def test_resume_gives_the_same_next_steps(tmp_path, tiny_data):
    full = run_training(tiny_config(tiny_data, tmp_path, "run.name=full", "train.checkpoint_every=4"))
    resumed = run_training(tiny_config(tiny_data, tmp_path, "run.name=resumed",
                                       f"run.resume={full.run_dir / 'checkpoint_step4.pt'}"))
    assert train_losses(resumed.run_dir) == train_losses(full.run_dir)[4:]  # bitwise on CPU
    assert resumed.final == full.final


def test_priming_steps_leave_no_trace(tmp_path, tiny_data):
    plain = run_training(tiny_config(tiny_data, tmp_path, "run.name=plain"))
    primed = run_training(tiny_config(tiny_data, tmp_path, "run.name=primed", "train.warmup_steps=3"))
    assert train_losses(primed.run_dir) == train_losses(plain.run_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank, port, cfg, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from pgolf.train.trainer import Trainer

    trained = {}
    export = Trainer._export

    def spy(self):  # every rank's parameters as training left them
        trained.update({n: p.detach().clone() for n, p in self.model.named_parameters()})
        return export(self)

    Trainer._export = spy
    result = run_training(cfg)
    out[rank] = {"final": result.final.as_dict(), "losses": train_losses(result.run_dir) if rank == 0 else None,
                 "params": trained}


def run_two_ranks(cfg) -> dict:
    out = tmp_mp.Manager().dict()
    tmp_mp.spawn(_ddp_rank, args=(_free_port(), cfg, out), nprocs=2)
    return dict(out)


@pytest.mark.parametrize("muon", ["optim.muon_sharded=false", "optim.muon_sharded=true"], ids=["ddp", "sharded"])
@pytest.mark.parametrize("clip", ["optim.grad_clip_norm=0", "optim.grad_clip_norm=0.05"], ids=["noclip", "clip"])
def test_two_gloo_processes_match_one_with_the_same_global_batch(tmp_path, tiny_data, muon, clip):
    # One process accumulating 2 micro-batches sees exactly the tokens the two ranks see.
    single = run_training(tiny_config(tiny_data, tmp_path, "run.name=single", "train.grad_accum_steps=2", clip))
    out = run_two_ranks(tiny_config(tiny_data, tmp_path, "run.name=ddp", "train.grad_accum_steps=1", muon, clip))
    assert all(torch.equal(out[0]["params"][n], out[1]["params"][n]) for n in out[0]["params"])  # ranks agree
    ref = train_losses(single.run_dir)
    got = out[0]["losses"]
    assert len(got) == len(ref) and all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(got, ref)), (got, ref)
    assert out[0]["final"] == out[1]["final"]  # every rank reports the same all-reduced score
    assert math.isclose(out[0]["final"]["val_bpb"], single.final.val_bpb, rel_tol=1e-4)


def test_two_rank_resume_keeps_every_ranks_muon_momentum(tmp_path, tiny_data):
    # Each rank holds the momentum of its shard of each bank; the checkpoint must hold all of them.
    full = run_two_ranks(tiny_config(tiny_data, tmp_path, "run.name=full", "train.checkpoint_every=4",
                                     "optim.muon_sharded=true"))
    resumed = run_two_ranks(tiny_config(tiny_data, tmp_path, "run.name=resumed", "optim.muon_sharded=true",
                                        f"run.resume={tmp_path / 'full' / 'checkpoint_step4.pt'}"))
    assert resumed[0]["losses"] == full[0]["losses"][4:]
    assert resumed[0]["final"] == full[0]["final"]


def test_a_run_directory_is_not_silently_reused(tmp_path, tiny_data):
    run_training(tiny_config(tiny_data, tmp_path, "train.iterations=2"))
    with pytest.raises(PgolfError, match="already holds a run; choose another run.name or set run.overwrite=true"):
        run_training(tiny_config(tiny_data, tmp_path, "train.iterations=2"))
    again = run_training(tiny_config(tiny_data, tmp_path, "train.iterations=3", "run.overwrite=true"))
    assert len(train_losses(again.run_dir)) == 3  # the old run's records are gone


def test_a_failed_overwriting_run_leaves_no_old_score_behind(tmp_path, tiny_data, monkeypatch):
    first = run_training(tiny_config(tiny_data, tmp_path, "train.iterations=2"))
    assert (first.run_dir / "result.json").exists() and (first.run_dir / "model.pgolf").exists()

    def fail(self):
        raise PgolfError("export failed (planted)")

    monkeypatch.setattr(Trainer, "_export", fail)
    with pytest.raises(PgolfError, match="planted"):
        run_training(tiny_config(tiny_data, tmp_path, "train.iterations=2", "run.overwrite=true"))
    assert not (first.run_dir / "result.json").exists() and not (first.run_dir / "model.pgolf").exists()


@pytest.mark.parametrize("override, message", [
    ("data.path=/nonexistent/data", "/nonexistent/data"),
    ("data.tokenizer=/nonexistent/tok.model", "tokenizer /nonexistent/tok.model does not exist"),
    ("model.vocab_size=2048", "model.vocab_size \\(VOCAB_SIZE\\)=2048, but the tokenizer has 1024 pieces"),
    (["model.doc_isolation=true", "model.bos_id=3"], "model.bos_id \\(BOS_ID\\)=3, but the tokenizer's BOS is 1"),
    ("train.grad_accum_steps=3", "must split into whole train.seq_len=64 sequences"),
    ("run.resume=/nonexistent/ckpt.pt", "checkpoint /nonexistent/ckpt.pt does not exist"),
])
def test_bad_runs_fail_with_clear_errors(tmp_path, tiny_data, override, message):
    with pytest.raises(PgolfError, match=message):
        overrides = override if isinstance(override, list) else [override]
        run_training(tiny_config(tiny_data, tmp_path, *overrides))


def test_resume_refuses_a_different_model(tmp_path, tiny_data):
    full = run_training(tiny_config(tiny_data, tmp_path, "run.name=a", "train.iterations=2"))
    with pytest.raises(PgolfError, match="config differs in model.model_dim"):
        run_training(tiny_config(tiny_data, tmp_path, "run.name=b", "model.model_dim=32",
                                 f"run.resume={full.run_dir / 'checkpoint.pt'}"))


def test_missing_train_shards(tmp_path, tiny_data):
    data, tok = tiny_data
    empty = tmp_path / "valonly"
    empty.mkdir()
    (empty / "fineweb_val_000000.bin").write_bytes((data / "fineweb_val_000000.bin").read_bytes())
    with pytest.raises(PgolfError, match="no fineweb_train_NNNNNN.bin shards in"):
        run_training(tiny_config((empty, tok), tmp_path))


def test_compiled_model_trains_like_eager(tmp_path, tiny_data):
    eager = run_training(tiny_config(tiny_data, tmp_path, "run.name=eager", "train.iterations=4"))
    compiled = run_training(tiny_config(tiny_data, tmp_path, "run.name=compiled", "run.compile=true", "train.iterations=4"))
    compiled_losses, eager_losses = train_losses(compiled.run_dir), train_losses(eager.run_dir)
    assert len(compiled_losses) == len(eager_losses) > 0
    for a, b in zip(compiled_losses, eager_losses):
        assert math.isclose(a, b, rel_tol=1e-4)
    assert math.isclose(compiled.final.val_bpb, eager.final.val_bpb, rel_tol=1e-4)


def test_depth_recurrence_switches_on_at_its_training_fraction(tmp_path, tiny_data):
    """Spec 5.5: the looped plan is off until loop_start_frac of training (here of 8 steps: step 4),
    then on, and on for everything after the loop (the artifact is scored with it)."""
    result = run_training(tiny_config(tiny_data, tmp_path, "model.num_layers=4", "model.stack.loop_layers=1-2",
                                      "model.stack.loop_count=2", "model.stack.loop_start_frac=0.5"))
    events = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    on = [e for e in events if e["event"] == "recurrence_on"]
    assert len(on) == 1 and on[0]["step"] == 4, on
    looped_losses = train_losses(result.run_dir)
    plain = run_training(tiny_config(tiny_data, tmp_path, "run.name=plain", "model.num_layers=4",
                                     "model.stack.loop_layers=1-2", "model.stack.loop_count=2",
                                     "model.stack.loop_start_frac=1.0"))
    plain_losses = train_losses(plain.run_dir)
    assert looped_losses[:4] == plain_losses[:4]  # the same plain plan until the switch
    assert looped_losses[4] != plain_losses[4]


def test_late_qat_reads_the_warmdown_not_the_lr_warmup(tmp_path, tiny_data):
    """With an LR warmup, lr_mul starts near 0: QAT must still wait for the warmdown (here
    (8 - 7) / 3 < 0.5 first at step 7), or it would run the whole training (the gdn preset)."""
    result = run_training(tiny_config(tiny_data, tmp_path, "model.model_dim=256", "export.matrix_bits=6",
                                      "train.lr_warmup_steps=3", "train.qat_threshold=0.5"))
    events = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "qat_on"] == [7]


def test_diverged_weights_are_not_exported(tmp_path, tiny_data):
    """Finite losses, weights past what the artifact stores (fp16 passthrough): a clear error, no artifact."""
    cfg = tiny_config(tiny_data, tmp_path, "train.iterations=1", "optim.matrix_lr=1e38", "optim.scalar_lr=1e38",
                      "optim.tied_embed_lr=1e38")
    with pytest.raises(PgolfError, match="is not finite as stored"):
        run_training(cfg)
    assert not (tmp_path / "t" / "model.pgolf").exists()


def test_export_refuses_non_finite_tensors():
    from pgolf.config import ExportConfig
    from pgolf.model.roles import CONTROL
    from pgolf.quant.recipe import quantize_state

    with pytest.raises(PgolfError, match="tensor w is not finite as stored"):
        quantize_state({"w": torch.tensor([1.0, float("nan")])}, ExportConfig(), {"w": CONTROL})
