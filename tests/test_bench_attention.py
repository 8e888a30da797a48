"""benchmarks/bench_attention.py on a CPU: its documents look like the loader's rows, every
backend it times agrees with the dense mask, and the script runs end to end."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_attention as ba  # noqa: E402
from pgolf.model.segments import DocSegments  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def test_document_rows_are_bos_separated_documents_of_about_the_mean_length():
    ids = ba.document_rows(8, 512, 60.0, "cpu")
    assert ids.shape == (8, 512) and set(ids.unique().tolist()) == {ba.BOS, ba.BOS + 1}
    starts = (ids.reshape(-1) == ba.BOS).sum().item()
    assert 4096 / 60 / 1.5 < starts < 4096 / 60 * 1.5
    assert not torch.equal(ids, ba.document_rows(8, 512, 60.0, "cpu", seed=1))


def test_the_isolating_backends_agree_with_the_dense_mask():
    ids = ba.document_rows(2, 96, 20.0, "cpu")
    case = ba.make_case("cpu", (2, 96, 4, 2, 8), torch.float32)
    errs = ba.errors(DocSegments.from_tokens(ids, ba.BOS), case, "cpu")
    assert set(errs) == {"flex"} and errs["flex"] < 1e-5


def test_the_script_runs_small_on_cpu():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_attention.py"), "--small", "--device", "cpu"],
                         capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    assert "| flex |" in out and "| dense mask |" in out and "n/a (no CPU backward)" in out
    assert "ABOVE TOLERANCE" not in out
