"""The squared-activation MLP modules: the activation choice, eager vs the fused op, and a
training run through the op."""
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config, train_losses
from pgolf.config import load_config
from pgolf.errors import PgolfError
from pgolf.eval.scoring import model_from_artifact
from pgolf.model import GPT
from pgolf.model.mlp import FusedSquaredMLP, LeakyReluSquaredMLP, ReluSquaredMLP, build_mlp
from pgolf.ops.reference import reference_leaky_relu2_mlp
from pgolf.quant.hessians import HessianCollector
from pgolf.train.trainer import run_training


def randomized(mlp):
    torch.manual_seed(0)
    for p in mlp.parameters():
        torch.nn.init.normal_(p, std=0.2)  # proj is zero-init: give the output something to say
    return mlp


def test_leaky_relu2_is_the_spec_formula():
    mlp = randomized(build_mlp(24, 3, "leaky_relu2"))
    assert isinstance(mlp, LeakyReluSquaredMLP) and mlp.fc.weight.shape == (72, 24) and mlp.proj.zero_init
    x = torch.randn(2, 5, 24)
    want = F.linear(F.leaky_relu(F.linear(x, mlp.fc.weight), 0.5).square(), mlp.proj.weight)
    torch.testing.assert_close(mlp(x), want)
    ref = reference_leaky_relu2_mlp(x, mlp.fc.weight, mlp.proj.weight, 0.5)
    torch.testing.assert_close(mlp(x).double(), ref, rtol=1e-5, atol=1e-5)
    assert type(build_mlp(24, 3)) is ReluSquaredMLP


@pytest.mark.parametrize("activation", ["relu2", "leaky_relu2"])
@pytest.mark.parametrize("autocast", [False, True])
def test_fused_module_equals_eager(activation, autocast):
    eager = randomized(build_mlp(24, 3, activation, "eager"))
    fused = build_mlp(24, 3, activation, "fused")
    assert isinstance(fused, FusedSquaredMLP)
    fused.load_state_dict(eager.state_dict())  # one parameter layout
    x = torch.randn(2, 7, 24)
    results = []
    for mlp in (eager, fused):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = mlp(xi)
        (out.float() ** 2).sum().backward()
        results.append((out, xi.grad, mlp.fc.weight.grad, mlp.proj.weight.grad))
    for a, b in zip(*results, strict=True):
        assert a.dtype == b.dtype
        if autocast:  # both round to bf16 once per product, at different places: relative to the largest entry
            torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=2e-2 * b.abs().max().item())
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fused_module_compiles_in_one_graph():
    fused = randomized(build_mlp(24, 3, "leaky_relu2", "fused"))
    x = torch.randn(2, 7, 24)
    eager_out = fused(x)
    eager_grad = torch.autograd.grad(eager_out.square().sum(), fused.fc.weight)[0]
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, eager_out)
    torch.testing.assert_close(torch.autograd.grad(out.square().sum(), fused.fc.weight)[0], eager_grad)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager_out)  # the eager form, recompiled on the grad-mode guard


def test_fused_module_runs_eager_without_a_gradient_and_under_qat():
    """GPTQ's Hessian hooks sit on fc and proj: they must see the calibration forward; and
    QAT's int6 forward is the eager path's."""
    fused = randomized(build_mlp(24, 3, "leaky_relu2", "fused"))
    eager = build_mlp(24, 3, "leaky_relu2", "eager")
    eager.load_state_dict(fused.state_dict())
    x = torch.randn(9, 24)
    with torch.no_grad():
        calls = []
        hook = fused.fc.register_forward_hook(lambda *a: calls.append(1))
        fused(x)
        hook.remove()
    assert calls
    for mlp in (fused, eager):
        mlp.fc.qat_clip_sigmas = mlp.proj.qat_clip_sigmas = 12.0
    torch.testing.assert_close(fused(x), eager(x))


def test_gpt_selects_the_mlp_and_collects_its_hessians():
    def gpt(*overrides, impl="eager"):
        torch.manual_seed(0)
        return GPT(load_config("smoke", ["model.num_layers=2", "model.model_dim=64", *overrides], env={}).model, impl)

    relu, leaky, fused = gpt(), gpt("model.mlp_activation=leaky_relu2"), gpt("MLP_ACTIVATION=leaky_relu2", impl="fused")
    assert type(relu.blocks[0].mlp) is ReluSquaredMLP and type(leaky.blocks[0].mlp) is LeakyReluSquaredMLP
    assert isinstance(fused.blocks[1].mlp, FusedSquaredMLP) and fused.blocks[1].mlp.negative_slope == 0.5
    assert sum(p.numel() for p in leaky.parameters()) == sum(p.numel() for p in relu.parameters())
    for p in leaky.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.05)
    fused.load_state_dict(leaky.state_dict())
    x, y = torch.randint(0, 1024, (2, 16)), torch.randint(0, 1024, (2, 16))
    torch.testing.assert_close(fused(x, y), leaky(x, y))
    collector = HessianCollector(fused)
    with torch.no_grad():
        fused(x, y)
    assert "blocks.0.mlp.fc.weight" in collector.hessians() and "blocks.1.mlp.proj.weight" in collector.hessians()
    collector.remove()
    with pytest.raises(PgolfError, match="mlp_activation"):
        load_config("smoke", ["model.mlp_activation=gelu"], env={})
    with pytest.raises(PgolfError, match="mlp_impl"):
        load_config("smoke", ["train.mlp_impl=triton"], env={})


@pytest.mark.slow  # two training runs with their final evals
def test_training_through_the_fused_op_matches_eager(tmp_path, tiny_data):
    common = ("train.iterations=4", "model.mlp_activation=leaky_relu2")
    eager = run_training(tiny_config(tiny_data, tmp_path, "run.name=eager", *common))
    fused = run_training(tiny_config(tiny_data, tmp_path, "run.name=fused", "train.mlp_impl=fused", *common))
    fused_losses, eager_losses = train_losses(fused.run_dir), train_losses(eager.run_dir)
    assert len(fused_losses) == len(eager_losses) > 0
    for a, b in zip(fused_losses, eager_losses, strict=True):
        assert abs(a - b) < 1e-4 * abs(b)
    assert fused.final.token_count == eager.final.token_count
    model, _ = model_from_artifact(fused.run_dir / "model.pgolf", torch.device("cpu"))
    assert type(model.blocks[0].mlp) is LeakyReluSquaredMLP  # the artifact keeps the activation, not the impl
