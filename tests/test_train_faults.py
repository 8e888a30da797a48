"""The trainer's bugs and faults that need a run, signals or processes (issue 12); the rest are
rows of tests/fault_cases_train.py."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, TINY, tiny_config, train_losses
from pgolf.cli import main
from pgolf.errors import PgolfError
from pgolf.eval.scoring import score_artifact
from pgolf.optim.schedule import LRSchedule
from pgolf.train import clock as clock_module
from pgolf.train.checkpoint_read import load_checkpoint
from pgolf.train.trainer import Trainer, run_training

# One block whose MLP matrices (5 x 128 x 128 > 65,536 weights) export as int6 codes, so late QAT has layers to act on.
CODED = ["model.num_layers=1", "model.model_dim=128", "model.mlp_mult=5", "export.matrix_bits=6"]


def test_final_score_with_late_qat_is_the_files_score(tmp_path, tiny_data):
    # Bug 12.1: the artifact used to be loaded into layers that still fake-quantize (and drop LQER).
    result = run_training(tiny_config(tiny_data, tmp_path, *CODED, "train.qat_threshold=0.7", "export.lqer_top=1"))
    events = [json.loads(line)["event"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "qat_on" in events
    again = score_artifact(result.export.path, seq_len=64, batch_tokens=4096, device="cpu")
    assert again["val_bpb"] == result.final.val_bpb and again["val_loss"] == result.final.val_loss


class FakeTime:
    """A perf_counter that advances a fixed amount per call, so a capped run is deterministic."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_warmdown_anneals_to_the_real_stop(tmp_path, tiny_data, monkeypatch):
    # Bug 12.2: with GPTQ the loop stops at cap - reserve; the time-based warmdown must end there, not at the cap.
    monkeypatch.setattr(clock_module, "time", FakeTime(0.25))
    result = run_training(tiny_config(tiny_data, tmp_path, "export.method=gptq", "export.calib_batches=1",
                                      "export.reserve_seconds=2", "train.max_wallclock_seconds=10",
                                      "train.iterations=1000", "train.warmdown=time", "train.warmdown_iters=4"))
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    cap = next(r for r in records if r["event"] == "wallclock_cap")
    assert 8000 <= cap["train_time_ms"] < 8600 and result.steps < 1000
    lr = [r["lr_mul"] for r in records if r["event"] == "train"]
    assert lr[0] == 1.0 and lr[-1] < 0.3 and all(a >= b for a, b in zip(lr, lr[1:])), lr  # annealed by the stop
    # the clock gives the schedule its horizon: the floor is reached exactly at the stop
    cfg = tiny_config(tiny_data, tmp_path, "export.method=gptq", "export.reserve_seconds=2",
                      "train.max_wallclock_seconds=10", "train.warmdown=time")
    clock = clock_module.Clock.from_config(cfg, None)
    assert clock.stop_ms == 8000
    assert LRSchedule.from_config(cfg.train, horizon_ms=clock.stop_ms).lr_mul(100, clock.stop_ms) == 0.0


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data, capsys, monkeypatch):
    step = Trainer._train_step

    def diverging(self, lr_mul):  # the loss of step 6 onwards is nan
        loss = step(self, lr_mul)
        return loss * float("nan") if self.step >= 5 else loss

    monkeypatch.setattr(Trainer, "_train_step", diverging)
    data, tok = tiny_data
    rc = main(["train", "--config", "smoke", *TINY, f"data.path={data}", f"data.tokenizer={tok}",
               f"run.out_dir={tmp_path}", "run.name=t", "train.checkpoint_every=4"])
    out, err = capsys.readouterr()
    assert rc == 2 and "val_bpb" not in out and "Traceback" not in err
    assert "the training loss became nan or inf at step 6" in err and "checkpoint_step4.pt" in err, err
    run = tmp_path / "t"
    assert not (run / "model.pgolf").exists() and not (run / "checkpoint.pt").exists()
    assert load_checkpoint(run / "checkpoint_step4.pt")["step"] == 4


def test_a_diverging_learning_rate_is_caught(tmp_path, tiny_data):
    with pytest.raises(PgolfError, match="nan or inf at step"):
        run_training(tiny_config(tiny_data, tmp_path, "optim.tied_embed_lr=1e30", "optim.scalar_lr=1e30",
                                 "optim.matrix_lr=1e30"))
    assert not (tmp_path / "t" / "model.pgolf").exists()


