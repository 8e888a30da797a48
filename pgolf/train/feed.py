"""The trainer's data feed: which loader (train.loader), the length each step trains at
(train.seq_schedule, frontier spec F5), and the shapes the warm-up must compile.

- stream: the baseline's token stream (pgolf.train.loader); the active length is the length
  of the rows [local / len, len] a rank's tokens are cut into.
- packed: the records' DocumentPackingLoader (pgolf.data.packing, spec §2.4): one flat row
  [1, local] per rank with its documents' `cu_seqlens`, documents cut at the active length
  (also the kernel's `max_seqlen`). The model takes those boundaries as given (GPT.forward's
  cu_seqlens), so packed needs model.doc_isolation, and an attention backend that trains on
  the run's device: flex has no backward on a CPU and flash runs on CUDA only, so packed
  training on a CPU is refused (the tests train it there with the dense SDPA reference).

The active length comes from a SeqLenSchedule: train.seq_schedule, or the constant
train.seq_len when it is empty. Progress is measured as the recurrence switch measures it:
elapsed training time over the clock's stop (cap − reserve) when the run is capped, else
step / train.iterations. A switch re-warms the LR (SeqLenPlan.lr_mult, for every optimizer).

torch.compile: the loader pads cu_seqlens to multiples of CU_BUCKET entries, and the feed
marks that one dimension dynamic, so a compiled step depends only on (length, recurrence):
the warm-up compiles each pair of `compile_shapes` and nothing recompiles after it.

The feed's state (the checkpoint's "loader" field) is the loader's own position dict plus
"seq_len" and "rewarm_from" (the SeqLenState); a state without them (written before the
schedule existed) resumes at the schedule's start.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pgolf.config import Config
from pgolf.distributed import DistEnv
from pgolf.errors import PgolfError
from pgolf.optim.seqlen_schedule import SeqLenPlan, SeqLenSchedule, SeqLenState
from pgolf.train.loader import DistributedTokenLoader

CU_BUCKET = 64  # cu_seqlens entries are padded to a multiple of this (the records' 64)
PREFETCH = 2  # packed batches built ahead on a thread on CUDA (the records' 2); on a CPU nothing overlaps
SEQ_KEYS = ("seq_len", "rewarm_from")
# Attention backends that cannot train document-isolated attention off CUDA, and why.
CUDA_ONLY_TRAINING = {"flex": "torch has no FlexAttention backward on a CPU",
                      "flash": "flash-attn's varlen kernel runs on CUDA only"}


@dataclass(frozen=True)
class TrainBatch:
    """One micro-step's inputs / targets; a packed row also has its cu_seqlens and max_seqlen."""

    inputs: Tensor
    targets: Tensor
    cu_seqlens: Tensor | None = None
    max_seqlen: int = 0

    def model_kwargs(self) -> dict:
        """The model's document arguments (none for stream rows: the model finds BOS itself)."""
        return {} if self.cu_seqlens is None else {"cu_seqlens": self.cu_seqlens, "max_seqlen": self.max_seqlen}


def training_progress(elapsed_ms: float, step: int, stop_ms: float, iterations: int) -> float:
    """The fraction of training done, in [0, 1]: of the clock's stop (cap − reserve) when capped,
    else of train.iterations (the measure the recurrence switch uses too)."""
    if stop_ms:
        return SeqLenSchedule.progress(elapsed_ms, stop_ms)
    return SeqLenSchedule.step_progress(step, iterations)


def build_schedule(cfg: Config, local_tokens: int) -> SeqLenSchedule:
    """train.seq_schedule, checked against train.seq_len and the tokens per rank and micro-step."""
    t = cfg.train
    if not t.seq_schedule:
        return SeqLenSchedule.constant(t.seq_len)
    try:
        schedule = SeqLenSchedule.parse(t.seq_schedule, t.seq_rewarm_steps)
        schedule.check_divides(local_tokens)
    except PgolfError as e:
        raise PgolfError(f"train.seq_schedule={t.seq_schedule!r}: {e}") from None
    if schedule.max_seq_len != t.seq_len:
        raise PgolfError(f"train.seq_schedule={t.seq_schedule!r}: its longest length {schedule.max_seq_len} must "
                         f"equal train.seq_len={t.seq_len} (evaluation and the rows' bound use train.seq_len)")
    return schedule


def check_packed(cfg: Config, device: torch.device, attention_backend) -> None:
    """Packed training needs document isolation and a backend that trains on `device`."""
    if not cfg.model.doc_isolation:
        raise PgolfError("train.loader=packed gives the model its documents' boundaries (cu_seqlens): "
                         "set model.doc_isolation=true")
    name = getattr(attention_backend, "name", None)
    if device.type != "cuda" and name in CUDA_ONLY_TRAINING:
        raise PgolfError(f"train.loader=packed trains document-isolated attention, and model.attention.backend "
                         f"resolves to {name} on {device.type}, which cannot train there "
                         f"({CUDA_ONLY_TRAINING[name]}); no pgolf attention backend trains it on a CPU: run "
                         f"train.loader=packed on a CUDA device (flash or flex), or use train.loader=stream")


