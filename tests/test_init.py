"""model.init = record (spec §5.2): Q, K, V and MLP-up orthogonal, output projections zero,
every block the identity at init; everything else as the constructors made it."""
import pytest
import torch

from pgolf.config import load_config
from pgolf.errors import PgolfError
from pgolf.model import GPT
from pgolf.model.gpt import roles_for_config
from pgolf.model.roles import param_roles

ORTHOGONAL = ("mixer.c_q.weight", "mixer.c_k.weight", "mixer.c_v.weight", "mlp.fc.weight")


def cfg(*overrides):
    return load_config("smoke", ["model.num_layers=3", "model.model_dim=48", "model.num_heads=6",
                                 "model.num_kv_heads=2", "model.mlp_mult=4", "model.mlp_activation=leaky_relu2",
                                 *overrides], env={}).model


def built(*overrides, seed=0):
    torch.manual_seed(seed)
    return GPT(cfg(*overrides))


def assert_orthonormal(w):
    """Rows orthonormal where there are no more rows than columns, else columns."""
    gram = w @ w.T if w.size(0) <= w.size(1) else w.T @ w
    torch.testing.assert_close(gram, torch.eye(gram.size(0)), rtol=0, atol=1e-5)


def test_record_init_makes_q_k_v_and_mlp_up_orthogonal_and_the_outputs_zero():
    model = built("model.init=record")
    for block in model.blocks:
        a = block.mixer
        for w in (a.c_q.weight, a.c_k.weight, a.c_v.weight, block.mlp.fc.weight):
            assert_orthonormal(w.detach())
        assert a.c_k.weight.shape == (16, 48) and block.mlp.fc.weight.shape == (192, 48)  # wide and tall both
        assert not a.proj.weight.any() and not block.mlp.proj.weight.any()


@pytest.mark.parametrize("extra", [(), ("model.attention.xsa=all", "model.attention.sparse_gate=true",
                                        "model.attention.sparse_gate_scale=0.5", "model.attention.rope_dims=4")])
def test_every_block_is_the_identity_at_record_init(extra):
    model = built("model.init=record", *extra)
    x, x0 = torch.randn(2, 13, 48), torch.randn(2, 13, 48)
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            (out,) = block((x,), x0, None, 1.0 / (i + 1) ** 0.5)
            assert torch.equal(out, x)


def test_record_init_changes_only_the_orthogonal_matrices():
    """The draws come after construction, so every other parameter is the baseline's, bit for bit."""
    base, record = built(), built("model.init=record")
    baseline_params = dict(base.named_parameters())
    changed = set()
    for name, p in record.named_parameters():
        if not torch.equal(p, baseline_params[name]):
            changed.add(name)
    assert changed == {f"blocks.{i}.{w}" for i in range(3) for w in ORTHOGONAL}


def test_record_init_is_deterministic_and_keeps_the_roles():
    a, b = built("model.init=record", seed=3), built("model.init=record", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert param_roles(a).keys() == dict(a.named_parameters()).keys()
    assert roles_for_config(cfg("model.init=record")) == param_roles(a)  # builds on the meta device too


def test_record_init_on_a_hybrid_touches_attention_and_mlps_only():
    extra = ("model.arch=gdn", "model.stack.attn_layers=1", "model.gdn_head_dim=8", "model.gdn_chunk_size=16")
    base, record = built(*extra), built(*extra, "model.init=record")
    for (name, p), q in zip(base.named_parameters(), record.parameters()):
        if ".mixer." in name and not name.startswith("blocks.1."):
            assert torch.equal(p, q), name  # GatedDeltaNet keeps its own init
    assert_orthonormal(record.blocks[1].mixer.c_q.weight.detach())


def test_an_unknown_init_is_a_clear_error():
    with pytest.raises(PgolfError, match=r"model\.init='xavier' must be one of \['baseline', 'record'\]"):
        cfg("model.init=xavier")
