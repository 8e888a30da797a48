"""Batched per-document LoRA adapters on every virtual slot, for score-first TTT (challenge-spec §5.14).

Each row of a batch is one document with its own adapters: y = (x·Aᵀ)·Bᵀ·(α/r), A [rows, r, in]
~ U(±1/√in), B [rows, out, r] = 0. Sites, per VIRTUAL slot of the model's plan (a looped
layer gets its own adapters at each of its slots: 17 sets for the record's 11 layers):

- Q, K, V: added to c_q, c_k, c_v (their input is the normed block input); attention mixers only
- O: a parallel adapter on the normed block input, added to the mixer's output (after its projection)
- MLP: a parallel adapter on the normed MLP input, added to the MLP's output
- head: added to the raw head output, before the softcap

`LoRASites` switches sites off (#2135: K off; #1953/#2014: Q and V off). Attaching is done at
construction, not in the forward: `LoRAModel` builds, per slot, a shallow twin of the physical
block whose children are wrapped (`LoRALinear`, `ParallelAdapter`); the twins share every base
parameter, and `GPT.walk` runs them in the plan's order. An off site is simply not wrapped. With
B = 0 every adapter adds exact zeros, so the output is bit for bit the base model's.

The adapters own their parameters (`DocLoRA`); the base model's are not touched here (the TTT
engine freezes them while it trains the adapters).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.attention import CausalSelfAttention
from pgolf.model.gpt import GPT


@dataclass(frozen=True)
class LoRASites:
    q: bool = True
    k: bool = True
    v: bool = True
    o: bool = True
    mlp: bool = True
    head: bool = True


class BatchedLoRA(nn.Module):
    """`rows` independent rank-r adapters in_features -> out_features; row i serves batch row i.

    A batch of b < rows documents uses the first b rows. Parameters stay fp32 and are cast to
    the activation dtype at use, as CastedLinear does.
    """

    def __init__(self, rows: int, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.empty(rows, rank, in_features))
        self.B = nn.Parameter(torch.zeros(rows, out_features, rank))
        self.reset_A()

    @torch.no_grad()
    def reset_A(self, generator: torch.Generator | None = None) -> None:
        """A ~ U(±1/√in), drawn on the CPU (so a seed gives the same A on every device)."""
        bound = 1.0 / math.sqrt(self.in_features)
        fresh = torch.empty(self.A.shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
        self.A.copy_(fresh.to(self.A.device))

    @torch.no_grad()
    def zero_B(self) -> None:
        self.B.zero_()

    def forward(self, x: Tensor) -> Tensor:
        b = x.size(0)
        a, bb = self.A[:b].to(x.dtype), self.B[:b].to(x.dtype)
        return torch.bmm(torch.bmm(x, a.transpose(1, 2)), bb.transpose(1, 2)) * self.scale


class LoRALinear(nn.Module):
    """base(x) + adapter(x): an adapted linear layer (the base is shared, not copied)."""

    def __init__(self, base: nn.Module, adapter: BatchedLoRA):
        super().__init__()
        self.base, self.adapter = base, adapter

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.adapter(x)


class ParallelAdapter(nn.Module):
    """inner(x, *rest) + adapter(x): a parallel adapter on a sub-layer's input (O, MLP)."""

    def __init__(self, inner: nn.Module, adapter: BatchedLoRA):
        super().__init__()
        self.inner, self.adapter = inner, adapter

    def forward(self, x: Tensor, *rest) -> Tensor:
        return self.inner(x, *rest) + self.adapter(x)


class HeadLinear(nn.Module):
    """The model's raw head output h·Wᵀ (tied or not), as GPT.logits computes it before the softcap."""

    def __init__(self, model: GPT):
        super().__init__()
        self._model = [model]  # a plain reference: the head's parameters stay the model's

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(h, self._model[0].head_weight().to(h.dtype))


def _twin(module: nn.Module, **children: nn.Module) -> nn.Module:
    """A shallow copy of `module` with some children replaced; parameters and buffers stay shared."""
    twin = copy.copy(module)
    twin._modules = {**module._modules, **children}
    return twin


