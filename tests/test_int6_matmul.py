"""pgolf::int6_matmul on its torch path, int6 QAT, and scoring an artifact from packed weights."""
import numpy as np
import pytest
import torch

from conftest import tiny_config, train_losses
from int6_cases import exact, problem
from pgolf.eval.scoring import score_artifact
from pgolf.ops.int6_matmul import int6_matmul, int6_matmul_op, int6_qat_linear, unpack_int6
from pgolf.ops.quantize import sdclip_scale
from pgolf.quant.packing import pack
from pgolf.train.trainer import run_training


def test_torch_packing_matches_the_numpy_packer():
    _, codes, packed, _ = problem(1)
    assert np.array_equal(packed.numpy(), pack(codes.numpy(), 6))
    assert torch.equal(unpack_int6(packed, 53), codes)


@pytest.mark.parametrize("m", [1, 5, 17])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_the_exact_product(m, dtype):
    x, codes, packed, scales = problem(m, dtype=dtype)
    y = int6_matmul(x, packed, scales, 53)
    assert y.dtype == dtype and y.shape == (m, 37)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.double(), exact(x, codes, scales), rtol=tol, atol=tol)


def test_opcheck_gradcheck_and_compile():
    x, codes, packed, scales = problem(5)
    torch.library.opcheck(int6_matmul_op, (x.requires_grad_(), packed, scales, 53))
    xd = x.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: int6_matmul(t, packed, scales.double(), 53), (xd,))
    compiled = torch.compile(lambda t: int6_matmul(t, packed, scales, 53), fullgraph=True)
    assert torch.equal(compiled(x.detach()), int6_matmul(x.detach(), packed, scales, 53))
    with pytest.raises(ValueError, match="packed must be uint8"):
        int6_matmul(x, packed[:, :-3], scales, 53)


def test_qat_forward_is_fake_quant_and_backward_is_straight_through():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 7, 64, generator=g, requires_grad=True)
    w = torch.randn(48, 64, generator=g, requires_grad=True)
    y = int6_qat_linear(x, w, 12.0)
    scale = sdclip_scale(w.detach(), 6, 12.0).float()
    w_hat = torch.clamp(torch.round(w.detach() / scale[:, None]), -31, 31) * scale[:, None]
    torch.testing.assert_close(y, x.detach() @ w_hat.T, rtol=1e-5, atol=1e-5)
    grad = torch.randn(y.shape, generator=g)
    y.backward(grad)
    torch.testing.assert_close(w.grad, grad.reshape(-1, 48).T @ x.detach().reshape(-1, 64), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, grad @ w_hat, rtol=1e-5, atol=1e-5)


def test_packed_scoring_matches_dequantized_scoring(tmp_path, tiny_data):
    result = run_training(tiny_config(tiny_data, tmp_path, "model.model_dim=256", "train.iterations=3",
                                      "export.matrix_bits=6", "export.lqer_top=2", "export.layout=grouped"))
    common = dict(seq_len=64, batch_tokens=4096, device="cpu")
    plain = score_artifact(result.export.path, **common)
    packed = score_artifact(result.export.path, packed=True, **common)
    assert packed["packed"] and packed["token_count"] == plain["token_count"]
    assert abs(packed["val_bpb"] - plain["val_bpb"]) < 1e-4 * plain["val_bpb"]


def test_late_qat_switches_on_and_changes_training(tmp_path, tiny_data):
    plain = run_training(tiny_config(tiny_data, tmp_path, "run.name=plain", "model.model_dim=256",
                                     "train.iterations=8", "train.warmdown_iters=4"))
    qat = run_training(tiny_config(tiny_data, tmp_path, "run.name=qat", "model.model_dim=256", "train.iterations=8",
                                   "train.warmdown_iters=4", "train.qat_threshold=0.6", "export.matrix_bits=6"))
    import json

    events = [json.loads(l) for l in (qat.run_dir / "metrics.jsonl").read_text().splitlines()]
    on = [e for e in events if e["event"] == "qat_on"]
    assert len(on) == 1 and on[0]["step"] == 6  # lr_mul = (8 - 6) / 4 = 0.5 < 0.6 first at step 6
    a, b = train_losses(plain.run_dir), train_losses(qat.run_dir)
    assert a[:6] == b[:6] and a[6:] != b[6:]
