"""The records' optimization in the trainer: the EMA is what is exported, and a resumed run with
the EMA, the fraction warmdown and per-group decay continues bit-exactly."""
import json

import pytest
import torch

from conftest import tiny_config, train_losses
from pgolf.train.checkpoint_read import load_checkpoint
from pgolf.train.trainer import run_training

RECORD_OPTIM = ["optim.ema_decay=0.8", "train.warmdown_iters=0", "train.warmdown_frac=0.6", "train.min_lr=0.2",
                "optim.embed_wd=0.085", "optim.adam_wd=0.02", "optim.muon_wd=0.095"]


def test_resume_with_the_ema_and_the_fraction_warmdown_is_bit_exact(tmp_path, tiny_data):
    full = run_training(tiny_config(tiny_data, tmp_path, "run.name=full", "train.checkpoint_every=4", *RECORD_OPTIM))
    resumed = run_training(tiny_config(tiny_data, tmp_path, "run.name=resumed", *RECORD_OPTIM,
                                       f"run.resume={full.run_dir / 'checkpoint_step4.pt'}"))
    assert train_losses(resumed.run_dir) == train_losses(full.run_dir)[4:]  # bitwise on CPU
    assert resumed.final == full.final and resumed.prequant == full.prequant  # both from the EMA weights
    ema4 = load_checkpoint(full.run_dir / "checkpoint_step4.pt")["ema"]
    assert ema4 is not None and all(t.dtype == torch.float32 for t in ema4.values())


def test_the_ema_weights_are_exported_and_scored(tmp_path, tiny_data):
    """The final checkpoint (and so the artifact) holds the step-8 EMA, not the step-8 live weights;
    the priming steps (warmup_steps) leave the average untouched."""
    run = run_training(tiny_config(tiny_data, tmp_path, "run.name=ema", "train.checkpoint_every=8",
                                   "train.warmup_steps=2", *RECORD_OPTIM))
    unprimed = run_training(tiny_config(tiny_data, tmp_path, "run.name=unprimed", *RECORD_OPTIM))
    assert run.final == unprimed.final
    live = load_checkpoint(run.run_dir / "checkpoint_step8.pt")
    final = load_checkpoint(run.run_dir / "checkpoint.pt")
    assert final["model"].keys() == live["ema"].keys()
    assert all(torch.equal(final["model"][k], live["ema"][k].to(final["model"][k].dtype)) for k in live["ema"])
    assert any(not torch.equal(final["model"][k], live["model"][k]) for k in live["model"])
    events = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    ema = [e for e in events if e["event"] == "ema"]
    assert len(ema) == 1 and ema[0]["val_bpb"] == run.prequant.val_bpb
    last_val = [e for e in events if e["event"] == "val"][-1]
    assert last_val["val_bpb"] != run.prequant.val_bpb  # the live weights scored differently
    plain = run_training(tiny_config(tiny_data, tmp_path, "run.name=plain", *RECORD_OPTIM[1:]))
    assert train_losses(plain.run_dir) == train_losses(run.run_dir)  # the EMA never feeds back into training
    assert plain.final != run.final


@pytest.mark.slow
def test_compiled_training_switches_late_qat_on_like_eager(tmp_path, tiny_data):
    """Through the trainer: the compiled run's losses follow the eager run's across the QAT switch
    (step 6 here), and leave the no-QAT run's there. Small LRs keep compiled-vs-eager rounding from
    growing over the steps; a tight MLP clip makes int6 QAT change the forward visibly."""
    qat = ["model.num_layers=1", "model.model_dim=256", "export.matrix_bits=6", "optim.matrix_lr=0.01",
           "optim.scalar_lr=0.01", "optim.tied_embed_lr=0.01", "export.mlp_clip_sigmas=1.5",
           "train.qat_threshold=0.7"]
    compiled = run_training(tiny_config(tiny_data, tmp_path, "run.name=compiled", "run.compile=true", *qat))
    eager = run_training(tiny_config(tiny_data, tmp_path, "run.name=eager", *qat))
    plain = run_training(tiny_config(tiny_data, tmp_path, "run.name=plain", *qat[:-1]))
    events = [json.loads(line) for line in (compiled.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "qat_on"] == [6]
    a, b, c = train_losses(compiled.run_dir), train_losses(eager.run_dir), train_losses(plain.run_dir)
    assert a == pytest.approx(b, rel=1e-4)
    assert a[:6] == pytest.approx(c[:6], rel=1e-4)
    assert min(abs(x - z) for x, z in zip(a[6:], c[6:])) > 10 * max(abs(x - y) for x, y in zip(a, b))


def test_priming_late_qat_leaves_no_trace(tmp_path, tiny_data):
    qat = ["model.model_dim=256", "export.matrix_bits=6", "train.qat_threshold=0.7"]
    plain = run_training(tiny_config(tiny_data, tmp_path, "run.name=plain", *qat))
    primed = run_training(tiny_config(tiny_data, tmp_path, "run.name=primed", "train.warmup_steps=2", *qat))
    assert train_losses(primed.run_dir) == train_losses(plain.run_dir)
    assert primed.final == plain.final


@pytest.mark.slow
def test_priming_compiles_late_qat_so_its_switch_never_recompiles(tmp_path, tiny_data, monkeypatch):
    """The priming steps compile the QAT forward too (then switch it off): the switch at step 6
    finds its graph cached, so no compilation runs on the training clock."""
    from torch._dynamo.utils import counters

    from pgolf.train.trainer import Trainer

    graphs = []
    step = Trainer._train_step

    def counting_step(self, lr_mul):
        loss = step(self, lr_mul)
        graphs.append(counters["stats"]["unique_graphs"])
        return loss

    monkeypatch.setattr(Trainer, "_train_step", counting_step)
    torch._dynamo.reset()
    run_training(tiny_config(tiny_data, tmp_path, "run.compile=true", "train.warmup_steps=2", "model.num_layers=1",
                             "model.model_dim=256", "export.matrix_bits=6", "train.qat_threshold=0.7"))
    # priming: 2 plain steps (the second recompiles once, on the filled RoPE cache), 2 with QAT; then the
    # run's 8, QAT on from step 6
    assert len(graphs) == 4 + 8
    assert graphs[2] > graphs[1] and graphs[-1] == graphs[3], graphs
    torch._dynamo.reset()