class TrainFeed:
    """Batches for one rank at the schedule's active length; see the module docstring."""

    def __init__(self, loader, schedule: SeqLenSchedule, device: torch.device, global_tokens: int, accum: int):
        self.loader, self.schedule, self.device = loader, schedule, device
        self.global_tokens, self.accum = global_tokens, accum
        self.packed = getattr(loader, "packed_rows", False)  # pgolf.data.packing, imported only when used
        self.state = schedule.start()

    @classmethod
    def from_config(cls, cfg: Config, env: DistEnv, vocab_size: int, bos_id: int, accum: int,
                    attention_backend=None) -> "TrainFeed":
        t, device = cfg.train, env.device
        local = t.batch_tokens // (env.world * accum)
        schedule = build_schedule(cfg, local)
        if t.loader == "stream":
            loader = DistributedTokenLoader(cfg.data.path, env.rank, env.world, vocab_size, device)
        else:
            from pgolf.data.packing import DocumentPackingLoader  # train.loader=packed only (trace.OPTIONAL)

            check_packed(cfg, device, attention_backend)
            cuda = device.type == "cuda"
            loader = DocumentPackingLoader.from_dir(cfg.data.path, rank=env.rank, world=env.world, local_tokens=local,
                                                    seq_len=schedule.start().seq_len, vocab_size=vocab_size,
                                                    bos_id=bos_id, cu_bucket=CU_BUCKET,
                                                    prefetch=PREFETCH if cuda else 0, pin_memory=cuda)
        return cls(loader, schedule, device, t.batch_tokens, accum)

    @property
    def seq_len(self) -> int:
        """The active length."""
        return self.state.seq_len

    def advance(self, step: int, progress: float) -> SeqLenPlan:
        """The length and LR re-warm multiplier of step `step` at training `progress`."""
        self.state, plan = self.schedule.advance(self.state, step, progress)
        return plan

    def use_seq_len(self, seq_len: int) -> None:
        """Train at `seq_len` from now on, without a re-warm (the warm-up's shapes)."""
        self.state = SeqLenState(seq_len)

    def compile_shapes(self, loop_at: float | None) -> tuple[tuple[int, bool], ...]:
        """Every (length, recurrence on) pair training will meet; loop_at None: no recurrence."""
        return self.schedule.compile_shapes(loop_at)

    def next_batch(self) -> TrainBatch:
        if not self.packed:
            x, y = self.loader.next_batch(self.global_tokens, self.seq_len, self.accum)
            return TrainBatch(x, y)
        batch = self.loader.next_batch(self.seq_len).to(self.device)
        torch._dynamo.mark_dynamic(batch.cu_seqlens, 0)  # its bucketed length varies: one graph for all
        return TrainBatch(batch.inputs, batch.targets, batch.cu_seqlens, batch.max_seqlen)

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {**self.loader.state_dict(), "seq_len": self.state.seq_len, "rewarm_from": self.state.rewarm_from}

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        """`source` names where the state came from, for errors."""
        if not isinstance(state, dict):
            raise PgolfError(f"{source}: the loader state must be a dict, got {type(state).__name__}")
        position = {k: v for k, v in state.items() if k not in SEQ_KEYS}
        seq = self._seq_state(state, source) if any(k in state for k in SEQ_KEYS) else self.schedule.start()
        if self.packed:
            self._load_packed(position, source)
        else:
            self.loader.load_state_dict(position, source)
        self.state = seq

    def _seq_state(self, state: dict, source: str) -> SeqLenState:
        seq_len, since = state.get("seq_len"), state.get("rewarm_from")
        if type(seq_len) is not int or seq_len not in self.schedule.shapes():
            raise PgolfError(f"{source}: loader seq_len={seq_len!r} is not a length of this run's schedule "
                             f"{list(self.schedule.shapes())}")
        if since is not None and (type(since) is not int or since < 0):
            raise PgolfError(f"{source}: loader rewarm_from={since!r} must be null or a step number")
        return SeqLenState(seq_len, since)

    def _load_packed(self, position: dict, source: str) -> None:
        loader = self.loader
        shard, cursor = position.get("shard"), position.get("cursor")
        if type(shard) is not int or type(cursor) is not int or not 0 <= shard < len(loader.files) \
                or not -1 <= cursor <= loader.n_tokens[shard]:
            raise PgolfError(f"{source}: packed loader position shard={shard!r} cursor={cursor!r} is outside the "
                             f"train shards ({len(loader.files)} files)")
        try:
            loader.load_state_dict(position)
        except KeyError as e:
            raise PgolfError(f"{source}: packed loader state lacks {e}") from None
        except PgolfError as e:
            raise PgolfError(f"{source}: {e}") from None

    def close(self) -> None:
        if self.packed:
            self.loader.close()
