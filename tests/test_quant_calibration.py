"""GPTQ calibration from random training windows (ShuffledSequenceLoader) and the export reserve
checked against the measured Hessian + GPTQ time."""
import json

import pytest

from conftest import tiny_config
from pgolf.data.calibration import ShuffledSequenceLoader
from pgolf.train.clock import ReserveCheck
from pgolf.train.trainer import run_training


def test_hessians_read_random_windows_and_the_reserve_is_checked(tmp_path, tiny_data, monkeypatch):
    calls = []
    next_batch = ShuffledSequenceLoader.next_batch

    def spy(self, sequences):
        calls.append((self.seq_len, sequences))
        return next_batch(self, sequences)

    monkeypatch.setattr(ShuffledSequenceLoader, "next_batch", spy)
    result = run_training(tiny_config(tiny_data, tmp_path, "export.method=gptq", "export.calib_batches=3",
                                      "export.reserve_seconds=0", "export.matrix_bits=6",
                                      "train.max_wallclock_seconds=600"))  # capped; it stops at its 8 iterations
    assert calls == [(64, 1024 // 64)] * 3  # calib_batches batches of one micro-batch of windows each
    events = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    reserve = next(e for e in events if e["event"] == "reserve")
    hessians = next(e for e in events if e["event"] == "hessians")
    assert reserve["hessian_seconds"] == pytest.approx(hessians["seconds"], abs=1e-3)
    assert reserve["gptq_seconds"] > 0 and not reserve["sufficient"] and reserve["within_cap"] and reserve["capped"]
    warning = next(e for e in events if e["event"] == "warning")["message"]
    assert "export.reserve_seconds=0 is below the measured Hessian + GPTQ time" in warning
    assert "export.reserve_seconds=0 is below" in (result.run_dir / "train.log").read_text()
    summary = json.loads((result.run_dir / "result.json").read_text())
    assert summary["reserve"] == {k: reserve[k] for k in summary["reserve"]} and summary["within_cap"]
    assert summary["export"]["quantize_seconds"] == pytest.approx(reserve["gptq_seconds"], abs=1e-3)


def test_reserve_check_wording():
    ok = ReserveCheck(8.0, 4.1, 1.0, within_cap=True)
    assert ok.sufficient and ok.warning() is None and ok.as_dict()["measured_seconds"] == 5.1
    short = ReserveCheck(0.5, 6.9, 1.2, within_cap=True)  # #2135's reserve against its 32-batch Hessians
    assert not short.sufficient and "raise it to at least 9" in short.warning()
    assert "not a valid record" not in short.warning()
    over = ReserveCheck(0.5, 6.9, 1.2, within_cap=False)
    assert "ran past the training cap, so this run is not a valid record" in over.warning()
    assert ReserveCheck(0.5, 6.9, 1.2, within_cap=True, capped=False).warning() is None  # no cap: nothing reserved