def slot_sites(model: GPT, block: nn.Module, sites: LoRASites) -> dict[str, tuple[int, int]]:
    """The adapters one slot running `block` gets: site -> (in, out). Q/K/V need an attention mixer."""
    cfg = model.cfg
    d = cfg.model_dim
    kv = cfg.num_kv_heads * (d // cfg.num_heads)
    out: dict[str, tuple[int, int]] = {}
    if isinstance(block.mixer, CausalSelfAttention):  # sizes from the config: a packed c_q is no nn.Linear
        for name, on, o in (("q", sites.q, d), ("k", sites.k, kv), ("v", sites.v, kv)):
            if on:
                out[name] = (d, o)
    if sites.o:
        out["o"] = (d, d)
    if sites.mlp:
        out["mlp"] = (d, d)
    return out


class DocLoRA(nn.Module):
    """The adapters of a document batch: per virtual slot of `model.plan`, a dict site -> BatchedLoRA,
    and the head's. Its parameters are the only ones the per-document TTT trains."""

    def __init__(self, model: GPT, rows: int, rank: int, alpha: float, sites: LoRASites = LoRASites()):
        super().__init__()
        self.rows, self.sites = rows, sites
        self.slots = nn.ModuleList(
            nn.ModuleDict({name: BatchedLoRA(rows, i, o, rank, alpha)
                           for name, (i, o) in slot_sites(model, model.blocks[slot.layer], sites).items()})
            for slot in model.plan.slots)
        self.head = nn.ModuleDict({"head": BatchedLoRA(rows, model.cfg.model_dim, model.cfg.vocab_size, rank, alpha)}
                                  if sites.head else {})

    def adapters(self) -> list[BatchedLoRA]:
        return [m for m in self.modules() if isinstance(m, BatchedLoRA)]

    @torch.no_grad()
    def reset(self, fresh_a: bool, generator: torch.Generator | None = None) -> None:
        """Zero every B; draw a new A too when `fresh_a` (else A is kept: the warm start)."""
        for a in self.adapters():
            a.zero_B()
            if fresh_a:
                a.reset_A(generator)


def adapt_block(block: nn.Module, adapters: nn.ModuleDict) -> nn.Module:
    """A twin of `block` with `adapters` (from DocLoRA.slots) attached; sites not in it stay plain."""
    mixer = block.mixer
    wrapped = {f"c_{s}": LoRALinear(getattr(mixer, f"c_{s}"), adapters[s]) for s in ("q", "k", "v") if s in adapters}
    mixer = _twin(mixer, **wrapped) if wrapped else mixer
    if "o" in adapters:
        mixer = ParallelAdapter(mixer, adapters["o"])
    mlp = ParallelAdapter(block.mlp, adapters["mlp"]) if "mlp" in adapters else block.mlp
    return _twin(block, mixer=mixer, mlp=mlp)


class LoRAModel:
    """`model` with `lora` attached, for the model's current plan (build it after set_recurrence).

    hidden(ids) -> [B, T, D] final-normed states; logits(h) -> softcapped fp32 logits [.., V].
    Row i of the batch uses adapter row i."""

    def __init__(self, model: GPT, lora: DocLoRA):
        if len(lora.slots) != len(model.plan.slots):
            raise ValueError(f"the LoRA has {len(lora.slots)} slots, the model's plan {len(model.plan.slots)}")
        self.model, self.lora = model, lora
        self.blocks = [adapt_block(model.blocks[s.layer], lora.slots[s.index]) for s in model.plan.slots]
        head = HeadLinear(model)
        self.head = LoRALinear(head, lora.head["head"]) if "head" in lora.head else head

    def hidden(self, input_ids: Tensor) -> Tensor:
        return self.model.walk(input_ids, self.blocks)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.model.calibration(self.model.softcap(self.head(hidden)).float())  # as GPT.logits

    def __call__(self, input_ids: Tensor, target_ids: Tensor) -> Tensor:
        """Per-target CE (nats) [B, T], as GPT.forward(reduction="none") computes it."""
        logits = self.logits(self.hidden(input_ids))
        return F.cross_entropy(logits.flatten(0, 1), target_ids.reshape(-1), reduction="none").view(target_ids.shape)


def lora_parameter_count(lora: DocLoRA) -> int:
    """Trainable parameters per document (one row of every adapter)."""
    return sum(a.rank * (a.in_features + a.out_features) for a in lora.adapters())
