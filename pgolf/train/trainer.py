"""The training run: data -> model -> optimizer loop -> export -> score the exported file.

It follows the baseline's protocol (spec §4.3): optional priming steps before the clock
(real steps whose effects are then undone, so compilation happens off the clock), a
training clock that covers only the optimizer loop (validation and checkpoints pause
it), a wallclock cap agreed across ranks, and a final score computed from the artifact
as written to disk, never from the in-memory weights.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from pgolf.config import Config
from pgolf.data.tokenizer import load_tokenizer
from pgolf.errors import PgolfError
from pgolf.eval.evaluator import autocast_for, evaluate
from pgolf.export.export import ExportReport, export_model, load_artifact_state, run_meta
from pgolf.fileio import atomic_write_json
from pgolf.metric.bpb import BPBResult
from pgolf.metric.bytes import TargetByteWeights
from pgolf.metric.valset import load_val_set
from pgolf.model import GPT, prepare_for_device, tokenizer_mismatch
from pgolf.model.layers import CastedLinear
from pgolf.optim.build import build_optimizers
from pgolf.optim.muon import Muon
from pgolf.optim.schedule import LRSchedule, muon_momentum
from pgolf.quant.hessians import HessianCollector
from pgolf.quant.recipe import is_coded_matrix
from pgolf.train import checkpoint as ckpt
from pgolf.train.distributed import (DistEnv, broadcast_object, init_distributed, max_over_ranks, mean_over_ranks,
                                     shutdown)
from pgolf.train.loader import DistributedTokenLoader
from pgolf.train.logs import RunLog, plot_curves

ARTIFACT_NAME = "model.pgolf"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainResult:
    is_main: bool  # rank 0; every rank gets the same all-reduced numbers
    run_dir: Path
    steps: int
    train_time_ms: float
    prequant: BPBResult
    final: BPBResult  # scored from the artifact file
    export: ExportReport


def run_training(cfg: Config, preset: str = "run") -> TrainResult:
    """Entry point for `pgolf train` and `torchrun -m pgolf.train`."""
    env = init_distributed(cfg.run.device)
    try:
        return Trainer(cfg, env, preset).run()
    finally:
        shutdown()


def grad_accum_steps(cfg: Config, world: int) -> int:
    accum = cfg.train.grad_accum_steps or (8 // world if 8 % world == 0 else 1)
    local = cfg.train.batch_tokens // (world * accum)
    if local * world * accum != cfg.train.batch_tokens or local % cfg.train.seq_len or local == 0:
        raise PgolfError(
            f"train.batch_tokens={cfg.train.batch_tokens} must split into whole train.seq_len={cfg.train.seq_len} "
            f"sequences over world_size={world} x grad_accum_steps={accum}")
    return accum


def late_qat_layers(model: GPT) -> dict[str, CastedLinear]:
    """The block linears whose weights export codes at matrix_bits (by parameter-name prefix);
    the small ones it stores in fp16 (GDN's a/b projections) must not train against int6 noise."""
    return {f"blocks.{name}": m for name, m in model.blocks.named_modules()
            if isinstance(m, CastedLinear) and is_coded_matrix(f"blocks.{name}.weight", m.weight)}


class Trainer:
    def __init__(self, cfg: Config, env: DistEnv, preset: str):
        self.cfg, self.env = cfg, env
        self.device = env.device
        self._seed()
        self.run_dir = self._make_run_dir(preset)
        self.log = RunLog(self.run_dir, env.is_main, cfg.train.iterations, cfg.run.progress)

        tok = load_tokenizer(cfg.data.tokenizer)
        mismatch = tokenizer_mismatch(cfg.model, tok.vocab_size, tok.bos_id)
        if mismatch:
            raise PgolfError(f"tokenizer {cfg.data.tokenizer}: {mismatch}")
        self.val = load_val_set(cfg.data.path, tok).to(self.device)
        self.byte_weights = (TargetByteWeights(tok, cfg.train.loss_weights).to(self.device)
                             if cfg.train.loss_weights != "none" else None)
        self.loader = DistributedTokenLoader(cfg.data.path, env.rank, env.world, tok.vocab_size, self.device)

        self.model = prepare_for_device(GPT(cfg.model), self.device)
        self.compiled = torch.compile(self.model, dynamic=False, fullgraph=True) if cfg.run.compile else self.model
        self.optimizers, self.muon = build_optimizers(self.model, cfg.optim)
        self.muon_param_ids = {id(p) for g in self.muon.param_groups for p in g["params"]}
        if env.distributed and cfg.optim.muon_sharded:  # Muon reduce-scatters these itself
            DDP._set_params_and_buffers_to_ignore_for_model(
                self.compiled, [n for n, p in self.compiled.named_parameters() if id(p) in self.muon_param_ids])
        # The model holds no buffers, so DDP's buffer syncing has nothing to do.
        self.ddp = (DDP(self.compiled, device_ids=[env.local_rank] if self.device.type == "cuda" else None)
                    if env.distributed else self.compiled)
        self.accum = grad_accum_steps(cfg, env.world)
        self.schedule = LRSchedule.from_config(cfg.train)
        self.eval_seq_len = cfg.eval.seq_len or cfg.train.seq_len
        self.step, self.train_ms = 0, 0.0
        self.hessians: dict | None = None  # GPTQ's, collected after the loop
        self.qat_on = False

    # -- set-up helpers ------------------------------------------------------------------

    def _seed(self) -> None:
        seed = self.cfg.run.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(seed)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)

    def _make_run_dir(self, preset: str) -> Path:
        name = self.cfg.run.name or f"{Path(preset).stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        run_dir = Path(self.cfg.run.out_dir) / broadcast_object(name, self.env)
        logs = [run_dir / "metrics.jsonl", run_dir / "train.log"]
        if any(p.exists() for p in logs):
            if not self.cfg.run.overwrite:
                raise PgolfError(f"{run_dir} already holds a run; choose another run.name or set run.overwrite=true")
            if self.env.is_main:
                for p in logs:
                    p.unlink(missing_ok=True)
        if self.env.distributed:
            dist.barrier()  # nobody writes logs before rank 0 has cleared the old ones
        if self.env.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir / "config.json", self.cfg.to_dict())
        return run_dir

    # -- one optimizer step --------------------------------------------------------------

    def _train_step(self, lr_mul: float) -> torch.Tensor:
        cfg = self.cfg
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            x, y = self.loader.next_batch(cfg.train.batch_tokens, cfg.train.seq_len, self.accum)
            sync = micro == self.accum - 1 or not isinstance(self.ddp, DDP)
            weights = self.byte_weights(x, y) if self.byte_weights is not None else None
            with contextlib.nullcontext() if sync else self.ddp.no_sync():  # all-reduce grads once per step
                with autocast_for(self.device):
                    loss = self.ddp(x, y, weights=weights, ce=cfg.train.ce)
                (loss / self.accum).backward()
            total += loss.detach()
        for group in self.muon.param_groups:
            group["momentum"] = muon_momentum(self.step, cfg.optim)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * lr_mul
        self.muon.launch_reduce_scatters()  # sharded mode: runs while the Adam steps do (unless clipping)
        if cfg.optim.grad_clip_norm > 0:
            self._clip_gradients(cfg.optim.grad_clip_norm)
        for opt in self.optimizers:
            if opt is not self.muon:
                opt.step()
        self.muon.step()
        return total / self.accum

    def _clip_gradients(self, max_norm: float) -> None:
        """Clip by the norm of the rank-averaged gradient, the same factor on every rank. With sharded
        Muon the matrices' averaged gradients exist only as shards: their squared norm is summed
        across ranks (rank-local clipping would scale the replicated parameters differently per rank)."""
        shards = self.muon.reduced_grads()
        if shards is None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
            return
        others = [p.grad for p in self.model.parameters() if p.grad is not None and id(p) not in self.muon_param_ids]
        sharded_sq = torch.stack([s.float().pow(2).sum() for s in shards]).sum()
        torch.distributed.all_reduce(sharded_sq)
        total = (sharded_sq + sum(g.float().pow(2).sum() for g in others)).sqrt()
        factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in [*others, *shards]:
            g.mul_(factor.to(g.dtype))

    def _prime(self) -> None:
        """Real steps to compile and warm every path, then back to the exact initial state."""
        n = self.cfg.train.warmup_steps
        if n <= 0:
            return
        model_state = copy.deepcopy(self.model.state_dict())
        opt_states = [copy.deepcopy(opt.state_dict()) for opt in self.optimizers]
        loader_state = self.loader.state_dict()
        for _ in range(n):
            self._train_step(1.0)
        self.model.load_state_dict(model_state)
        for opt, state in zip(self.optimizers, opt_states):
            opt.load_state_dict(state)
        self.loader.load_state_dict(loader_state)
        self.log.event("primed", steps=n)

    def _resume(self, path: str) -> None:
        state = ckpt.load_checkpoint(path)
        mine, theirs = self.cfg.to_dict(), state["config"]
        differing = [f"{s}.{k}" for s in ("model", "optim", "data", "train") for k in mine[s]
                     if mine[s][k] != theirs.get(s, {}).get(k) and k not in ("iterations", "val_every", "log_every",
                                                                            "checkpoint_every", "max_wallclock_seconds")]
        if differing:
            raise PgolfError(f"cannot resume {path}: the config differs in {', '.join(differing)}")
        self.model.load_state_dict(state["model"])
        for opt, s in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(s)
        self.loader.load_state_dict(state["loader"])
        ckpt.restore_rng(state["rng"])
        self.step, self.train_ms = state["step"], state["training_time_ms"]
        self.log.event("resumed", checkpoint=str(path), step=self.step, train_time_ms=self.train_ms)
        if self.log.bar is not None:
            self.log.bar.update(self.step)

    def _save_checkpoint(self, name: str) -> None:
        # Every rank takes part: Muon's momentum is spread over the ranks (a collective).
        states = [o.gathered_state_dict() if isinstance(o, Muon) else o.state_dict() for o in self.optimizers]
        if self.env.is_main:
            ckpt.save_checkpoint(self.run_dir / name, config=self.cfg.to_dict(), step=self.step,
                                 training_time_ms=self.train_ms, model=self.model, optimizer_states=states,
                                 loader=self.loader, hessians=self.hessians)
        if self.env.distributed:
            dist.barrier()

    def _validate(self, stride: int = 0) -> BPBResult:
        windows = max(1, self.cfg.eval.batch_tokens // (self.env.world * self.eval_seq_len))
        return evaluate(self.compiled, self.val, self.eval_seq_len, stride, windows, self.env.rank, self.env.world)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> TrainResult:
        cfg, env = self.cfg, self.env
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log.event("setup", params=n_params, world_size=env.world, grad_accum_steps=self.accum,
                       device=str(self.device), val_tokens=len(self.val), byte_source=self.val.byte_source,
                       run_dir=str(self.run_dir))
        self._prime()
        if cfg.run.resume:
            self._resume(cfg.run.resume)
        # GPTQ's Hessians read training data, so they must fit inside the training time (spec §1.3).
        reserve_ms = 1000.0 * cfg.export.reserve_seconds if cfg.export.method == "gptq" else 0.0
        cap_ms = max(1000.0 * cfg.train.max_wallclock_seconds - reserve_ms, 0.0) if cfg.train.max_wallclock_seconds else 0.0
        stop_at: int | None = None
        prequant = None
        self._sync()
        t0 = time.perf_counter()
        while True:
            # One clock for all ranks (the slowest), so the LR schedule and the stop agree.
            elapsed = max_over_ranks(self.train_ms + 1000.0 * (time.perf_counter() - t0), env)
            if stop_at is None and cap_ms > 0 and elapsed >= cap_ms:
                stop_at = self.step
                self.log.event("wallclock_cap", step=self.step, train_time_ms=elapsed)
            last = self.step >= cfg.train.iterations or stop_at is not None
            if last or (cfg.train.val_every > 0 and self.step % cfg.train.val_every == 0):
                self._sync()
                self.train_ms += 1000.0 * (time.perf_counter() - t0)
                prequant = self._validate()
                self.log.event("val", step=self.step, val_loss=prequant.val_loss, val_bpb=prequant.val_bpb,
                               train_time_ms=self.train_ms)
                self._sync()
                t0 = time.perf_counter()
            if last:
                break
            lr_mul = self.schedule.lr_mul(self.step, elapsed)
            if not self.qat_on and lr_mul < cfg.train.qat_threshold:
                self._start_qat()
            loss = self._train_step(lr_mul)
            self.step += 1
            if cfg.train.log_every and (self.step <= 10 or self.step % cfg.train.log_every == 0):
                now_ms = self.train_ms + 1000.0 * (time.perf_counter() - t0)
                mean = float(mean_over_ranks(loss, env))
                self.log.event("train", console=False, step=self.step, train_loss=mean, lr_mul=lr_mul,
                               train_time_ms=now_ms, step_avg_ms=now_ms / self.step)
                self.log.step(1, loss=mean)
            else:
                self.log.step(1)
            if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0:
                self._sync()
                self.train_ms += 1000.0 * (time.perf_counter() - t0)
                self._save_checkpoint(f"checkpoint_step{self.step}.pt")
                t0 = time.perf_counter()
        self.log.close()
        if self.device.type == "cuda":
            self.log.event("memory", peak_allocated_mib=torch.cuda.max_memory_allocated() // 2**20,
                           peak_reserved_mib=torch.cuda.max_memory_reserved() // 2**20)
        self.hessians = self._collect_hessians() if cfg.export.method == "gptq" else None
        self._save_checkpoint(CHECKPOINT_NAME)
        report = self._export()
        final = self._score_artifact(report)
        self._finish(prequant, final, report)
        return TrainResult(self.env.is_main, self.run_dir, self.step, self.train_ms, prequant, final, report)

    def _start_qat(self) -> None:
        """Late QAT: the block matrices that export codes switch their forwards to int6
        fake-quant (SDClip by class)."""
        for name, module in late_qat_layers(self.model).items():
            module.qat_clip_sigmas = (self.cfg.export.attn_clip_sigmas if ".mixer." in f".{name}."
                                      else self.cfg.export.mlp_clip_sigmas)
        self.qat_on = True
        self.log.event("qat_on", step=self.step)

    @torch.no_grad()
    def _collect_hessians(self) -> dict:
        """Input Hessians on fresh training batches, on the training clock (it reads train data)."""
        cfg = self.cfg
        self._sync()
        t = time.perf_counter()
        collector = HessianCollector(self.model)
        try:
            for _ in range(cfg.export.calib_batches):
                x, y = self.loader.next_batch(cfg.train.batch_tokens, cfg.train.seq_len, self.accum)
                with autocast_for(self.device):
                    self.model(x, y)
            hessians = collector.hessians()
        finally:
            collector.remove()
        self._sync()
        seconds = time.perf_counter() - t
        self.train_ms += 1000.0 * seconds
        cap_ms = 1000.0 * cfg.train.max_wallclock_seconds
        self.log.event("hessians", matrices=len(hessians), seconds=seconds, train_time_ms=self.train_ms,
                       within_cap=bool(not cap_ms or self.train_ms <= cap_ms))
        return hessians

    def _export(self) -> ExportReport:
        outcome = None
        if self.env.is_main:
            try:
                report, _ = export_model(self.model.state_dict(), self.cfg.to_dict()["model"], self.cfg.export,
                                         self.run_dir / ARTIFACT_NAME, meta=run_meta(self.cfg, self.step),
                                         hessians=self.hessians)
                outcome = report
            except PgolfError as e:
                outcome = str(e)
        outcome = broadcast_object(outcome, self.env)  # every rank learns whether export succeeded
        if isinstance(outcome, str):
            raise PgolfError(outcome)
        self.log.event("export", path=outcome.path, artifact_bytes=outcome.artifact_bytes,
                       code_bytes=outcome.code_bytes, code_mode=outcome.code_mode, total_bytes=outcome.total_bytes,
                       headroom=outcome.headroom, bits_per_weight=round(outcome.bits_per_weight, 4),
                       streams={s.name: f"{s.codec}:{s.stored_bytes}" for s in outcome.streams})
        return outcome

    def _score_artifact(self, report: ExportReport) -> BPBResult:
        """Load the written file back into the model and score it with the configured eval."""
        _, state = load_artifact_state(report.path)
        self.model.load_state_dict(state)
        self._sync()
        t = time.perf_counter()
        final = self._validate(self.cfg.eval.stride)
        self._sync()
        self.log.event("final_roundtrip", val_loss=final.val_loss, val_bpb=final.val_bpb, stride=self.cfg.eval.stride,
                       eval_time_ms=1000.0 * (time.perf_counter() - t), tokens=final.token_count, bytes=final.byte_count)
        return final

    def _finish(self, prequant: BPBResult, final: BPBResult, report: ExportReport) -> None:
        if not self.env.is_main:
            return
        summary = {"steps": self.step, "train_time_ms": self.train_ms, "prequant": prequant.as_dict(),
                   "final": final.as_dict(), "export": dataclasses.asdict(report),
                   "bits_per_weight": report.bits_per_weight, "run_dir": str(self.run_dir)}
        atomic_write_json(self.run_dir / "result.json", summary)
        if plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png"):
            self.log.event("plot", path=str(self.run_dir / "curves.png"), console=False)
