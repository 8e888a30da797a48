"""The record's attention options and init through the whole pipeline on a CPU: they train
(the gate in Adam's scalar group), export (the gate int8 row-max) and score from the file."""
import math

from conftest import tiny_config, train_losses
from pgolf.eval.scoring import score_artifact
from pgolf.train.checkpoint_read import load_checkpoint
from pgolf.train.trainer import run_training

RECORD_ATTENTION = ("model.attention.xsa=all", "model.attention.sparse_gate=true",
                    "model.attention.sparse_gate_scale=0.5", "model.attention.rope_dims=8", "model.init=record",
                    "model.mlp_activation=leaky_relu2")


def test_record_attention_trains_exports_and_scores(tmp_path, tiny_data):
    result = run_training(tiny_config(tiny_data, tmp_path, "train.iterations=20", "train.warmdown_iters=0",
                                      *RECORD_ATTENTION))
    losses = train_losses(result.run_dir)
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5, losses
    assert abs(result.final.val_bpb - result.prequant.val_bpb) < 0.02  # the int8 gates round-trip
    again = score_artifact(result.export.path, seq_len=64, stride=0, batch_tokens=4096, device="cpu")
    assert again["val_bpb"] == result.final.val_bpb
    state = load_checkpoint(result.run_dir / "checkpoint.pt")
    gates = [v for k, v in state["model"].items() if k.endswith("outputs.gate.weight")]
    assert len(gates) == 2 and all(g.abs().sum() > 0 for g in gates)  # the zero-init gates learned
