"""fla (flash-linear-attention) as an optional GDN backend: absent, it is reported with a reason
and pgolf's kernels run; present on a GPU, it computes what gdn_chunk_scan does."""
import pytest
import torch

from gdn_cases import problem, rms_ratio
from pgolf.config import load_config
from pgolf.errors import PgolfError
from pgolf.model.gdn import GatedDeltaNet
from pgolf.ops.fla_gdn import fla_available, fla_chunk_scan, gdn_scan
from pgolf.ops.gdn import gdn_chunk_scan


def test_fla_is_never_used_on_a_cpu_tensor_and_says_why():
    ok, reason = fla_available("cpu")
    assert not ok and reason  # either not importable or CUDA-only: the reason names which
    assert "not importable" in reason or "CUDA" in reason
    xs, _ = problem(b=1, t=20, h=1, k=8, v=8)
    with pytest.raises(PgolfError, match="fla_chunk_scan"):
        fla_chunk_scan(*xs)


def test_the_backend_setting_defaults_to_pgolf_and_rejects_unknown_names():
    assert load_config("gdn", env={}).model.gdn_backend == "pgolf"
    with pytest.raises(PgolfError, match="model.gdn_backend"):
        load_config("gdn", ["model.gdn_backend=flash"], env={})
    assert gdn_scan("pgolf") is gdn_chunk_scan
    with pytest.raises(PgolfError, match="gdn_backend"):
        gdn_scan("triton")


def test_without_fla_the_layer_refuses_fla_and_auto_runs_pgolf():
    ok, reason = fla_available()
    if ok:
        pytest.skip("fla is importable here; this test covers its absence")
    with pytest.raises(PgolfError, match="model.gdn_backend=fla.*not importable"):
        GatedDeltaNet(32, 2, 16, backend="fla")
    torch.manual_seed(0)
    auto, own = GatedDeltaNet(32, 2, 16, backend="auto"), GatedDeltaNet(32, 2, 16)
    own.load_state_dict(auto.state_dict())
    x = torch.randn(2, 24, 32)
    torch.testing.assert_close(auto(x), own(x), rtol=0, atol=0)


def test_fla_matches_pgolf_forward_and_backward_on_a_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: fla runs on CUDA only")
    ok, reason = fla_available("cuda")
    if not ok:
        pytest.skip(reason)
    xs, s0 = problem(b=1, t=300, h=2, k=64, v=64, seed=3)
    xs = [x.cuda() for x in xs]
    xs = [x.bfloat16() if i < 3 else x for i, x in enumerate(xs)]
    cu = torch.tensor([0, 100, 101, 300], device="cuda")
    s0 = torch.randn(3, 2, 64, 64, device="cuda") * 0.1
    outs = []
    for fn in (gdn_chunk_scan, fla_chunk_scan):
        leaves = [x.detach().clone().requires_grad_() for x in xs]
        init = s0.clone().requires_grad_()
        o, final = fn(*leaves, initial_state=init, cu_seqlens=cu)
        assert o.dtype == torch.bfloat16 and final.dtype == torch.float32 and final.shape == (3, 2, 64, 64)
        (o.float().square().sum() + final.sum()).backward()
        outs.append([o, final, init.grad] + [x.grad for x in leaves])
    for ours, theirs in zip(*outs):
        assert rms_ratio(ours.float(), theirs.float()) < 2e-2
