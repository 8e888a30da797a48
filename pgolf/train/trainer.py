"""The training run: set-up, the optimizer loop, then a list of post-training stages.

It follows the baseline's protocol (spec §4.3): optional priming steps before the clock
(real steps whose effects are then undone, so compilation happens off the clock), one
clock (pgolf.train.clock) that covers only the optimizer loop and owns the cap, the
export reserve and the eval budget, and a final score computed from the artifact as
written to disk, by a model built from that file alone (`pgolf eval`'s loader), never
from the in-memory weights.

Everything that can be checked is checked before the run directory is made, so a run
that cannot start leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import copy
import math
import dataclasses
import datetime
import importlib.util
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from pgolf.config import Config
from pgolf.data.tokenizer import load_tokenizer
from pgolf.distributed import DistEnv, broadcast_object, init_distributed, max_over_ranks, mean_over_ranks, shutdown
from pgolf.errors import PgolfError
from pgolf.eval.evaluator import autocast_for, evaluate
from pgolf.eval.clock import EvalClock, timed_eval
from pgolf.eval.modes import EvalContext, save_ledger
from pgolf.eval.scoring import model_from_artifact
from pgolf.export.code_size import count_code_bytes
from pgolf.export.export import ExportReport, build_artifact, run_meta, write_export
from pgolf.fileio import atomic_write_json, check_output_dir
from pgolf.metric.bpb import BPBResult
from pgolf.metric.bytes import TargetByteWeights
from pgolf.metric.valset import load_val_set
from pgolf.model import GPT, prepare_for_device, tokenizer_mismatch
from pgolf.optim.build import build_optimizers
from pgolf.optim.muon import Muon
from pgolf.optim.schedule import LRSchedule, muon_momentum
from pgolf.train import checkpoint as ckpt
from pgolf.train.clock import Clock, ReserveCheck
from pgolf.train.feed import TrainFeed, training_progress
from pgolf.train.loader import dataset_fingerprint
from pgolf.train.logs import RunLog

ARTIFACT_NAME = "model.pgolf"
CHECKPOINT_NAME = "checkpoint.pt"
LEDGER_NAME = "score_ledger.npz"
# Only a packed script lacks pgolf.train.resume, so this is the packed script's own error: built by a call,
# it keeps its whole text there (pgolf.export.messages shortens literal messages only).
NO_RESUME = ("run.resume={}: this packed script has no resume code (it reproduces a run from scratch); "
             "continue the run with the pgolf package")


@dataclass
class TrainResult:
    is_main: bool  # rank 0; every rank gets the same all-reduced numbers
    run_dir: Path
    steps: int
    train_time_ms: float
    prequant: BPBResult  # the in-memory weights after the loop (the EMA when on)
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


class Trainer:
    def __init__(self, cfg: Config, env: DistEnv, preset: str):
        self.cfg, self.env = cfg, env
        self.device = env.device
        self._seed()
        self.run_dir = self._run_dir_path(preset)

        tok = load_tokenizer(cfg.data.tokenizer)
        mismatch = tokenizer_mismatch(cfg.model, tok.vocab_size, tok.bos_id)
        if mismatch:
            raise PgolfError(f"tokenizer {cfg.data.tokenizer}: {mismatch}")
        self.val = load_val_set(cfg.data.path, tok).to(self.device)
        self.byte_weights = (TargetByteWeights(tok, cfg.train.loss_weights).to(self.device)
                             if cfg.train.loss_weights != "none" else None)
        self.data_fingerprint = dataset_fingerprint(cfg.data.path, cfg.data.tokenizer)
        # measured before training (packing can fail: better now than after the run); the code cannot change
        self.code = count_code_bytes(cfg.export.code_bytes, cfg) if env.is_main else None
        # GPTQ's calibration windows: random training windows, as the records (GPTQ_CALIBRATION_MODE=random)
        self.calib = None
        if cfg.export.method == "gptq":
            from pgolf.data.calibration import ShuffledSequenceLoader  # gptq only (pgolf.export.trace.OPTIONAL)

            self.calib = ShuffledSequenceLoader.from_dir(cfg.data.path, rank=env.rank, world=env.world,
                                                         seq_len=cfg.train.seq_len, vocab_size=tok.vocab_size)

        self.model = prepare_for_device(GPT(cfg.model, mlp_impl=cfg.train.mlp_impl), self.device)
        self.looped = bool(cfg.model.stack.loop_layers)  # depth recurrence: off until loop_start_frac (spec 5.5)
        self.model.set_recurrence(not self.looped)
        self.compiled = torch.compile(self.model, dynamic=False, fullgraph=True) if cfg.run.compile else self.model
        self.optimizers, self.muon = build_optimizers(self.model, cfg.optim)
        self.muon_param_ids = {id(p) for g in self.muon.param_groups for p in g["params"]}
        self.ema = None
        if cfg.optim.ema_decay > 0:
            from pgolf.optim.ema import WeightEMA  # optim.ema_decay > 0 only (pgolf.export.trace.OPTIONAL)

            self.ema = WeightEMA(self.model, cfg.optim.ema_decay)
        if env.distributed and cfg.optim.muon_sharded:  # Muon reduce-scatters these itself
            DDP._set_params_and_buffers_to_ignore_for_model(
                self.compiled, [n for n, p in self.compiled.named_parameters() if id(p) in self.muon_param_ids])
        # The model holds no buffers, so DDP's buffer syncing has nothing to do.
        self.ddp = (DDP(self.compiled, device_ids=[env.local_rank] if self.device.type == "cuda" else None)
                    if env.distributed else self.compiled)
        self.accum = grad_accum_steps(cfg, env.world)
        # train.loader and train.seq_schedule (pgolf.train.feed); its state is the checkpoint's "loader"
        self.loader = TrainFeed.from_config(cfg, env, tok.vocab_size, tok.bos_id, self.accum,
                                            self.model.attention_backend)
        self.clock = Clock.from_config(cfg, env)
        self.schedule = LRSchedule.from_config(cfg.train, horizon_ms=self.clock.stop_ms)
        self.eval_seq_len = cfg.eval.seq_len or cfg.train.seq_len
        self.step = 0
        self.qat_on = False
        self.first_bad_step = torch.full((), -1, dtype=torch.int64, device=self.device)  # of a non-finite loss
        self.last_checkpoint: Path | None = None
        self.resumed = self._resume_module().load_resume(self, cfg.run.resume) if cfg.run.resume else None
        # The products of the post-training stages, in order.
        self.prequant: BPBResult | None = None
        self.hessians: dict | None = None  # GPTQ's
        self.hessian_seconds = 0.0
        self.reserve: ReserveCheck | None = None
        self.report: ExportReport | None = None
        self.final: BPBResult | None = None
        self.eval_seconds = 0.0
        self.eval_report: dict = {}  # the eval clock's parts, total, projection and budget verdict

        self._make_run_dir()  # last: a run that cannot start leaves nothing behind
        self.log = RunLog(self.run_dir, env.is_main, cfg.train.iterations, cfg.run.progress)

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> TrainResult:
        self.log.event("setup", params=sum(p.numel() for p in self.model.parameters()), world_size=self.env.world,
                       grad_accum_steps=self.accum, device=str(self.device), val_tokens=len(self.val),
                       byte_source=self.val.byte_source, run_dir=str(self.run_dir))
        self._prime()
        if self.resumed is not None:
            self._resume_module().start_resumed(self, self.resumed)
        self.prequant = self._train_loop()
        self.model.set_recurrence(True)  # Hessians, export and the final score walk the full plan
        self.log.close()
        if self.device.type == "cuda":
            self.log.event("memory", peak_allocated_mib=torch.cuda.max_memory_allocated() // 2**20,
                           peak_reserved_mib=torch.cuda.max_memory_reserved() // 2**20)
        for stage in self.post_training_stages():
            stage()
        self.loader.close()
        return TrainResult(self.env.is_main, self.run_dir, self.step, self.clock.train_ms, self.prequant, self.final,
                           self.report)

    def _train_loop(self) -> BPBResult:
        """Optimizer steps until train.iterations or the clock's stop; returns the last validation."""
        cfg, clock = self.cfg.train, self.clock
        clock.start()
        while True:
            elapsed = clock.elapsed_ms()  # every rank's, so the schedule and the stop agree
            capped = clock.out_of_time(elapsed)
            if capped:
                self.log.event("wallclock_cap", step=self.step, train_time_ms=elapsed)
            last = capped or self.step >= cfg.iterations
            if last or _due(self.step, cfg.val_every):
                clock.pause()
                prequant = self._validate_and_log()
                if last:
                    return prequant  # the clock stays paused: what follows is not the loop
                clock.start()
            lr_mul = self.schedule.lr_mul(self.step, elapsed)
            # The warmdown alone (not the LR warmup) says when late QAT starts; it only falls, so a
            # resumed run switches QAT on again at its first step if it was on before.
            if not self.qat_on and self.schedule.warmdown_mul(self.step, elapsed) < cfg.qat_threshold:
                self._start_qat()
            self._update_recurrence(elapsed)
            lr_mul *= self._advance_seq_len(elapsed)
            loss = self._train_step(lr_mul)
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            self._log_step(loss, lr_mul)
            if _due(self.step, cfg.checkpoint_every):
                with clock.paused():
                    self._save_checkpoint(f"checkpoint_step{self.step}.pt")

    def _update_recurrence(self, elapsed_ms: float) -> None:
        """Switch depth recurrence on once the training fraction reaches model.stack.loop_start_frac:
        of the clock's stop when the run is capped (as the records), else of train.iterations."""
        if not self.looped or self.model.recurrence:
            return
        stop = self.clock.stop_ms
        fraction = elapsed_ms / stop if stop else self.step / max(self.cfg.train.iterations, 1)
        if fraction >= self.cfg.model.stack.loop_start_frac:
            self.model.set_recurrence(True)
            self.log.event("recurrence_on", step=self.step, train_time_ms=elapsed_ms)

    def _advance_seq_len(self, elapsed_ms: float) -> float:
        """The step's training length (train.seq_schedule), measured like the recurrence switch;
        returns its LR re-warm multiplier."""
        progress = training_progress(elapsed_ms, self.step, self.clock.stop_ms, self.cfg.train.iterations)
        plan = self.loader.advance(self.step, progress)
        if plan.switched:
            self.log.event("seq_len", step=self.step, seq_len=plan.seq_len, train_time_ms=elapsed_ms)
        return plan.lr_mult

    def post_training_stages(self) -> list[Callable[[], None]]:
        """What follows the loop, in order. Weight averaging goes first (every later stage must see
        the averaged weights); calibration between the Hessians and the export."""
        ema = [self._apply_ema] if self.ema is not None else []
        hessians = [self._collect_hessians] if self.cfg.export.method == "gptq" else []
        return [*ema, *hessians, self._save_final_checkpoint, self._export, self._score_artifact, self._finish]

    # -- set-up ----------------------------------------------------------------------------

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

    def _run_dir_path(self, preset: str) -> Path:
        """The run directory, checked (not made): writable, and not another run's unless run.overwrite."""
        name = self.cfg.run.name or f"{Path(preset).stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        run_dir = Path(self.cfg.run.out_dir) / broadcast_object(name, self.env)
        check_output_dir(run_dir, "run.out_dir")
        if any(p.exists() for p in self._logs(run_dir)) and not self.cfg.run.overwrite:
            raise PgolfError(f"{run_dir} already holds a run; choose another run.name or set run.overwrite=true")
        return run_dir

    @staticmethod
    def _logs(run_dir: Path) -> list[Path]:
        return [run_dir / "metrics.jsonl", run_dir / "train.log"]

    @classmethod
    def _old_outputs(cls, run_dir: Path) -> list[Path]:
        """What a reused directory's old run leaves that this run would only replace at its end:
        gone at the start, so a new run that fails never sits beside the old run's score or file.
        (Checkpoints stay: a resume may read one, and the run rewrites them.)"""
        return [*cls._logs(run_dir), run_dir / "result.json", run_dir / ARTIFACT_NAME, run_dir / "curves.png",
                *run_dir.glob("score_ledger*.npz")]

    def _make_run_dir(self) -> None:
        if self.env.is_main:
            for p in self._old_outputs(self.run_dir):
                p.unlink(missing_ok=True)
        if self.env.distributed:
            dist.barrier()  # nobody writes logs before rank 0 has cleared the old ones
        if self.env.is_main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise PgolfError(f"run.out_dir: cannot make {self.run_dir} ({e.strerror})") from None
            atomic_write_json(self.run_dir / "config.json", self.cfg.to_dict())

    def _resume_module(self):
        """pgolf.train.resume, the run.resume option's code (a packed script carries none: it reproduces a run
        from scratch, so there it is a clear error, not an import failure)."""
        if importlib.util.find_spec("pgolf.train.resume") is None:
            raise PgolfError(NO_RESUME.format(self.cfg.run.resume))
        import pgolf.train.resume as resume
        return resume

    def _prime(self) -> None:
        """Real steps to compile and warm every path, then back to the exact state before them."""
        n = self.cfg.train.warmup_steps
        if n <= 0:
            return
        model_state = copy.deepcopy(self.model.state_dict())
        opt_states = [copy.deepcopy(opt.state_dict()) for opt in self.optimizers]
        loader_state = self.loader.state_dict()
        loop_at = self.cfg.model.stack.loop_start_frac if self.looped else None
        for seq_len, plan in self.loader.compile_shapes(loop_at):  # compile every shape and plan the run will meet
            self.loader.use_seq_len(seq_len)
            if self.looped:
                self.model.set_recurrence(plan)
            for _ in range(n):
                self._train_step(1.0)
        if self.cfg.train.qat_threshold > 0:  # late QAT's forward too, on the last plan: no recompile on the clock
            from pgolf.quant.qat import disable_late_qat, enable_late_qat  # late QAT only (trace.OPTIONAL)

            enable_late_qat(self.model, self.cfg.export)
            for _ in range(n):
                self._train_step(1.0)
            disable_late_qat(self.model)
        self.model.set_recurrence(not self.looped)
        self.model.load_state_dict(model_state)
        for opt, state in zip(self.optimizers, opt_states):
            opt.load_state_dict(state)
        self.loader.load_state_dict(loader_state)
        self.log.event("primed", steps=n)

    # -- one optimizer step --------------------------------------------------------------

    def _train_step(self, lr_mul: float) -> torch.Tensor:
        cfg = self.cfg
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            batch = self.loader.next_batch()
            x, y = batch.inputs, batch.targets
            sync = micro == self.accum - 1 or not isinstance(self.ddp, DDP)
            weights = self.byte_weights(x, y) if self.byte_weights is not None else None
            with contextlib.nullcontext() if sync else self.ddp.no_sync():  # all-reduce grads once per step
                with autocast_for(self.device):
                    loss = self.ddp(x, y, weights=weights, ce=cfg.train.ce, **batch.model_kwargs())
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

    # -- in the loop -------------------------------------------------------------------------

    def _log_step(self, loss: torch.Tensor, lr_mul: float) -> None:
        # Noted on the device (no sync per step); checked wherever the loop syncs anyway.
        self.first_bad_step.masked_fill_((self.first_bad_step < 0) & ~torch.isfinite(loss), self.step)
        log_every = self.cfg.train.log_every
        if not (log_every and (self.step <= 10 or self.step % log_every == 0)):
            self.log.step(1)
            return
        self._check_finite()
        now_ms = self.clock.running_ms()
        mean = float(mean_over_ranks(loss, self.env))
        self.log.event("train", console=False, step=self.step, train_loss=mean, lr_mul=lr_mul,
                       train_time_ms=now_ms, step_avg_ms=now_ms / self.step)
        self.log.step(1, loss=mean)

    def _check_finite(self) -> None:
        """Stop the run at a nan/inf loss on any rank, before it reaches a checkpoint or an artifact."""
        bad = int(max_over_ranks(float(self.first_bad_step), self.env))
        if bad >= 0:
            kept = (f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint
                    else "no checkpoint was written before it (train.checkpoint_every)")
            raise PgolfError(f"the training loss became nan or inf at step {bad}: the run stopped and exported "
                             f"nothing; {kept}")

    def _validate_and_log(self) -> BPBResult:
        self._check_finite()
        result = self._validate(self.compiled)
        self.log.event("val", step=self.step, val_loss=result.val_loss, val_bpb=result.val_bpb,
                       train_time_ms=self.clock.train_ms)
        if not math.isfinite(result.val_loss):  # finite training losses, diverged weights: no artifact from them
            raise PgolfError(f"validation at step {self.step} gave val_loss {result.val_loss}: the model diverged "
                             "(lower the learning rates); nothing was exported")
        return result

    def _validate(self, model: torch.nn.Module, stride: int = 0) -> BPBResult:
        windows = max(1, self.cfg.eval.batch_tokens // (self.env.world * self.eval_seq_len))
        return evaluate(model, self.val, self.eval_seq_len, stride, windows, self.env.rank, self.env.world)

    def _save_checkpoint(self, name: str) -> None:
        self._check_finite()
        # Every rank takes part: Muon's momentum is spread over the ranks (a collective).
        states = [o.gathered_state_dict() if isinstance(o, Muon) else o.state_dict() for o in self.optimizers]
        if self.env.is_main:
            ckpt.save_checkpoint(self.run_dir / name, config=self.cfg.to_dict(), step=self.step,
                                 training_time_ms=self.clock.train_ms, model=self.model, optimizer_states=states,
                                 loader=self.loader, data_fingerprint=self.data_fingerprint, hessians=self.hessians,
                                 ema=self.ema.state_dict() if self.ema is not None else None)
        if self.env.distributed:
            dist.barrier()
        self.last_checkpoint = self.run_dir / name

    def _start_qat(self) -> None:
        """Late QAT: the matrices that export codes switch their forwards to int6 fake-quant
        (the selection and SDClip k by role: pgolf.quant.qat)."""
        from pgolf.quant.qat import enable_late_qat  # late QAT only (pgolf.export.trace.OPTIONAL)

        enable_late_qat(self.model, self.cfg.export)
        self.qat_on = True
        self.log.event("qat_on", step=self.step)

    # -- post-training stages ----------------------------------------------------------------

    def _apply_ema(self) -> None:
        """The EMA weights replace the live ones (spec §5.10), and the pre-quant score is theirs.
        The final checkpoint then holds these weights (what `pgolf export` re-exports) and the shadow."""
        self.ema.copy_to_model()
        self.prequant = self._validate(self.compiled)
        self.log.event("ema", decay=self.ema.decay, val_loss=self.prequant.val_loss, val_bpb=self.prequant.val_bpb)

    @torch.no_grad()
    def _collect_hessians(self) -> None:
        """GPTQ's input Hessians on export.calib_batches batches of random training windows (a training
        micro-batch's worth each: 48 x 2048 in the records), on the training clock (it reads train data)."""
        from pgolf.quant.hessians import HessianCollector  # gptq only (pgolf.export.trace.OPTIONAL)

        cfg = self.cfg
        sequences = cfg.train.batch_tokens // (self.env.world * self.accum * cfg.train.seq_len)
        with self.clock.on_training_time() as watch:
            collector = HessianCollector(self.model)
            try:
                for _ in range(cfg.export.calib_batches):
                    x, y = (t.to(self.device) for t in self.calib.next_batch(sequences))
                    with autocast_for(self.device):
                        self.model(x, y)
                self.hessians = collector.hessians()
            finally:
                collector.remove()
        self.hessian_seconds = watch.seconds
        self.log.event("hessians", matrices=len(self.hessians), seconds=watch.seconds, train_time_ms=self.clock.train_ms,
                       within_cap=self.clock.within_cap())

    def _save_final_checkpoint(self) -> None:
        self._save_checkpoint(CHECKPOINT_NAME)

    def _export(self) -> None:
        outcome = None
        if self.env.is_main:
            try:
                state, t0 = self.model.state_dict(), time.perf_counter()
                art = build_artifact(state, self.cfg.to_dict()["model"], self.cfg.export,
                                     meta=run_meta(self.cfg, self.step), hessians=self.hessians)
                quantize_seconds = time.perf_counter() - t0
                if self.cfg.export.logit_calib:
                    self._calibrate_logits(art)
                outcome = write_export(art, self.cfg.export, self.run_dir / ARTIFACT_NAME,
                                       sum(t.numel() for t in state.values()), self.cfg, quantize_seconds, self.code)
            except PgolfError as e:
                outcome = str(e)
        outcome = broadcast_object(outcome, self.env)  # every rank learns whether export succeeded
        if isinstance(outcome, str):
            raise PgolfError(outcome)
        self.log.event("export", path=outcome.path, artifact_bytes=outcome.artifact_bytes,
                       code_bytes=outcome.code_bytes, code_mode=outcome.code_mode, total_bytes=outcome.total_bytes,
                       headroom=outcome.headroom, bits_per_weight=round(outcome.bits_per_weight, 4),
                       streams={s.name: f"{s.codec}:{s.stored_bytes}" for s in outcome.streams})
        self.report = outcome
        if self.hessians is not None:
            self._check_reserve(outcome.quantize_seconds)

    def _check_reserve(self, gptq_seconds: float) -> None:
        """Warn (log and result.json) when the reserve is below the measured Hessian + GPTQ time."""
        self.reserve = ReserveCheck(self.cfg.export.reserve_seconds, self.hessian_seconds, gptq_seconds,
                                    self.clock.within_cap(), capped=bool(self.clock.cap_ms))
        self.log.event("reserve", **self.reserve.as_dict())
        if self.reserve.warning():
            self.log.event("warning", message=self.reserve.warning())

    def _calibrate_logits(self, art) -> None:
        """Logit calibration (pgolf.train.logit_calibration) on the quantized model, into `art`;
        on the training clock (it reads training data). Rank 0 only, as the export."""
        with self.clock.on_training_time() as watch:
            from pgolf.train.logit_calibration import calibrate_artifact, fit_summary  # export.logit_calib only

            try:
                fit = calibrate_artifact(art, self.cfg, self.device)
            except ValueError as e:
                raise PgolfError(f"export.logit_calib: {e}") from None
        self.log.event("logit_calib", **fit_summary(fit), seconds=watch.seconds, train_time_ms=self.clock.train_ms,
                       within_cap=self.clock.within_cap())

    def _score_artifact(self) -> None:
        """Score the file as written, with a model built from the file alone by `pgolf eval`'s
        loader (never the trained model: its QAT forwards and in-memory weights are not the file)."""
        clock = EvalClock(self.device)  # pgolf eval's clock: every part timed, projected to 8×H100
        model, _ = model_from_artifact(self.report.path, self.device, clock=clock)
        report = timed_eval(clock, EvalContext(model, self.val, self.cfg.eval, self.eval_seq_len, self.env))
        ledger = report.pop("ledger")
        if ledger is not None:  # an adaptive mode: its C3 record beside the result (pgolf check --ledger)
            report["ledger"] = str(save_ledger(ledger, self.run_dir / LEDGER_NAME, self.env))
        self.final, self.eval_seconds, self.eval_report = report.pop("result"), report["eval_total_seconds"], report
        if not math.isfinite(self.final.val_loss):
            raise PgolfError(f"{self.report.path} scores val_loss {self.final.val_loss}: not a usable artifact")
        self.log.event("final_roundtrip", val_loss=self.final.val_loss, val_bpb=self.final.val_bpb,
                       mode=self.cfg.eval.mode, stride=self.cfg.eval.stride, eval_time_ms=1000.0 * self.eval_seconds,
                       tokens=self.final.token_count, bytes=self.final.byte_count, **report)

    def _finish(self) -> None:
        if not self.env.is_main:
            return
        report = self.report
        summary = {"steps": self.step, "train_time_ms": self.clock.train_ms, "prequant": self.prequant.as_dict(),
                   "final": self.final.as_dict(), "export": dataclasses.asdict(report),
                   "bits_per_weight": report.bits_per_weight, "run_dir": str(self.run_dir),
                   "eval_seconds": self.eval_seconds, **self.eval_report, "within_cap": self.clock.within_cap(),
                   **({"reserve": self.reserve.as_dict()} if self.reserve else {})}
        atomic_write_json(self.run_dir / "result.json", summary)


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0
