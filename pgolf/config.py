"""Typed run configuration.

A run's settings are nested dataclasses. They come, in increasing precedence, from the
defaults below, a preset (a TOML file: a name in pgolf/configs/ or a path), the
challenge's environment variable names (DATA_PATH, ITERATIONS, ...: each field names its
variable, so competitors' habits carry over), and command-line overrides, written either
`section.key=value` or `ENV_NAME=value`. Unknown keys and values of the wrong type are
errors that name the key and where it came from.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pgolf.errors import PgolfError

PRESET_DIR = Path(__file__).parent / "configs"


def setting(default, env: str | None = None, choices: tuple | None = None, help: str = ""):
    return field(default=default, metadata={"env": env, "choices": choices, "help": help})


@dataclass
class ModelConfig:
    vocab_size: int = setting(1024, "VOCAB_SIZE")
    num_layers: int = setting(9, "NUM_LAYERS")
    model_dim: int = setting(512, "MODEL_DIM")
    num_heads: int = setting(8, "NUM_HEADS")
    num_kv_heads: int = setting(4, "NUM_KV_HEADS")
    mlp_mult: int = setting(2, "MLP_MULT")
    tie_embeddings: bool = setting(True, "TIE_EMBEDDINGS")
    tied_embed_init_std: float = setting(0.005, "TIED_EMBED_INIT_STD")
    rope_base: float = setting(10000.0, "ROPE_BASE")
    logit_softcap: float = setting(30.0, "LOGIT_SOFTCAP")
    qk_gain_init: float = setting(1.5, "QK_GAIN_INIT")
    unet_skips: bool = setting(True, "UNET_SKIPS", help="the baseline's encoder-decoder skip connections")
    arch: str = setting("transformer", "ARCH", ("transformer", "gdn"),
                        help="the sequence mixer of every block: attention, or GatedDeltaNet (spec 6.1)")
    attn_layers: str = setting("", "ATTN_LAYERS", help="gdn: comma-separated layers that use attention instead (hybrid)")
    gdn_head_dim: int = setting(64, "GDN_HEAD_DIM", help="gdn: key and value dim per head (num_heads of them)")
    gdn_conv_size: int = setting(4, "GDN_CONV_SIZE", help="gdn: causal depthwise conv width on q, k, v")
    gdn_chunk_size: int = setting(64, "GDN_CHUNK_SIZE", help="gdn: tokens per chunk of the scan")
    kv_share_stride: int = setting(1, "KV_SHARE_STRIDE",
                                   help="gdn: each group of this many layers uses its first layer's k/v projections")
    bigram_buckets: int = setting(0, "BIGRAM_BUCKETS", help="BigramHash table rows; 0: no hashed n-gram embedding")
    bigram_dim: int = setting(112, "BIGRAM_DIM")
    trigram: bool = setting(True, "TRIGRAM", help="BigramHash also looks up a trigram hash in the same table")
    smear_gate: bool = setting(False, "SMEAR_GATE", help="static SmearGate after the embedding norm")
    doc_isolation: bool = setting(False, "DOC_ISOLATION",
                                  help="nothing crosses a BOS: recurrent state, convs, SmearGate, n-gram hashes, "
                                       "attention")
    bos_id: int = setting(1, "BOS_ID", help="the tokenizer's BOS id (doc_isolation)")


@dataclass
class OptimConfig:
    matrix_lr: float = setting(0.04, "MATRIX_LR", help="Muon, block matrices")
    scalar_lr: float = setting(0.04, "SCALAR_LR", help="Adam, vectors/scalars and skip weights")
    tied_embed_lr: float = setting(0.05, "TIED_EMBED_LR")
    embed_lr: float = setting(0.6, "EMBED_LR", help="untied input embedding")
    head_lr: float = setting(0.008, "HEAD_LR", help="untied output head")
    muon_momentum: float = setting(0.95, "MUON_MOMENTUM")
    muon_momentum_warmup_start: float = setting(0.85, "MUON_MOMENTUM_WARMUP_START")
    muon_momentum_warmup_steps: int = setting(500, "MUON_MOMENTUM_WARMUP_STEPS")
    muon_backend_steps: int = setting(5, "MUON_BACKEND_STEPS")
    muon_coefficients: str = setting("classic", "MUON_COEFFICIENTS", ("classic", "polar_express"),
                                     help="Newton-Schulz: the baseline's fixed quintic, or Polar Express")
    muon_norm_scale: float = setting(1.0, "MUON_NORM_SCALE",
                                     help="Newton-Schulz input = G / (|G|_F * this + eps); see benchmarks/RESULTS.md")
    muon_row_normalize: bool = setting(False, "MUON_ROW_NORMALIZE", help="MuonEq-R: unit rows before Newton-Schulz")
    muon_wd: float = setting(0.0, "MUON_WD", help="decoupled weight decay on the matrices")
    muon_sharded: bool = setting(False, "MUON_SHARDED",
                                 help="reduce-scatter matrix gradients (kept out of DDP) instead of DDP's all-reduce")
    beta1: float = setting(0.9, "BETA1")
    beta2: float = setting(0.95, "BETA2")
    adam_eps: float = setting(1e-8, "ADAM_EPS")
    adam_wd: float = setting(0.0, "ADAM_WD", help="decoupled weight decay (AdamW) on every Adam group")
    grad_clip_norm: float = setting(0.0, "GRAD_CLIP_NORM", help="0 disables")


@dataclass
class DataConfig:
    path: str = setting("./data/datasets/fineweb10B_sp1024", "DATA_PATH", help="directory of fineweb_*.bin shards")
    tokenizer: str = setting("./data/tokenizers/fineweb_1024_bpe.model", "TOKENIZER_PATH")


@dataclass
class TrainConfig:
    iterations: int = setting(20000, "ITERATIONS")
    batch_tokens: int = setting(524_288, "TRAIN_BATCH_TOKENS", help="global tokens per optimizer step")
    seq_len: int = setting(1024, "TRAIN_SEQ_LEN")
    grad_accum_steps: int = setting(0, "GRAD_ACCUM_STEPS", help="0: 8 // world_size, as the baseline")
    warmup_steps: int = setting(20, "WARMUP_STEPS", help="priming steps before the clock starts; state is restored after")
    lr_warmup_steps: int = setting(0, "LR_WARMUP_STEPS", help="linear LR warmup at the start of training")
    warmdown_iters: int = setting(1200, "WARMDOWN_ITERS")
    warmdown: str = setting("auto", "WARMDOWN", ("auto", "time", "step"),
                            help="auto: time-based when a wallclock cap is set (the baseline), else step-based")
    max_wallclock_seconds: float = setting(600.0, "MAX_WALLCLOCK_SECONDS", help="0: no cap")
    val_every: int = setting(1000, "VAL_LOSS_EVERY", help="0: only at the end")
    log_every: int = setting(200, "TRAIN_LOG_EVERY")
    checkpoint_every: int = setting(0, "CHECKPOINT_EVERY", help="0: only the final checkpoint")
    qat_threshold: float = setting(0.0, "LATE_QAT_THRESHOLD",
                                   help="int6 fake-quant forward (QAT) once the LR multiplier drops below this; 0: never")
    ce: str = setting("eager", "CE_IMPL", ("eager", "fused", "fused_linear"),
                      help="training loss: eager softcap + F.cross_entropy, the fused Triton CE on logits, "
                           "or the fused LM head + CE that never materialises the logits")
    loss_weights: str = setting("none", "LOSS_WEIGHTS", ("none", "bytes", "bytes_pr1519"),
                                help="per-target weights: none; the bytes canonical BPB credits each target; "
                                     "or PR #1519's max(base bytes, 1)")


@dataclass
class EvalConfig:
    seq_len: int = setting(0, "EVAL_SEQ_LEN", help="0: the training seq_len")
    stride: int = setting(0, "EVAL_STRIDE", help="0: non-overlapping windows; else sliding windows with this stride")
    batch_tokens: int = setting(524_288, "VAL_BATCH_SIZE", help="global tokens per eval forward")
    budget_seconds: float = setting(600.0, "EVAL_BUDGET_SECONDS",
                                    help="the challenge's eval limit; the final score's eval time is checked against it "
                                         "(result.json: within_eval_budget); 0: none")


@dataclass
class ExportConfig:
    method: str = setting("rtn", "EXPORT_METHOD", ("rtn", "gptq"),
                          help="round-to-nearest, or GPTQ with SDClip scales on Hessians collected in the training budget")
    matrix_bits: int = setting(8, "MATRIX_BITS", (6, 7, 8), help="code width of the block matrices")
    embed_bits: int = setting(8, "EMBED_BITS", (6, 7, 8), help="code width of the embedding / head")
    attn_clip_sigmas: float = setting(13.0, "ATTN_CLIP_SIGMAS", help="SDClip k for attention matrices (gptq)")
    mlp_clip_sigmas: float = setting(11.5, "MLP_CLIP_SIGMAS", help="SDClip k for MLP matrices (gptq)")
    embed_clip_sigmas: float = setting(14.0, "EMBED_CLIP_SIGMAS", help="SDClip k for the embedding (gptq)")
    matrix_clip_sigmas: float = setting(12.85, "MATRIX_CLIP_SIGMAS", help="SDClip k for other matrices (gptq)")
    calib_batches: int = setting(16, "GPTQ_CALIB_BATCHES", help="training micro-batches per rank for the Hessians")
    reserve_seconds: float = setting(8.0, "GPTQ_RESERVE_SECONDS",
                                     help="stop training this long before the cap to collect Hessians inside it")
    lqer_top: int = setting(0, "LQER_TOP_K", help="LQER corrections on this many matrices with the largest error")
    lqer_rank: int = setting(4, "LQER_RANK")
    codec: str = setting("zlib", "COMPRESSOR", ("zlib", "brotli", "zstd", "lzma", "lrzip", "auto"),
                         help="auto: the smallest of every available codec, per stream")
    layout: str = setting("plain", "ARTIFACT_LAYOUT", ("plain", "grouped"),
                          help="grouped: codes by tensor class, rows reordered, transposed, packed or not (spec 5.12)")
    code_bytes: str = setting("raw", "CODE_BYTES", ("raw", "wrapped"),
                              help="how the code counts: raw source bytes, or a compressed self-extracting wrapper")


@dataclass
class RunConfig:
    name: str = setting("", "RUN_ID", help="default: <preset>-<timestamp>")
    out_dir: str = setting("runs", "OUT_DIR")
    seed: int = setting(1337, "SEED")
    device: str = setting("auto", "DEVICE", ("auto", "cpu", "cuda"))
    compile: bool = setting(False, "COMPILE", help="torch.compile the model")
    deterministic: bool = setting(False, "DETERMINISTIC", help="torch.use_deterministic_algorithms")
    resume: str = setting("", "RESUME", help="checkpoint to continue from")
    overwrite: bool = setting(False, "OVERWRITE", help="reuse a run directory that already holds a run")
    progress: bool = setting(True, "PROGRESS", help="show a progress bar")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------
# Field registry


def _fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """'section.key' -> (section, field) for every setting."""
    out = {}
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory()):
            out[f"{section.name}.{f.name}"] = (section.name, f)
    return out


FIELDS = _fields()
ENV_NAMES = {f.metadata["env"]: key for key, (_, f) in FIELDS.items() if f.metadata.get("env")}


def _coerce(key: str, f: dataclasses.Field, value: Any, source: str, text: bool) -> Any:
    """`text`: the value is a string to parse (env, command line); otherwise it must already have the type."""
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str}[f.type]
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
    if key not in FIELDS:
        raise _unknown(key, source)
    section, f = FIELDS[key]
    setattr(getattr(cfg, section), f.name, _coerce(key, f, value, source, text))


def set_from_text(cfg: Config, key: str, value: str, source: str) -> None:
    """One `key=value` override (either spelling), parsed and type-checked."""
    _set(cfg, key, value, source, text=True)
    validate(cfg)


def preset_path(preset: str | os.PathLike) -> Path:
    path = Path(preset)
    if path.suffix != ".toml":
        path = PRESET_DIR / f"{preset}.toml"
    if not path.is_file():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.toml"))
        raise PgolfError(f"--config {preset}: no such preset or file (presets: {', '.join(names)})")
    return path


def apply_preset(cfg: Config, preset: str | os.PathLike) -> None:
    path = preset_path(preset)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise PgolfError(f"{path}: invalid TOML ({e})") from None
    for section, values in table.items():
        if not isinstance(values, dict):
            raise PgolfError(f"{path}: top-level key {section!r} must be a [section]")
        for key, value in values.items():
            if f"{section}.{key}" not in FIELDS:
                raise _unknown(f"{section}.{key}", str(path))
            _set(cfg, f"{section}.{key}", value, str(path))


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
    for section, values in data.items():
        for key, value in values.items():
            _set(cfg, f"{section}.{key}", value, source)
    return cfg


def attention_layers(m: ModelConfig) -> set[int]:
    """The layers whose mixer is attention."""
    if m.arch == "transformer":
        return set(range(m.num_layers))
    return {int(x) for x in m.attn_layers.split(",") if x.strip()}


def _arch_problems(m: ModelConfig) -> list[str]:
    problems = []
    try:
        layers = attention_layers(m)
    except ValueError:
        return [f"model.attn_layers={m.attn_layers!r} must be comma-separated layer numbers"]
    if m.arch == "transformer" and m.attn_layers:
        problems.append("model.attn_layers only applies to model.arch=gdn")
    if any(i < 0 or i >= m.num_layers for i in layers):
        problems.append(f"model.attn_layers={m.attn_layers!r} must name layers in 0..{m.num_layers - 1}")
    for key in ("gdn_head_dim", "gdn_conv_size", "kv_share_stride", "bigram_dim"):
        if getattr(m, key) <= 0:
            problems.append(f"model.{key} must be positive")
    if m.gdn_chunk_size < 16 or m.gdn_chunk_size & (m.gdn_chunk_size - 1):
        problems.append(f"model.gdn_chunk_size={m.gdn_chunk_size} must be a power of two >= 16")
    if m.bigram_buckets < 0 or m.bigram_buckets == 1:
        problems.append("model.bigram_buckets must be 0 (off) or at least 2")
    return problems


def validate(cfg: Config) -> None:
    m, t, e = cfg.model, cfg.train, cfg.eval
    problems = []
    for key in ("model.vocab_size", "model.num_layers", "model.model_dim", "model.num_heads", "model.num_kv_heads",
                "model.mlp_mult", "train.batch_tokens", "train.seq_len"):
        section, f = FIELDS[key]
        if getattr(getattr(cfg, section), f.name) <= 0:
            problems.append(f"{key} must be positive")
    for key in ("train.iterations", "train.grad_accum_steps", "train.warmup_steps", "train.lr_warmup_steps",
                "train.warmdown_iters", "train.val_every", "train.log_every", "train.checkpoint_every",
                "eval.seq_len", "eval.stride", "train.max_wallclock_seconds", "eval.budget_seconds"):
        section, f = FIELDS[key]
        if getattr(getattr(cfg, section), f.name) < 0:
            problems.append(f"{key} must not be negative")
    if m.num_heads > 0 and m.model_dim % m.num_heads:
        problems.append(f"model.model_dim={m.model_dim} must be divisible by model.num_heads={m.num_heads}")
    elif m.num_heads > 0 and (m.model_dim // m.num_heads) % 2:
        problems.append("model.model_dim / model.num_heads (the head dim) must be even for RoPE")
    if m.num_kv_heads > 0 and m.num_heads % m.num_kv_heads:
        problems.append(f"model.num_heads={m.num_heads} must be divisible by model.num_kv_heads={m.num_kv_heads}")
    problems += _arch_problems(m)
    if m.logit_softcap <= 0:
        problems.append("model.logit_softcap must be positive")
    if t.seq_len > 0 and t.batch_tokens % t.seq_len:
        problems.append(f"train.batch_tokens={t.batch_tokens} must be a multiple of train.seq_len={t.seq_len}")
    eval_len = e.seq_len or t.seq_len
    if e.stride > eval_len:
        problems.append(f"eval.stride={e.stride} must not exceed the eval seq_len {eval_len}")
    if problems:
        raise PgolfError("invalid config: " + "; ".join(problems))
