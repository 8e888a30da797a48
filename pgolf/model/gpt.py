"""The language model: the challenge's baseline (spec §4.1) and its variants, from small modules.

tok_emb (+ BigramHash) (-> input-gated SmearGate) -> RMSNorm (-> static SmearGate) -> x0; blocks of
(mixer, relu² or LeakyReLU² MLP) with the baseline's residual mixing, walked in the order of the
layer plan (pgolf.model.plan: with U-Net skips, encoder slots push their outputs and decoder
slots first add skip_weights[j] * pop()); final RMSNorm -> tied head -> softcap c*tanh(z/c) (or
AsymLogit's, pgolf.model.softcap) (-> logit calibration once fitted) -> cross-entropy in fp32. The
record's wiring (spec §5.5) comes from the plan and ParallelBlock: LN scale, gated skips (`skip_rule`),
depth recurrence (two plans, `set_recurrence`) and two residual lanes (their lambdas: LaneLambdas).

The mixer is attention (arch "transformer") or GatedDeltaNet (arch "gdn", optionally with
some attention layers and K/V sharing, spec §6.1). With doc_isolation, the model finds
the documents in its input (BOS), or takes a packed row's `cu_seqlens` from the packing
loader, and nothing crosses from one into the next.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config import ModelConfig, attention_layers
from pgolf.model.attention import build_attention
from pgolf.model.attention_backends import choose_backend
from pgolf.model.block import Block, LaneLambdas, ParallelBlock
from pgolf.model.embeddings import BigramHash, InputGatedSmearGate, SmearGate
from pgolf.model.init import apply_init
from pgolf.model.layers import CastedLinear, rms_norm
from pgolf.model.mlp import build_mlp
from pgolf.model.plan import build_plan
from pgolf.model.roles import CONTROL, Role, declare, param_roles
from pgolf.model.segments import DocSegments
from pgolf.model.softcap import build_softcap

def tokenizer_mismatch(cfg: ModelConfig, vocab_size: int, bos_id: int) -> str | None:
    """Why a tokenizer cannot feed this model, or None."""
    if vocab_size != cfg.vocab_size:
        return f"model.vocab_size (VOCAB_SIZE)={cfg.vocab_size}, but the tokenizer has {vocab_size} pieces"
    if cfg.doc_isolation and bos_id != cfg.bos_id:
        return f"model.bos_id (BOS_ID)={cfg.bos_id}, but the tokenizer's BOS is {bos_id} (doc_isolation splits there)"
    return None


def build_blocks(cfg: ModelConfig, backend, mlp_impl: str = "eager", lanes: LaneLambdas | None = None) -> list[Block]:
    """One block per physical layer, its mixer then its MLP, layer by layer: the reference
    script's construction order, so a seed gives the reference's weights. GDN layers share
    K/V within groups of kv_share_stride (the group's first layer owns them). The layers from
    model.stack.parallel_start on run on two lanes with their row of `lanes`."""
    attn, d = attention_layers(cfg), cfg.model_dim
    blocks: list[Block] = []
    for i in range(cfg.num_layers):
        if i in attn:
            mixer = build_attention(cfg, i, backend)
        else:
            from pgolf.model.gdn import GatedDeltaNet  # arch "gdn" only (pgolf.export.trace.OPTIONAL)

            owner = blocks[i - i % cfg.kv_share_stride].mixer if i % cfg.kv_share_stride else None
            mixer = GatedDeltaNet(d, cfg.num_heads, cfg.gdn_head_dim, cfg.gdn_conv_size, cfg.gdn_chunk_size,
                                  owner if isinstance(owner, GatedDeltaNet) else None, cfg.gdn_backend)
        mlp = build_mlp(d, cfg.mlp_mult, cfg.mlp_activation, mlp_impl)
        parallel = 0 <= cfg.stack.parallel_start <= i  # two lanes from there on
        blocks.append(ParallelBlock(d, mixer, mlp, lanes, i) if parallel else Block(d, mixer, mlp))
    return blocks


def build_smear(cfg: ModelConfig) -> nn.Module | None:
    """The configured SmearGate (spec §5.6), or None."""
    if not cfg.smear_gate:
        return None
    return SmearGate(cfg.model_dim) if cfg.smear_form == "static" else InputGatedSmearGate(cfg.model_dim, cfg.bos_id)


def add_skip(x: Tensor, ws: Tensor, gates: Tensor | None, j: int) -> Tensor:
    """The baseline's U-Net skip: x + w_j ⊙ s (ws = w_j ⊙ s)."""
    return x + ws


def gated_skip(x: Tensor, ws: Tensor, gates: Tensor, j: int) -> Tensor:
    """The records' gated skip (spec §5.5): lerp(w_j⊙s, x, σ(gate_j)) = w_j⊙s + σ(gate_j)⊙(x − w_j⊙s)."""
    return torch.lerp(ws, x, torch.sigmoid(gates[j]).to(x.dtype))


def merge_lanes(lanes: tuple[Tensor, ...]) -> Tensor:
    """The final hidden state: the mean of the residual lanes (one lane: itself)."""
    return lanes[0] if len(lanes) == 1 else torch.stack(lanes).mean(0)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, mlp_impl: str = "eager"):
        """`mlp_impl` (train.mlp_impl) runs the same MLP eager or through the fused op: a training
        choice, like `ce` in forward, so it is not part of the model's config or artifact."""
        super().__init__()
        self.cfg = cfg
        # Both plans of the stack (the same one without model.stack.loop_layers); the model is
        # built looping, as eval always runs it (spec §5.5); the trainer switches (set_recurrence).
        self.plans = {False: build_plan(cfg, recurrence=False), True: build_plan(cfg, recurrence=True)}
        self.plan = self.plans[True]
        self.has_attention = bool(attention_layers(cfg))
        self.attention_backend = (choose_backend(cfg.attention.backend, cfg.doc_isolation) if self.has_attention
                                  else None)
        d = cfg.model_dim
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.bigram = (BigramHash(cfg.bigram_buckets, cfg.bigram_dim, d, cfg.trigram) if cfg.bigram_buckets
                       else None)
        self.smear = build_smear(cfg)
        self.skip_weights = nn.Parameter(torch.ones(self.plan.num_skip_weights, d))
        self.skip_gates = (nn.Parameter(torch.zeros(self.plan.num_skip_weights, d)) if cfg.stack.skip_gates
                           else None)
        self.skip_rule = gated_skip if cfg.stack.skip_gates else add_skip
        # the lanes' lambdas of every layer, one tensor each as the record stores them (spec §5.2)
        self.parallel = LaneLambdas(cfg.num_layers) if cfg.stack.parallel_start >= 0 else None
        self.blocks = nn.ModuleList(build_blocks(cfg, self.attention_backend, mlp_impl, self.parallel))
        self.lm_head = (None if cfg.tie_embeddings else
                        CastedLinear(d, cfg.vocab_size, zero_init=True, role=Role("head", group="head", hot=True)))
        self.softcap = build_softcap(cfg.logit_softcap, cfg.asym_logit)
        self.head_input = nn.Identity()  # a hook point: the head's input (GPTQ's Hessian for the head)
        # a hook point on the capped logits: logit calibration once fitted (pgolf.model.logit_calibration)
        self.calibration = nn.Identity()
        if cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=cfg.tied_embed_init_std)
        declare(self.tok_emb, weight=Role("embedding", group="tok_emb", hot=True, tied=cfg.tie_embeddings))
        declare(self, skip_weights=CONTROL, **({"skip_gates": CONTROL} if cfg.stack.skip_gates else {}))
        apply_init(self, cfg.init)
        param_roles(self)  # every parameter has exactly one role, or this names the one that has not

    @property
    def recurrence(self) -> bool:
        """Whether the forward walks the looped plan (always True without model.stack.loop_layers)."""
        return self.plan is self.plans[True]

    def set_recurrence(self, on: bool) -> None:
        """Walk the looped plan (on) or the plain one. The trainer calls set_recurrence(False)
        before its first step and set_recurrence(True) once the training-time fraction reaches
        model.stack.loop_start_frac; eval, export and GPTQ calibration run with it on (the
        default). torch.compile guards on the plan, so a switch recompiles once, and switching
        back reuses the first graph."""
        self.plan = self.plans[bool(on)]

    def documents(self, input_ids: Tensor, cu_seqlens: Tensor | None = None, max_seqlen: int = 0) -> DocSegments | None:
        """The batch's documents (doc_isolation), with the attention backend's mask built once: found
        at each BOS, or given by a packed row's `cu_seqlens` (pgolf.data.packing, B = 1)."""
        if not self.cfg.doc_isolation:
            if cu_seqlens is not None:  # a packed row without isolation would attend across all its documents
                raise ValueError("cu_seqlens given to a model without model.doc_isolation")
            return None
        segments = (DocSegments.from_tokens(input_ids, self.cfg.bos_id) if cu_seqlens is None
                    else DocSegments.from_cu_seqlens(cu_seqlens, input_ids.numel(), max_seqlen))
        return segments.with_attention(self.attention_backend.prepare(segments)) if self.has_attention else segments

    def embed(self, input_ids: Tensor, segments: DocSegments | None) -> Tensor:
        """x0: the normed token (+ n-gram) embedding, smeared before the norm (input-gated
        SmearGate) or after it (static SmearGate)."""
        x = self.tok_emb(input_ids)
        if self.bigram is not None:
            x = x + self.bigram(input_ids, segments).to(x.dtype)
        smear = self.smear
        if smear is not None and smear.before_norm:
            x = smear(x, segments, input_ids)
        x = rms_norm(x)
        return x if smear is None or smear.before_norm else smear(x, segments)

    def hidden(self, input_ids: Tensor, cu_seqlens: Tensor | None = None, max_seqlen: int = 0) -> Tensor:
        """Final-normed hidden states [B, T, D]: the walk over the plan's slots."""
        return self.walk(input_ids, [self.blocks[slot.layer] for slot in self.plan.slots], cu_seqlens, max_seqlen)

    def walk(self, input_ids: Tensor, blocks: list[nn.Module], cu_seqlens: Tensor | None = None,
             max_seqlen: int = 0) -> Tensor:
        """`hidden` with `blocks[i]` running at virtual slot i: the plain model passes its physical
        blocks; a wrapper passes blocks carrying per-slot adapters (pgolf.model.lora)."""
        segments = self.documents(input_ids, cu_seqlens, max_seqlen)
        x0 = self.embed(input_ids, segments)
        lanes, skips = (x0,), []
        for slot, block in zip(self.plan.slots, blocks, strict=True):
            lanes = lanes + lanes[-1:] * (slot.lanes - len(lanes))  # a fork copies the last lane
            if slot.skip_pop is not None:
                ws = self.skip_weights[slot.skip_pop].to(lanes[0].dtype) * skips.pop()
                lanes = (self.skip_rule(lanes[0], ws, self.skip_gates, slot.skip_pop), *lanes[1:])
            lanes = block(lanes, x0, segments, slot.norm_scale)
            if slot.skip_push:
                skips.append(lanes[0])
        return self.head_input(rms_norm(merge_lanes(lanes)))

    def logits(self, hidden: Tensor) -> Tensor:
        """Softcapped (and, once fitted, calibrated) logits, fp32."""
        return self.calibration(self.softcap(F.linear(hidden, self.head_weight().to(hidden.dtype))).float())

    def head_weight(self) -> Tensor:
        """The output head's weight [V, D]: the tied embedding, or lm_head."""
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, input_ids: Tensor, target_ids: Tensor, reduction: str = "mean", weights: Tensor | None = None,
                ce: str = "eager", cu_seqlens: Tensor | None = None, max_seqlen: int = 0) -> Tensor:
        """Cross-entropy (nats) of `target_ids`; reduction "none" gives one loss per target.

        `weights` (one per target) make the mean Σ w·CE / Σ w. `ce` picks the training
        implementation: "eager" (softcap + F.cross_entropy in fp32, also every eval), the
        fused Triton CE on logits ("fused"), or the fused head that never materialises
        the logits ("fused_linear"). All compute the same function, but the fused ones take
        the scalar cap and no logit calibration: they are for training, which runs before a
        calibration is fitted (scoring goes through the eager path, calibrated). `cu_seqlens` /
        `max_seqlen`: the documents of a packed row (the packing loader's), instead of finding them at each BOS.
        """
        h = self.hidden(input_ids, cu_seqlens, max_seqlen)
        targets = target_ids.reshape(-1)
        flat_w = None if weights is None else weights.reshape(-1)
        c = self.cfg.logit_softcap
        head = self.head_weight()
        if ce in ("fused", "fused_linear"):  # the fused CE ops load only where used (pgolf.export.trace.OPTIONAL)
            from pgolf.ops.softcapped_ce import linear_softcapped_cross_entropy, softcapped_cross_entropy
        if ce == "fused_linear":
            flat = h.reshape(-1, h.size(-1))
            if torch.is_autocast_enabled(flat.device.type):  # a custom op gets no autocast: cast as F.linear would
                flat = flat.to(torch.get_autocast_dtype(flat.device.type))
            return linear_softcapped_cross_entropy(flat, head, targets, flat_w, c, reduction=reduction)
        if ce == "fused":
            z = F.linear(h, head.to(h.dtype)).reshape(-1, head.size(0))
            return softcapped_cross_entropy(z, targets, flat_w, c, reduction=reduction)
        if ce != "eager":
            raise ValueError(f"ce must be eager, fused or fused_linear, got {ce!r}")
        logits = self.logits(h).reshape(-1, head.size(0))
        if flat_w is None:
            return F.cross_entropy(logits, targets, reduction=reduction)
        rows = F.cross_entropy(logits, targets, reduction="none") * flat_w
        return {"none": rows, "sum": rows.sum(), "mean": rows.sum() / flat_w.sum()}[reduction]


def roles_for_config(cfg: ModelConfig) -> dict[str, Role]:
    """The parameter roles of the model `cfg` describes, for code that holds only a state dict
    (built on the meta device: no memory, no init work)."""
    with torch.device("meta"):
        return param_roles(GPT(cfg))


def prepare_for_device(model: GPT, device: torch.device) -> GPT:
    """The baseline's precision layout on CUDA: a bf16 body whose parameters with a `keep_fp32`
    role (linear weights, controls, conv taps, norms: all but the embedding tables) stay fp32,
    so bf16 cannot round their small updates away. On CPU everything is fp32."""
    model.to(device)
    if device.type == "cuda":
        model.bfloat16()
        params = dict(model.named_parameters())
        for name, role in param_roles(model).items():
            if role.keep_fp32:
                params[name].data = params[name].data.float()
    return model
