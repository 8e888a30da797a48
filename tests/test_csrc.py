"""The CUDA sources without a GPU: they compile for sm_90a, and the kernel's int6 layout
(int6_pack.cuh, which the kernel uses) agrees with pgolf's packer on the host."""
import shutil
import subprocess

import numpy as np
import pytest

from conftest import REPO
from pgolf.quant.packing import pack

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")


def test_kernel_compiles_for_sm90a(tmp_path):
    r = subprocess.run([NVCC, "-arch=sm_90a", "-c", str(REPO / "csrc" / "int6_matmul.cu"), "-o", str(tmp_path / "k.o")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_kernel_unpacking_matches_the_python_packer(tmp_path):
    binary = tmp_path / "host_test"
    r = subprocess.run([NVCC, "-o", str(binary), str(REPO / "csrc" / "tests" / "int6_host_test.cu")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(0)
    m, n, k = 3, 5, 37  # K not a multiple of 4: padded groups
    codes = rng.integers(-32, 32, size=(n, k)).astype(np.int8)
    x = rng.standard_normal((m, k)).astype(np.float32)
    packed = pack(codes, 6)
    stdin = f"{m} {n} {k}\n" + " ".join(map(str, packed.ravel())) + "\n" + " ".join(f"{v:.9g}" for v in x.ravel())
    r = subprocess.run([str(binary)], input=stdin, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = np.array([float(v) for v in r.stdout.split()]).reshape(m, n)
    np.testing.assert_allclose(got, x.astype(np.float64) @ codes.astype(np.float64).T, rtol=1e-7, atol=1e-6)