_SLOW_CHECKPOINT = """
import sys, time
from pathlib import Path
import pgolf.train.checkpoint as ck
real = ck.atomic_open

class Slow:
    def __init__(self, f): self.f = f
    def write(self, b):
        self.f.write(bytes(b)[: len(b) // 2]); self.f.flush()
        Path(sys.argv[1]).write_text("writing")  # the test sends its signal now
        time.sleep(120)

import contextlib
@contextlib.contextmanager
def slow_open(path, mode="wb"):
    with real(path, mode) as f:
        yield Slow(f)

ck.atomic_open = slow_open
from pgolf.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 143, "stopped by SIGTERM"),
                                             (signal.SIGINT, 130, "stopped by SIGINT")], ids=["sigterm", "sigint"])
def test_a_signal_while_a_checkpoint_is_written_leaves_no_temporary_file(tmp_path, tiny_data, sig, code, said):
    data, tok = tiny_data
    ready = tmp_path / "ready"
    argv = ["train", "--config", "smoke", *TINY, f"data.path={data}", f"data.tokenizer={tok}",
            f"run.out_dir={tmp_path / 'runs'}", "run.name=t", "train.iterations=2"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CHECKPOINT, str(ready), *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert ready.exists(), proc.communicate()[1][-2000:]
    assert [p.name for p in (tmp_path / "runs" / "t").glob(".*.tmp-*")]  # the half-written file is there now
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    # the loop's val log lines came before the stop; no final score follows it
    assert said in err and "Traceback" not in err and "\nval_bpb " not in f"\n{out}", (out[-1000:], err[-2000:])
    assert not list((tmp_path / "runs" / "t").glob(".*.tmp-*"))


def test_an_unwritable_output_dir_is_refused_before_anything_is_made(tmp_path, tiny_data, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes through permissions: answer as a read-only file system would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(locked) else real(p, mode, **kw))
    try:
        with pytest.raises(PgolfError, match=f"run.out_dir {locked}/t: {locked} is not writable"):
            run_training(tiny_config(tiny_data, locked))
        checkpoint = locked / "c.pt"
        assert main(["export", str(checkpoint), "--out", str(locked / "x.pgolf")]) == 2
        assert f"--out {locked}/x.pgolf: {locked} is not writable" in capsys.readouterr().err
        assert not list(locked.iterdir())
    finally:
        locked.chmod(0o755)


def test_resume_finds_the_same_data_by_content_not_path(tmp_path, tiny_data):
    data, tok = tiny_data
    full = run_training(tiny_config(tiny_data, tmp_path, "run.name=full", "train.checkpoint_every=4"))
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved)
    for name, path in [("dotted", f"{data}/."), ("moved", str(moved))]:
        resumed = run_training(tiny_config((path, tok), tmp_path, f"run.name={name}",
                                           f"run.resume={full.run_dir / 'checkpoint_step4.pt'}"))
        assert train_losses(resumed.run_dir) == train_losses(full.run_dir)[4:]


def test_the_clock_counts_training_time_only(monkeypatch):
    import torch

    from pgolf.config import load_config
    from pgolf.distributed import DistEnv

    monkeypatch.setattr(clock_module, "time", FakeTime(1.0))
    cfg = load_config("smoke", ["train.max_wallclock_seconds=10", "export.method=gptq", "export.reserve_seconds=3",
                                "eval.budget_seconds=5"], env={})
    clock = clock_module.Clock.from_config(cfg, DistEnv(0, 1, 0, torch.device("cpu")))
    assert (clock.cap_ms, clock.reserve_ms, clock.stop_ms) == (10_000, 3_000, 7_000)
    clock.start()  # t=1
    with clock.paused():  # paused at t=2 (1 s counted); validation's time is not; restarted at t=3
        pass
    assert clock.train_ms == 1000.0
    clock.pause()  # the loop ends at t=4
    assert clock.train_ms == 2000.0
    with clock.on_training_time() as watch:  # the Hessians (t=5 .. 6) count
        pass
    assert watch.seconds == 1.0 and clock.train_ms == 3000.0
    assert not clock.out_of_time(6999.0) and clock.out_of_time(7000.0) and clock.within_cap()
    assert clock.within_eval_budget(5.0) and not clock.within_eval_budget(5.5)
