"""Late QAT switches on under torch.compile (issue 14.3): the records set a class-level flag that
the compiled graph had constant-folded, so their QAT never ran. Here switching it on mid-run must
change the compiled training forward, to exactly what the eager forward computes with QAT on.
And compiled QAT must train against export's codes: inductor drops the fp16 rounding of fused
scales, so the quantization is an opaque op (pgolf::int6_qat_codes)."""
import pytest
import torch

from pgolf.config import load_config
from pgolf.model import GPT
from pgolf.ops.int6_matmul import int6_qat_codes, int6_qat_linear
from pgolf.ops.quantize import codes_for, sdclip_scale
from pgolf.quant.qat import enable_late_qat

# model_dim 256: the MLP matrices (512 x 256) are over the fp16 passthrough size, so export codes
# them and QAT takes them; every weight random, so no zero-init projection hides the change.
CFG = load_config("smoke", ["model.num_layers=1", "model.model_dim=256", "model.mlp_mult=2", "model.vocab_size=128",
                            "export.matrix_bits=6"], env={})


def _model(mlp_impl: str) -> GPT:
    torch.manual_seed(0)
    model = GPT(CFG.model, mlp_impl=mlp_impl)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return model


def _loss_and_grad(model, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = model(x, y)
    loss.backward()
    return loss.detach(), model.blocks[0].mlp.fc.weight.grad.clone()


@pytest.mark.slow
@pytest.mark.parametrize("mlp_impl", ["eager", "fused"])
def test_compiled_forward_changes_when_late_qat_switches_on(mlp_impl):
    model, eager = _model(mlp_impl), _model(mlp_impl)
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    g = torch.Generator().manual_seed(1)
    x, y = (torch.randint(0, 128, (2, 32), generator=g) for _ in range(2))
    before, grad_before = _loss_and_grad(compiled, x, y)
    torch.testing.assert_close(before, _loss_and_grad(eager, x, y)[0], rtol=1e-5, atol=1e-5)

    assert enable_late_qat(model, CFG.export) == enable_late_qat(eager, CFG.export) == 2  # fc and proj
    after, grad_after = _loss_and_grad(compiled, x, y)
    want, want_grad = _loss_and_grad(eager, x, y)
    assert abs(after.item() - before.item()) > 1e-4, (before, after)  # the switch reached the compiled graph
    torch.testing.assert_close(after, want, rtol=1e-6, atol=1e-6)  # compiled == eager after the switch
    torch.testing.assert_close(grad_after, want_grad, rtol=1e-4, atol=1e-6)
    assert not torch.equal(grad_after, grad_before)


def test_qat_codes_are_exports_codes_compiled_and_eager():
    g = torch.Generator().manual_seed(2)
    w, x = torch.randn(96, 72, generator=g) * 0.05, torch.randn(5, 72, generator=g)
    scale16 = sdclip_scale(w, 6, 12.0)  # what export stores
    codes, scale = int6_qat_codes(w, 12.0)
    assert torch.equal(scale, scale16.float()) and torch.equal(codes, codes_for(w, scale16.float(), 6))
    torch.library.opcheck(int6_qat_codes, (w, 12.0))
    want = x @ (codes.float() * scale[:, None]).T
    compiled = torch.compile(lambda x, w: int6_qat_linear(x, w, 12.0), fullgraph=True, dynamic=False)
    torch.testing.assert_close(int6_qat_linear(x, w, 12.0), want, rtol=0, atol=0)
    torch.testing.assert_close(compiled(x, w), want, rtol=1e-6, atol=1e-6)  # was 0.07 off with fused fp32 scales
