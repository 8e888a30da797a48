"""Per-document batched LoRA on every virtual slot (pgolf.model.lora, challenge-spec §5.14)."""
import pytest
import torch

from pgolf.config import load_config
from pgolf.model import GPT
from pgolf.model.lora import BatchedLoRA, DocLoRA, LoRAModel, LoRASites, lora_parameter_count

TINY = ["model.num_layers=4", "model.model_dim=32", "model.num_heads=2", "model.num_kv_heads=1",
        "model.vocab_size=64", "model.stack.loop_layers=1-2"]


def tiny_model(*extra: str) -> GPT:
    torch.manual_seed(0)
    model = GPT(load_config("smoke", [*TINY, *extra], env={}).model)
    for p in model.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.1)
    return model.eval()


@pytest.mark.parametrize("extra", [
    [],
    ["model.stack.parallel_start=3", "model.stack.ln_scale=true", "model.stack.skip_gates=true",
     "model.attention.xsa=all", "model.tie_embeddings=false", "model.mlp_activation=leaky_relu2"],
    ["model.arch=gdn", "model.stack.attn_layers=3", "model.gdn_head_dim=16"],
])
def test_with_b_zero_the_output_is_bit_identical_to_the_base_model(extra):
    model = tiny_model(*extra)
    assert len(model.plan.slots) == 8  # 4 layers, 1-2 looped three times: 0 1 2 1 2 1 2 3
    lm = LoRAModel(model, DocLoRA(model, 3, 4, 8.0))
    x, y = torch.randint(0, 64, (3, 21)), torch.randint(0, 64, (3, 21))
    with torch.no_grad():
        assert torch.equal(lm(x, y), model(x, y, reduction="none").view(3, 21))
        assert torch.equal(lm.logits(lm.hidden(x)), model.logits(model.hidden(x)))


def _perturbed(lora: DocLoRA) -> DocLoRA:
    with torch.no_grad():
        for a in lora.adapters():
            a.B.normal_(std=0.05)
    return lora


def test_gradients_reach_only_the_adapters_and_rows_are_independent():
    model = tiny_model()
    for p in model.parameters():
        p.requires_grad_(False)
    lora = _perturbed(DocLoRA(model, 2, 4, 8.0))
    lm = LoRAModel(model, lora)
    x, y = torch.randint(0, 64, (2, 15)), torch.randint(0, 64, (2, 15))
    base = model(x, y, reduction="none").view(2, 15)
    out = lm(x, y)
    assert not torch.equal(out, base)  # nonzero B changes the model
    out[0].sum().backward()  # row 0's loss: only row 0 of every adapter gets a gradient
    assert all(p.grad is None for p in model.parameters())
    for a in lora.adapters():
        assert a.A.grad[0].abs().sum() > 0 and a.B.grad[0].abs().sum() > 0
        assert a.A.grad[1].abs().sum() == 0 and a.B.grad[1].abs().sum() == 0
    with torch.no_grad():  # and changing row 1's adapters leaves row 0's output alone
        for a in lora.adapters():
            a.B[1].normal_(std=0.5)
        again = lm(x, y)
    assert torch.equal(again[0], out[0].detach()) and not torch.equal(again[1], out[1].detach())


def test_every_virtual_slot_has_its_own_adapters():
    model = tiny_model()
    lora = DocLoRA(model, 1, 4, 8.0)
    assert len(lora.slots) == len(model.plan.slots)
    ids = {id(a) for slot in lora.slots for a in slot.values()}
    assert len(ids) == 8 * 5  # Q, K, V, O, MLP at each of the 8 slots, none shared by a looped layer's slots
    lm = LoRAModel(model, lora)
    looped = [i for i, s in enumerate(model.plan.slots) if s.layer == 1]
    assert len(looped) == 3 and len({id(lm.blocks[i]) for i in looped}) == 3
    assert all(lm.blocks[i].attn_scale is model.blocks[1].attn_scale for i in looped)  # base weights shared


@pytest.mark.parametrize("sites, per_doc", [
    (LoRASites(), 6_963_200),  # #1855: the spec's ~7.0M per document
    (LoRASites(k=False), 5_918_720),  # #2135: K off
    (LoRASites(q=False, v=False), 4_526_080),  # #1953/#2014: no_qv
])
def test_the_records_lora_sizes_per_document(sites, per_doc):
    cfg = load_config("baseline", ["model.num_layers=11", "model.vocab_size=8192", "model.stack.loop_layers=3-5"],
                      env={}).model
    with torch.device("meta"):
        model = GPT(cfg)
        lora = DocLoRA(model, 1, 80, 144.0, sites)
    assert len(model.plan.slots) == 17
    assert lora_parameter_count(lora) == per_doc == sum(p.numel() for p in lora.parameters())


def test_masks_switch_sites_off():
    model = tiny_model()
    full = DocLoRA(model, 1, 4, 8.0)
    k_off = DocLoRA(model, 1, 4, 8.0, LoRASites(k=False))
    no_qv = DocLoRA(model, 1, 4, 8.0, LoRASites(q=False, v=False, head=False))
    assert all(set(s) == {"q", "k", "v", "o", "mlp"} for s in full.slots)
    assert all(set(s) == {"q", "v", "o", "mlp"} for s in k_off.slots)
    assert all(set(s) == {"k", "o", "mlp"} for s in no_qv.slots) and len(no_qv.head) == 0
    assert lora_parameter_count(no_qv) < lora_parameter_count(k_off) < lora_parameter_count(full)
    lm = LoRAModel(model, no_qv)
    assert lm.blocks[0].mixer.inner.c_q is model.blocks[0].mixer.c_q  # an off site is not wrapped at all


def test_reset_zeroes_b_and_keeps_a_unless_asked():
    a = BatchedLoRA(2, 8, 4, 2, 4.0)
    with torch.no_grad():
        a.B.fill_(1.0)
    kept = a.A.detach().clone()
    a.zero_B()
    assert a.B.abs().sum() == 0 and torch.equal(a.A, kept)
    a.reset_A(torch.Generator().manual_seed(3))
    assert not torch.equal(a.A, kept) and a.A.abs().max() <= 1 / 8 ** 0.5


def test_a_gdn_hybrid_gets_q_k_v_adapters_on_its_attention_slots_only():
    model = tiny_model("model.arch=gdn", "model.stack.attn_layers=3", "model.gdn_head_dim=16")
    lora = DocLoRA(model, 1, 4, 8.0)
    for slot, adapters in zip(model.plan.slots, lora.slots):
        assert set(adapters) == ({"q", "k", "v", "o", "mlp"} if slot.layer == 3 else {"o", "mlp"})
