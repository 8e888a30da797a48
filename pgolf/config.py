"""Typed run configuration.

A run's settings are nested dataclasses: sections ([run], [model], [optim], ...) and, inside
[model], the subsections [model.attention] and [model.stack]. They come, in increasing
precedence, from the defaults below, a preset (a TOML file: a name in pgolf/configs/ or a
path; a preset may `extends = "baseline"` and list only its differences), the challenge's
environment variable names (DATA_PATH, ITERATIONS, ...: each field names its variable, so
competitors' habits carry over), and command-line overrides, written either
`section.key=value` or `ENV_NAME=value`. Unknown keys, values of the wrong type and values
out of range (NaN, a negative learning rate, ...) are errors that name the key.

Every setting declares its range (`check`); `validate` is the one place that enforces the
ranges and the rules between settings.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pgolf.errors import PgolfError

PRESET_DIR = Path(__file__).parent / "configs"


class LayerSet(str):
    """A set of physical layers, written "all", "" (none), "3", "3-5", "0,3" or "0,3-5,8".

    The text is kept (canonical: no spaces) because "all" means every layer of whatever depth
    the model has; `indices(num_layers)` resolves it. Being a str, it serializes as itself.
    """

    def __new__(cls, text: str = "") -> "LayerSet":
        parts = [p.strip() for p in str(text).split(",")] if str(text).strip() else []
        if parts == ["all"]:
            return super().__new__(cls, "all")
        for part in parts:
            lo, sep, hi = part.partition("-")
            if not (lo.isdigit() and (not sep or hi.isdigit())):
                raise ValueError(f"{part!r} is not a layer number or range a-b")
            if sep and int(hi) < int(lo):
                raise ValueError(f"range {part!r} runs backwards")
        return super().__new__(cls, ",".join(parts))

    def indices(self, num_layers: int) -> frozenset[int]:
        if self == "all":
            return frozenset(range(num_layers))
        out = set()
        for part in filter(None, self.split(",")):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
        return frozenset(out)


# What each check accepts; floats are always checked finite (NaN and inf are never a setting).
CHECKS = {
    "finite": (lambda v: True, ""),
    "positive": (lambda v: v > 0, "must be positive"),
    "nonneg": (lambda v: v >= 0, "must not be negative"),
    "unit": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "below1": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
}


def setting(default, env: str | None = None, choices: tuple | None = None, help: str = "",
            check: str | None = None):
    """A field: its default, the challenge's environment variable name, allowed values, help,
    and its range (a CHECKS key; floats are checked finite whatever it says)."""
    assert check is None or check in CHECKS, check
    return field(default=default, metadata={"env": env, "choices": choices, "help": help, "check": check})


def section(cls):
    """A nested section of settings (e.g. [model.attention])."""
    return field(default_factory=cls, metadata={"section": True})


@dataclass
class AttentionConfig:
    backend: str = setting("auto", "ATTN_BACKEND", ("auto", "sdpa", "flex", "flash"),
                           help="sdpa: causal, no documents; flex: FlexAttention with a document-causal block "
                                "mask; flash: flash-attn varlen on cu_seqlens (installed, CUDA); auto: sdpa "
                                "without doc_isolation, else flash where available, else flex")
    rope_base: float = setting(10000.0, "ROPE_BASE", check="positive")
    rope_dims: int = setting(0, "ROPE_DIMS", check="nonneg",
                             help="partial RoPE: rotate only the first rope_dims of each head; 0: the whole head")
    qk_gain_init: float = setting(1.5, "QK_GAIN_INIT", check="finite")
    xsa: LayerSet = setting(LayerSet(""), "XSA_LAYERS",
                            help="exclusive self-attention on these attention layers (all, 8-10, ...; the records: "
                                 "all): each head's output loses its component along the token's own value (spec 5.3)")
    sparse_gate: bool = setting(False, "SPARSE_ATTN_GATE_ENABLED",
                                help="SparseAttnGate: each head's output times sigmoid(scale * W x[:window]), W zero-init "
                                     "(spec 5.3)")
    sparse_gate_scale: float = setting(1.0, "SPARSE_ATTN_GATE_SCALE", check="finite",
                                       help="the SparseAttnGate's scale (the 1.0611 record: 0.5; the script's default 1.0)")
    sparse_gate_window: int = setting(12, check="positive",
                                      help="the SparseAttnGate reads this many leading channels of the normed input")


@dataclass
class StackConfig:
    """How the layers are wired (pgolf.model.plan turns this into the slots the forward walks)."""
    unet_skips: bool = setting(True, "UNET_SKIPS", help="the baseline's encoder-decoder skip connections")
    attn_layers: LayerSet = setting(LayerSet(""), "ATTN_LAYERS",
                                    help="gdn: the layers that use attention instead (hybrid): all, 3-5, 0,3, ...")
    ln_scale: bool = setting(False, "LN_SCALE",
                             help="scale each block's normed inputs by 1/sqrt(l+1), l its physical layer (spec 5.3)")
    skip_gates: bool = setting(False, "SKIP_GATES",
                               help="sigmoid-gated U-Net skips: x <- lerp(w*s, x, sigmoid(gate)), gate init 0 (spec 5.5)")
    loop_layers: LayerSet = setting(LayerSet(""), "LOOP_LAYERS",
                                    help="depth recurrence: a contiguous range of layers (3-5) run loop_count times "
                                         "in all once switched on (spec 5.5); '': none")
    loop_count: int = setting(3, "LOOP_COUNT", check="positive",
                              help="applications of loop_layers in all with recurrence on (the record: 3)")
    loop_start_frac: float = setting(0.35, "LOOP_START_FRAC", check="unit",
                                     help="training-time fraction at which the trainer switches recurrence on "
                                          "(model.set_recurrence); before it the plain stack runs, eval always loops")
    parallel_start: int = setting(-1, "PARALLEL_START_LAYER",
                                  help="two parallel residual lanes in the layers from this physical one on "
                                       "(spec 5.5; the record: 8); -1: off")


@dataclass
class ModelConfig:
    vocab_size: int = setting(1024, "VOCAB_SIZE", check="positive")
    num_layers: int = setting(9, "NUM_LAYERS", check="positive")
    model_dim: int = setting(512, "MODEL_DIM", check="positive")
    num_heads: int = setting(8, "NUM_HEADS", check="positive")
    num_kv_heads: int = setting(4, "NUM_KV_HEADS", check="positive")
    mlp_mult: int = setting(2, "MLP_MULT", check="positive")
    mlp_activation: str = setting("relu2", "MLP_ACTIVATION", ("relu2", "leaky_relu2"),
                                  help="the MLP's squared activation: relu², or LeakyReLU(0.5)² (spec 5.4)")
    tie_embeddings: bool = setting(True, "TIE_EMBEDDINGS")
    tied_embed_init_std: float = setting(0.005, "TIED_EMBED_INIT_STD", check="nonneg")
    logit_softcap: float = setting(30.0, "LOGIT_SOFTCAP", check="positive")
    asym_logit: bool = setting(False, "ASYM_LOGIT_RESCALE",
                               help="AsymLogit Rescale (frontier-spec F2): separate caps for positive and negative "
                                    "logits, two scalars frozen at logit_softcap as the records ran them (inert)")
    arch: str = setting("transformer", "ARCH", ("transformer", "gdn"),
                        help="the sequence mixer of every block: attention, or GatedDeltaNet (spec 6.1)")
    gdn_head_dim: int = setting(64, "GDN_HEAD_DIM", check="positive",
                                help="gdn: key and value dim per head (num_heads of them)")
    gdn_conv_size: int = setting(4, "GDN_CONV_SIZE", check="positive", help="gdn: causal depthwise conv width on q, k, v")
    gdn_chunk_size: int = setting(64, "GDN_CHUNK_SIZE", help="gdn: tokens per chunk of the scan")
    gdn_backend: str = setting("pgolf", "GDN_BACKEND", ("pgolf", "fla", "auto"),
                               help="gdn: the scan's kernels: pgolf's, flash-linear-attention's (CUDA, the gpu "
                                    "extra), or auto (fla when importable)")
    kv_share_stride: int = setting(1, "KV_SHARE_STRIDE", check="positive",
                                   help="gdn: each group of this many layers uses its first layer's k/v projections")
    bigram_buckets: int = setting(0, "BIGRAM_BUCKETS", check="nonneg",
                                  help="BigramHash table rows; 0: no hashed n-gram embedding")
    bigram_dim: int = setting(112, "BIGRAM_DIM", check="positive")
    trigram: bool = setting(True, "TRIGRAM", help="BigramHash also looks up a trigram hash in the same table")
    smear_gate: bool = setting(False, "SMEAR_GATE", help="a SmearGate on the embedding (its form: smear_form)")
    smear_form: str = setting("static", "SMEAR_FORM", ("static", "input_gated"),
                              help="static: per-dimension σ(g) mix after the embedding norm (the GDN record); "
                                   "input_gated: the 1.0611 record's e_t += λ·σ(w·e_t[:12])·e_(t−1)·[id_t≠BOS] "
                                   "on the raw embedding (spec 5.6)")
    doc_isolation: bool = setting(False, "DOC_ISOLATION",
                                  help="nothing crosses a BOS: recurrent state, convs, SmearGate, n-gram hashes, "
                                       "attention")
    bos_id: int = setting(1, "BOS_ID", check="nonneg", help="the tokenizer's BOS id (doc_isolation)")
    init: str = setting("baseline", "MODEL_INIT", ("baseline", "record"),
                        help="baseline: the constructors' init (spec 4.1); record: orthogonal Q, K, V and MLP-up, "
                             "zero output projections, every block the identity (spec 5.2)")
    attention: AttentionConfig = section(AttentionConfig)
    stack: StackConfig = section(StackConfig)


@dataclass
class OptimConfig:
    matrix_lr: float = setting(0.04, "MATRIX_LR", help="Muon, block matrices", check="nonneg")
    scalar_lr: float = setting(0.04, "SCALAR_LR", help="Adam, vectors/scalars and skip weights", check="nonneg")
    tied_embed_lr: float = setting(0.05, "TIED_EMBED_LR", check="nonneg")
    embed_lr: float = setting(0.6, "EMBED_LR", help="untied input embedding", check="nonneg")
    head_lr: float = setting(0.008, "HEAD_LR", help="untied output head", check="nonneg")
    muon_momentum: float = setting(0.95, "MUON_MOMENTUM", check="unit")
    muon_momentum_warmup_start: float = setting(0.85, "MUON_MOMENTUM_WARMUP_START", check="unit")
    muon_momentum_warmup_steps: int = setting(500, "MUON_MOMENTUM_WARMUP_STEPS", check="nonneg")
    muon_backend_steps: int = setting(5, "MUON_BACKEND_STEPS", check="nonneg")
    muon_coefficients: str = setting("classic", "MUON_COEFFICIENTS", ("classic", "polar_express"),
                                     help="Newton-Schulz: the baseline's fixed quintic, or Polar Express")
    muon_norm_scale: float = setting(1.0, "MUON_NORM_SCALE", check="positive",
                                     help="Newton-Schulz input = G / (|G|_F * this + eps); see benchmarks/RESULTS.md")
    muon_row_normalize: bool = setting(False, "MUON_ROW_NORMALIZE", help="MuonEq-R: unit rows before Newton-Schulz")
    muon_wd: float = setting(0.0, "MUON_WD", help="decoupled weight decay on the matrices", check="nonneg")
    muon_sharded: bool = setting(False, "MUON_SHARDED",
                                 help="reduce-scatter matrix gradients (kept out of DDP) instead of DDP's all-reduce")
    beta1: float = setting(0.9, "BETA1", check="below1")
    beta2: float = setting(0.95, "BETA2", check="below1")
    adam_eps: float = setting(1e-8, "ADAM_EPS", check="positive")
    adam_wd: float = setting(0.0, "ADAM_WD", check="nonneg",
                             help="decoupled weight decay (AdamW) on the Adam groups but the embeddings: the "
                                  "controls, gates, norms and an untied head (the records: 0.02)")
    embed_wd: float = setting(0.0, "EMBED_WD", check="nonneg",
                              help="decoupled weight decay (AdamW) on the embedding group: the token embedding "
                                   "(tied or not) and n-gram tables, by role (the 1.0611 record: 0.085)")
    ema_decay: float = setting(0.0, "EMA_DECAY", check="below1",
                               help="EMA of the weights (fp32, every step from the init), swapped in after "
                                    "training: what is exported and scored (the records: 0.9965); 0: off")
    grad_clip_norm: float = setting(0.0, "GRAD_CLIP_NORM", help="0 disables", check="nonneg")


@dataclass
class DataConfig:
    path: str = setting("./data/datasets/fineweb10B_sp1024", "DATA_PATH", help="directory of fineweb_*.bin shards")
    tokenizer: str = setting("./data/tokenizers/fineweb_1024_bpe.model", "TOKENIZER_PATH")


@dataclass
class TrainConfig:
    iterations: int = setting(20000, "ITERATIONS", check="nonneg")
    batch_tokens: int = setting(524_288, "TRAIN_BATCH_TOKENS", help="global tokens per optimizer step", check="positive")
    seq_len: int = setting(1024, "TRAIN_SEQ_LEN", check="positive")
    grad_accum_steps: int = setting(0, "GRAD_ACCUM_STEPS", help="0: 8 // world_size, as the baseline", check="nonneg")
    warmup_steps: int = setting(20, "WARMUP_STEPS", check="nonneg",
                                help="priming steps before the clock starts; state is restored after")
    lr_warmup_steps: int = setting(0, "LR_WARMUP_STEPS", help="linear LR warmup at the start of training",
                                   check="nonneg")
    warmdown_iters: int = setting(1200, "WARMDOWN_ITERS", check="nonneg")
    warmdown_frac: float = setting(0.0, "WARMDOWN_FRAC", check="unit",
                                   help="the records' warmdown instead of warmdown_iters: over this last fraction of "
                                        "training (of the clock's stop, cap less export reserve, when time-based; "
                                        "else of iterations) the LR falls linearly towards 0 (the records: 0.85); "
                                        "0: off")
    min_lr: float = setting(0.0, "MIN_LR", check="unit",
                            help="floor of the warmdown's LR multiplier (the records: 0.1); late QAT's threshold "
                                 "reads the warmdown before the floor")
    warmdown: str = setting("auto", "WARMDOWN", ("auto", "time", "step"),
                            help="auto: time-based when a wallclock cap is set (the baseline), else step-based")
    max_wallclock_seconds: float = setting(600.0, "MAX_WALLCLOCK_SECONDS", help="0: no cap", check="nonneg")
    val_every: int = setting(1000, "VAL_LOSS_EVERY", help="0: only at the end", check="nonneg")
    log_every: int = setting(200, "TRAIN_LOG_EVERY", check="nonneg")
    checkpoint_every: int = setting(0, "CHECKPOINT_EVERY", help="0: only the final checkpoint", check="nonneg")
    qat_threshold: float = setting(0.0, "LATE_QAT_THRESHOLD", check="unit",
                                   help="int6 fake-quant forward (QAT) once the warmdown factor (without the LR warmup "
                                        "and the min_lr floor) drops below this; 0: never")
    ce: str = setting("eager", "CE_IMPL", ("eager", "fused", "fused_linear"),
                      help="training loss: eager softcap + F.cross_entropy, the fused Triton CE on logits, "
                           "or the fused LM head + CE that never materialises the logits")
    mlp_impl: str = setting("eager", "MLP_IMPL", ("eager", "fused"),
                            help="training MLP: eager torch, or the fused pgolf::leaky_relu2_mlp op (Triton on "
                                 "CUDA); the same function, and eval always runs eager")
    loss_weights: str = setting("none", "LOSS_WEIGHTS", ("none", "bytes", "bytes_pr1519"),
                                help="per-target weights: none; the bytes canonical BPB credits each target; "
                                     "or PR #1519's max(base bytes, 1)")
    loader: str = setting("stream", "TRAIN_LOADER", ("stream", "packed"),
                          help="stream: the baseline's rows of seq_len tokens; packed: one flat row per rank with "
                               "the documents' cu_seqlens for the varlen attention (spec 2.4; needs doc_isolation)")
    seq_schedule: str = setting("", "TRAIN_SEQ_SCHEDULE",
                                help="progressive training length LEN@FRACTION,... of cap - reserve (#2014: "
                                     "1024@0.100,2048@0.700,3072@1.000); its longest length must be seq_len; '': off")
    seq_rewarm_steps: int = setting(32, "SEQ_CHANGE_WARMUP_STEPS", check="nonneg",
                                    help="after each seq_schedule switch the LR multiplier ramps (k+1)/N over N steps")


@dataclass
class TTTConfig:
    """Score-first test-time training (challenge-spec §5.14, frontier-spec F3/F4). Defaults: the
    1.0611 run (#1855); names follow the records' logs. Used by eval.mode lora_ttt / sliding_ttt."""
    seq_len: int = setting(2048, "TTT_EVAL_SEQ_LEN", check="positive", help="per-document window (context)")
    chunk_size: int = setting(48, "TTT_CHUNK_SIZE", check="positive", help="targets scored, then trained on, per step")
    short_doc_chunks: str = setting("", "TTT_SHORT_DOC_CHUNKS",
                                    help="#2014's chunks for short documents, 'max_len:chunk,...' e.g. '256:8,2000:24'; "
                                         "'': chunk_size for every document")
    batch_docs: int = setting(64, "TTT_BATCH_SIZE", check="positive", help="documents per LoRA batch")
    lora_rank: int = setting(80, "TTT_LORA_RANK", check="positive")
    lora_alpha: float = setting(144.0, "TTT_LORA_ALPHA", check="positive", help="LoRA scale is alpha / rank")
    lora_lr: float = setting(1e-4, "TTT_LORA_LR", check="nonneg")
    beta1: float = setting(0.0, "TTT_BETA1", check="below1")
    beta2: float = setting(0.99, "TTT_BETA2", check="below1")
    eps: float = setting(1e-10, "TTT_EPS", check="positive")
    weight_decay: float = setting(0.5, "TTT_WEIGHT_DECAY", check="nonneg")
    grad_steps: int = setting(1, "TTT_GRAD_STEPS", check="positive", help="optimizer steps per chunk")
    warm_start_a: bool = setting(True, "TTT_WARM_START_A", help="keep A between batches (B is zeroed)")
    q_lora: bool = setting(True, "TTT_Q_LORA")
    k_lora: bool = setting(True, "TTT_K_LORA", help="#2135 switches K off")
    v_lora: bool = setting(True, "TTT_V_LORA")
    o_lora: bool = setting(True, "TTT_O_LORA")
    mlp_lora: bool = setting(True, "TTT_MLP_LORA")
    head_lora: bool = setting(True, "TTT_HEAD_LORA")
    phases: int = setting(3, "PHASED_TTT_NUM_PHASES", check="nonneg", help="global SGD phases (0: none)")
    prefix_docs: int = setting(2500, "PHASED_TTT_PREFIX_DOCS", check="nonneg",
                               help="documents the phases train on, split evenly between them")
    global_lr: float = setting(0.001, "GLOBAL_TTT_LR", check="nonneg")
    global_momentum: float = setting(0.9, "GLOBAL_TTT_MOMENTUM", check="below1")
    global_epochs: int = setting(1, "GLOBAL_TTT_EPOCHS", check="positive")
    global_chunk_tokens: int = setting(32768, "GLOBAL_TTT_CHUNK_TOKENS", check="positive")
    global_batch_seqs: int = setting(32, "GLOBAL_TTT_BATCH_SEQS", check="positive", help="sequences per rank per step")
    global_grad_clip: float = setting(1.0, "GLOBAL_TTT_GRAD_CLIP", check="nonneg", help="0: no clipping")
    sliding_chunk_tokens: int = setting(32768, "SLIDING_TTT_CHUNK_TOKENS", check="positive",
                                        help="sliding_ttt: tokens scored, then trained on, per chunk")
    sliding_epochs: int = setting(3, "SLIDING_TTT_EPOCHS", check="positive")
    sliding_lr: float = setting(0.005, "SLIDING_TTT_LR", check="nonneg")
    sliding_momentum: float = setting(0.9, "SLIDING_TTT_MOMENTUM", check="below1")
    sliding_grad_clip: float = setting(1.0, "SLIDING_TTT_GRAD_CLIP", check="nonneg")


@dataclass
class NgramConfig:
    """The token-only online n-gram tilt of the score (frontier-spec F1; #2135's values)."""
    enabled: bool = setting(False, "NGRAM_TILT_ENABLED")
    order: int = setting(16, "TOKEN_ORDER", check="positive", help="n: the context is the n-1 tokens before")
    threshold: float = setting(0.8, "TOKEN_THRESHOLD", check="unit", help="gate: top count / total >= this")
    beta: float = setting(2.625, "TOKEN_BOOST", check="nonneg", help="the hinted token's logit boost")


EVAL_MODES = ("windows", "lora_ttt", "sliding_ttt")


@dataclass
class EvalConfig:
    mode: str = setting("windows", "EVAL_MODE", EVAL_MODES,
                        help="windows: flat-stream windows (eval.stride); lora_ttt: score-first per-document LoRA TTT "
                             "with global SGD phases; sliding_ttt: sliding windows, score-first SGD per chunk")
    seq_len: int = setting(0, "EVAL_SEQ_LEN", help="0: the training seq_len", check="nonneg")
    stride: int = setting(0, "EVAL_STRIDE", check="nonneg",
                          help="0: non-overlapping windows; else sliding windows with this stride")
    doc_isolated: bool = setting(False, "EVAL_DOC_ISOLATED",
                                 help="windows mode: score each document on its own (no window crosses a BOS; long "
                                      "documents in chunks with as much in-document context as fits)")
    batch_tokens: int = setting(524_288, "VAL_BATCH_SIZE", help="global tokens per eval forward", check="positive")
    budget_seconds: float = setting(600.0, "EVAL_BUDGET_SECONDS", check="nonneg",
                                    help="the challenge's eval limit; the final score's eval time is checked against it "
                                         "(result.json: within_eval_budget); 0: none")
    ttt: TTTConfig = section(TTTConfig)
    ngram: NgramConfig = section(NgramConfig)


@dataclass
class ExportConfig:
    method: str = setting("rtn", "EXPORT_METHOD", ("rtn", "gptq"),
                          help="round-to-nearest, or GPTQ with SDClip scales on Hessians collected in the training budget")
    matrix_bits: int = setting(8, "MATRIX_BITS", (6, 7, 8), help="code width of the block matrices")
    embed_bits: int = setting(8, "EMBED_BITS", (6, 7, 8), help="code width of the embedding / head")
    attn_clip_sigmas: float = setting(13.0, "ATTN_CLIP_SIGMAS", help="SDClip k for attention matrices (gptq)",
                                      check="positive")
    mlp_clip_sigmas: float = setting(11.5, "MLP_CLIP_SIGMAS", help="SDClip k for MLP matrices (gptq)", check="positive")
    embed_clip_sigmas: float = setting(14.0, "EMBED_CLIP_SIGMAS", help="SDClip k for the embedding (gptq)",
                                       check="positive")
    matrix_clip_sigmas: float = setting(12.85, "MATRIX_CLIP_SIGMAS", help="SDClip k for other matrices (gptq)",
                                        check="positive")
    calib_batches: int = setting(16, "GPTQ_CALIB_BATCHES", help="training micro-batches per rank for the Hessians",
                                 check="positive")
    reserve_seconds: float = setting(8.0, "GPTQ_RESERVE_SECONDS", check="nonneg",
                                     help="stop training this long before the cap to collect Hessians inside it")
    lqer_top: int = setting(0, "LQER_TOP_K", help="LQER corrections on this many matrices with the largest error",
                            check="nonneg")
    lqer_rank: int = setting(4, "LQER_RANK", check="positive")
    lqer_asym_group: int = setting(64, "LQER_ASYM_GROUP", check="nonneg",
                                   help="LQER factors packed asymmetrically (A int2, one scale; B int4, a scale per this "
                                        "many elements; 64 #1855, 32 #2135); 0: symmetric at lqer_factor_bits (also the "
                                        "fallback where rank x cols does not divide)")
    lqer_factor_bits: int = setting(4, "LQER_FACTOR_BITS", (2, 3, 4, 5, 6, 7, 8),
                                    help="code width of both LQER factors in the symmetric packing (per-row scales)")
    awq_lite: bool = setting(False, "AWQ_LITE_ENABLED",
                             help="AWQ-lite (gptq): the most salient column groups (activation rms x mean |W|, over "
                                  "all tensors under awq_bits) coded at awq_bits inside the GPTQ solve (frontier F7.1)")
    awq_group_size: int = setting(64, "AWQ_LITE_GROUP_SIZE", check="positive", help="columns per AWQ-lite group")
    awq_group_top_k: int = setting(1, "AWQ_LITE_GROUP_TOP_K", check="positive",
                                   help="how many AWQ-lite groups, chosen over all tensors together")
    awq_bits: int = setting(8, "AWQ_LITE_BITS", (7, 8), help="code width of the AWQ-lite groups")
    quant_gate: bool = setting(True, "GATED_ATTN_QUANT_GATE",
                               help="gate matrices (role gate, e.g. SparseAttnGate) as int8 rows with row-max scales "
                                    "(#1855); false: fp16 passthrough (#2135)")
    control_dtype: str = setting("fp32", None, ("fp32", "fp16"),
                                 help="control tensors (role control: scales, mixes, gains): fp32, exact (the baseline), "
                                      "or fp16 passthrough restored to their dtype (the records, spec 5.11)")
    codec: str = setting("zlib", "COMPRESSOR", ("zlib", "brotli", "zstd", "lzma", "lrzip", "auto"),
                         help="auto: the smallest of every available codec, per stream")
    layout: str = setting("plain", "ARTIFACT_LAYOUT", ("plain", "grouped"),
                          help="grouped: codes by tensor class, rows reordered, transposed, packed or not (spec 5.12)")
    code_bytes: str = setting("raw", "CODE_BYTES", ("raw", "wrapped"),
                              help="how the code counts: the raw bytes of the files the run needs, or the "
                                   "packed train_gpt.py that pgolf submit ships")
    logit_calib: bool = setting(False, "LOGIT_CALIB",
                                help="logit calibration (spec 5.13): logits' = tau*logits + F.w, F 14 per-token features, "
                                     "fitted on the quantized model over the first train tokens on the training clock "
                                     "(reserve_seconds must cover it), stored in the artifact")
    logit_calib_tokens: int = setting(100_000, "LOGIT_CALIB_TOKENS", check="positive",
                                      help="logit calibration: fitted on this many first train tokens")
    logit_calib_lr: float = setting(0.003, "LOGIT_CALIB_LR", check="positive", help="logit calibration: Adam lr")
    logit_calib_l2: float = setting(0.01, "LOGIT_CALIB_L2", check="nonneg",
                                    help="logit calibration: L2 on w and tau - 1 (towards the identity)")
    logit_calib_epochs: int = setting(1, "LOGIT_CALIB_EPOCHS", check="positive", help="logit calibration: passes")
    logit_calib_stride: int = setting(64, "LOGIT_CALIB_STRIDE", check="positive",
                                      help="logit calibration: the sliding windows' stride over the fit tokens")
    logit_calib_batch_seqs: int = setting(8, "LOGIT_CALIB_BATCH_SEQS", check="positive",
                                          help="logit calibration: windows per forward (one Adam step each)")


@dataclass
class RunConfig:
    name: str = setting("", "RUN_ID", help="default: <preset>-<timestamp>")
    out_dir: str = setting("runs", "OUT_DIR")
    seed: int = setting(1337, "SEED", check="nonneg")
    device: str = setting("auto", "DEVICE", ("auto", "cpu", "cuda"))
    compile: bool = setting(False, "COMPILE", help="torch.compile the model")
    deterministic: bool = setting(False, "DETERMINISTIC", help="torch.use_deterministic_algorithms")
    resume: str = setting("", "RESUME", help="checkpoint to continue from")
    overwrite: bool = setting(False, "OVERWRITE", help="reuse a run directory that already holds a run")
    progress: bool = setting(True, "PROGRESS", help="show a progress bar")


@dataclass
class Config:
    run: RunConfig = section(RunConfig)
    model: ModelConfig = section(ModelConfig)
    optim: OptimConfig = section(OptimConfig)
    data: DataConfig = section(DataConfig)
    train: TrainConfig = section(TrainConfig)
    eval: EvalConfig = section(EvalConfig)
    export: ExportConfig = section(ExportConfig)

    def to_dict(self) -> dict:
        """Plain builtins only (LayerSet -> str), so checkpoints load with torch's weights_only."""
        plain = lambda items: {k: str(v) if isinstance(v, LayerSet) else v for k, v in items}
        return dataclasses.asdict(self, dict_factory=plain)


# ---------------------------------------------------------------------------------------
# Field registry

_KINDS = {"int": int, "float": float, "bool": bool, "str": str, "LayerSet": LayerSet}


def _is_section(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("section"))


def _walk(cls, prefix: str, path: tuple[str, ...]):
    for f in dataclasses.fields(cls):
        if _is_section(f):
            yield from _walk(f.default_factory, f"{prefix}{f.name}.", (*path, f.name))
        else:
            yield f"{prefix}{f.name}", path, f


# 'model.attention.rope_base' -> (('model', 'attention'), field) for every setting
FIELDS: dict[str, tuple[tuple[str, ...], dataclasses.Field]] = {
    key: (path, f) for key, path, f in _walk(Config, "", ())}
SECTIONS = {".".join(path) for path, _ in FIELDS.values()}
ENV_NAMES = {f.metadata["env"]: key for key, (_, f) in FIELDS.items() if f.metadata.get("env")}
# Spellings from before [model.attention] and [model.stack] existed: still accepted
# (overrides, user presets, configs inside older checkpoints).
MOVED = {"model.rope_base": "model.attention.rope_base", "model.qk_gain_init": "model.attention.qk_gain_init",
         "model.unet_skips": "model.stack.unet_skips", "model.attn_layers": "model.stack.attn_layers"}


def _owner(cfg: Config, path: tuple[str, ...]):
    obj = cfg
    for name in path:
        obj = getattr(obj, name)
    return obj


def get(cfg: Config, key: str) -> Any:
    path, f = FIELDS[key]
    return getattr(_owner(cfg, path), f.name)


def _coerce(key: str, f: dataclasses.Field, value: Any, source: str, text: bool) -> Any:
    """`text`: the value is a string to parse (env, command line); otherwise it must already have the type."""
    kind = f.type if isinstance(f.type, type) else _KINDS[f.type]
    if kind is LayerSet:
        if not isinstance(value, str):
            raise PgolfError(f"{source}: {key} must be a layer set string (all, 3-5, 0,3), got {value!r}")
        try:
            return LayerSet(value)
        except ValueError as e:
            raise PgolfError(f"{source}: {key}={value!r} is not a layer set ({e}; write all, 3-5, 0,3 or '')") from None
    if text and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                lowered = text.lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError
                value = lowered in ("1", "true", "yes", "on")
            elif kind is int:
                value = int(text.replace("_", ""))
            else:
                value = float(text.replace("_", ""))
        except ValueError:
            raise PgolfError(f"{source}: {key}={value!r} is not a valid {kind.__name__}") from None
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PgolfError(f"{source}: {key} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise PgolfError(f"{source}: {key}={value!r} must be one of {list(choices)}")
    return value


def _unknown(key: str, source: str) -> PgolfError:
    near = difflib.get_close_matches(key, [*FIELDS, *ENV_NAMES], n=3)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    return PgolfError(f"{source}: unknown setting {key!r}{hint}")


def _set(cfg: Config, key: str, value: Any, source: str, text: bool = False) -> None:
    key = ENV_NAMES.get(key, key)
    key = MOVED.get(key, key)
    if key not in FIELDS:
        raise _unknown(key, source)
    path, f = FIELDS[key]
    setattr(_owner(cfg, path), f.name, _coerce(key, f, value, source, text))


def _set_table(cfg: Config, table: Mapping, prefix: str, source: str) -> None:
    """A (possibly nested) mapping of settings: {"model": {"attention": {"rope_dims": 16}}}."""
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key in SECTIONS:
            _set_table(cfg, value, f"{key}.", source)
        elif isinstance(value, dict):
            raise _unknown(f"{key}.{next(iter(value), '')}", source)
        elif not prefix:
            raise PgolfError(f"{source}: top-level key {name!r} must be a [section]")
        else:
            _set(cfg, key, value, source)


def set_from_text(cfg: Config, key: str, value: str, source: str) -> None:
    """One `key=value` override (either spelling), parsed and type-checked."""
    _set(cfg, key, value, source, text=True)
    validate(cfg)


def preset_path(preset: str | os.PathLike, relative_to: Path | None = None) -> Path:
    path = Path(preset)
    if path.suffix != ".toml":
        path = PRESET_DIR / f"{preset}.toml"
    elif relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if not path.is_file():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.toml"))
        raise PgolfError(f"--config {preset}: no such preset or file (presets: {', '.join(names)})")
    return path


def _preset_chain(preset: str | os.PathLike, seen: tuple[Path, ...] = (),
                  relative_to: Path | None = None) -> list[tuple[Path, dict]]:
    """The preset's tables, the one it extends (recursively) first."""
    path = preset_path(preset, relative_to)
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise PgolfError(f"{path}: `extends` loops back ({chain})")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise PgolfError(f"{path}: invalid TOML ({e})") from None
    base = table.pop("extends", None)
    if base is None:
        return [(path, table)]
    if not isinstance(base, str) or not base:
        raise PgolfError(f"{path}: extends must be a preset name or a .toml path, got {base!r}")
    return [*_preset_chain(base, (*seen, path.resolve()), path.parent), (path, table)]


def preset_files(preset: str | os.PathLike) -> list[Path]:
    """The TOML files a preset reads: the ones it extends (recursively) first, then itself."""
    return [path for path, _ in _preset_chain(preset)]


def apply_preset(cfg: Config, preset: str | os.PathLike) -> None:
    for path, table in _preset_chain(preset):
        _set_table(cfg, table, "", str(path))


def load_config(preset: str | os.PathLike | None = None, overrides: list[str] = (),
                env: Mapping[str, str] | None = None) -> Config:
    """Defaults < preset < challenge environment variables < `key=value` overrides."""
    cfg = Config()
    if preset:
        apply_preset(cfg, preset)
    env = os.environ if env is None else env
    for name, key in ENV_NAMES.items():
        if name in env:
            _set(cfg, key, env[name], f"environment variable {name}", text=True)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PgolfError(f"override {item!r} must look like section.key=value or ENV_NAME=value")
        _set(cfg, key.strip(), value, "command line", text=True)
    validate(cfg)
    return cfg


def from_dict(data: dict, source: str) -> Config:
    """Rebuild a Config from `to_dict()` output (checkpoints, artifacts), strictly."""
    cfg = Config()
    if not isinstance(data, dict):
        raise PgolfError(f"{source}: the config must be a mapping, got {type(data).__name__}")
    _set_table(cfg, data, "", source)
    return cfg


# ---------------------------------------------------------------------------------------
# Validation: the one place


def attention_layers(m: ModelConfig) -> frozenset[int]:
    """The layers whose mixer is attention."""
    if m.arch == "transformer":
        return frozenset(range(m.num_layers))
    return m.stack.attn_layers.indices(m.num_layers)


def _range_problems(cfg: Config) -> list[str]:
    problems = []
    for key, (_, f) in FIELDS.items():
        value, check = get(cfg, key), f.metadata.get("check")
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{key} must be a finite number, got {value!r}")
        elif check and not CHECKS[check][0](value):
            problems.append(f"{key} {CHECKS[check][1]}, got {value!r}")
    return problems


def _arch_problems(m: ModelConfig) -> list[str]:
    problems = []
    layers = m.stack.attn_layers.indices(m.num_layers)
    if m.arch == "transformer" and m.stack.attn_layers:
        problems.append("model.stack.attn_layers only applies to model.arch=gdn")
    if any(i >= m.num_layers for i in layers):
        problems.append(f"model.stack.attn_layers={m.stack.attn_layers!r} must name layers in 0..{m.num_layers - 1}")
    if m.gdn_chunk_size < 16 or m.gdn_chunk_size & (m.gdn_chunk_size - 1):
        problems.append(f"model.gdn_chunk_size={m.gdn_chunk_size} must be a power of two >= 16")
    problems += _stack_problems(m)
    if m.bigram_buckets == 1:
        problems.append("model.bigram_buckets must be 0 (off) or at least 2")
    return problems


def _stack_problems(m: ModelConfig) -> list[str]:
    st, problems = m.stack, []
    loop = sorted(st.loop_layers.indices(m.num_layers))
    if st.loop_layers == "all" or (loop and loop != list(range(loop[0], loop[-1] + 1))):
        problems.append(f"model.stack.loop_layers={st.loop_layers!r} must be one contiguous range a-b")
    elif loop and loop[-1] >= m.num_layers:
        problems.append(f"model.stack.loop_layers={st.loop_layers!r} must name layers in 0..{m.num_layers - 1}")
    if not -1 <= st.parallel_start < m.num_layers:
        problems.append(f"model.stack.parallel_start={st.parallel_start} must be -1 (off) or a layer in "
                        f"0..{m.num_layers - 1}")
    elif loop and loop[0] < st.parallel_start <= loop[-1]:
        problems.append(f"model.stack.parallel_start={st.parallel_start} must come after the looped layers "
                        f"{st.loop_layers} or at their start (a layer cannot run on one lane and then on two)")
    return problems


def _attention_problems(m: ModelConfig) -> list[str]:
    a, problems = m.attention, []
    if m.num_heads <= 0 or m.model_dim % m.num_heads:
        return problems  # reported with the head count
    head_dim = m.model_dim // m.num_heads
    if a.rope_dims % 2 or a.rope_dims > head_dim:
        problems.append(f"model.attention.rope_dims={a.rope_dims} must be even and at most the head dim {head_dim}")
    xsa = a.xsa.indices(m.num_layers)
    if any(i >= m.num_layers for i in xsa):
        problems.append(f"model.attention.xsa={a.xsa!r} must name layers in 0..{m.num_layers - 1}")
    elif a.xsa != "all" and not xsa <= attention_layers(m):
        problems.append(f"model.attention.xsa={a.xsa!r} names layers without attention "
                        f"(attention layers: {sorted(attention_layers(m))})")
    if a.sparse_gate and a.sparse_gate_window > m.model_dim:
        problems.append(f"model.attention.sparse_gate_window={a.sparse_gate_window} exceeds model.model_dim={m.model_dim}")
    if not attention_layers(m):
        return problems
    if a.backend == "sdpa" and m.doc_isolation:
        problems.append("model.attention.backend=sdpa cannot keep documents apart (model.doc_isolation=true): "
                        "use flex, flash or auto")
    if a.backend in ("flex", "flash") and not m.doc_isolation:
        problems.append(f"model.attention.backend={a.backend} is a document-aware backend, but "
                        "model.doc_isolation=false: use sdpa or auto")
    return problems


def validate(cfg: Config) -> None:
    m, t, e = cfg.model, cfg.train, cfg.eval
    problems = _range_problems(cfg)
    if t.qat_threshold > 0 and cfg.export.matrix_bits != 6:  # QAT fakes int6 codes (pgolf.ops.int6_matmul)
        problems.append(f"train.qat_threshold={t.qat_threshold} trains against int6 codes, but export.matrix_bits="
                        f"{cfg.export.matrix_bits}: set export.matrix_bits=6 or train.qat_threshold=0")
    if t.warmdown_frac > 0 and t.warmdown_iters > 0:
        problems.append(f"train.warmdown_frac={t.warmdown_frac} and train.warmdown_iters={t.warmdown_iters} are two "
                        "warmdowns: set train.warmdown_iters=0 to use the fraction, or train.warmdown_frac=0")
    if cfg.export.awq_lite and cfg.export.method != "gptq":  # its groups are chosen and coded inside GPTQ
        problems.append("export.awq_lite=true needs export.method=gptq")
    if m.num_heads > 0 and m.model_dim % m.num_heads:
        problems.append(f"model.model_dim={m.model_dim} must be divisible by model.num_heads={m.num_heads}")
    elif m.num_heads > 0 and (m.model_dim // m.num_heads) % 2:
        problems.append("model.model_dim / model.num_heads (the head dim) must be even for RoPE")
    if m.num_kv_heads > 0 and m.num_heads % m.num_kv_heads:
        problems.append(f"model.num_heads={m.num_heads} must be divisible by model.num_kv_heads={m.num_kv_heads}")
    problems += _arch_problems(m) + _attention_problems(m)
    if t.seq_len > 0 and t.batch_tokens % t.seq_len:
        problems.append(f"train.batch_tokens={t.batch_tokens} must be a multiple of train.seq_len={t.seq_len}")
    eval_len = e.seq_len or t.seq_len
    if e.stride > eval_len:
        problems.append(f"eval.stride={e.stride} must not exceed the eval seq_len {eval_len}")
    if cfg.export.logit_calib and cfg.export.logit_calib_stride > eval_len:
        problems.append(f"export.logit_calib_stride={cfg.export.logit_calib_stride} must not exceed the eval seq_len "
                        f"{eval_len} (the calibration fits on eval-length windows)")
    if problems:
        raise PgolfError("invalid config: " + "; ".join(problems))
