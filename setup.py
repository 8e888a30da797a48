"""pgolf: `pip install -e .` installs the package, its Triton kernels (as `pgolf_kernels`:
a top-level `kernels` would clash with the package of that name parameter-golf installs)
and the `pgolf` command.

`python setup.py build_ext` compiles the CUDA sources in csrc/ into `pgolf._C` where a CUDA
build of torch and nvcc exist. Elsewhere (CPU machines, or pip's isolated build, which has
no torch) it builds nothing and says so; every op then runs its reference implementation.
It also builds `pgolf.ngram._ngram_state` (csrc/ngram_state.cpp) everywhere a C++ compiler exists: plain
C++ behind a C ABI, loaded with ctypes, no torch headers. It is optional: where it fails to build, the
n-gram state uses its numpy fallback.
"""
import glob

from setuptools import Extension, find_packages, setup


def cuda_extensions():
    # csrc/tests: host-side checks only; csrc/ngram*: the CPU n-gram extension below
    sources = sorted(glob.glob("csrc/*.cu") + [p for p in glob.glob("csrc/*.cpp") if not p.startswith("csrc/ngram")])
    if not sources:
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        print("pgolf: torch is not importable here; csrc/ is not built (pip install --no-build-isolation to build it)")
        return [], {}
    if torch.version.cuda is None or CUDA_HOME is None:
        print("pgolf: no CUDA torch or no nvcc; csrc/ is not built, kernels use their references")
        return [], {}
    ext = CUDAExtension(
        "pgolf._C", sources,
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-gencode=arch=compute_90a,code=sm_90a"]},
    )
    return [ext], {"build_ext": BuildExtension}


def ngram_extension():
    return Extension("pgolf.ngram._ngram_state", ["csrc/ngram_state.cpp"], language="c++",
                     extra_compile_args=["-O3", "-std=c++17"], optional=True)


ext_modules, cmdclass = cuda_extensions()
ext_modules = ext_modules + [ngram_extension()]

setup(
    name="pgolf",
    version="0.1.0",
    description="Training and evaluation engine for OpenAI's Parameter Golf challenge",
    python_requires=">=3.11",
    packages=find_packages(include=["pgolf", "pgolf.*"]) + ["pgolf_kernels"],
    package_dir={"pgolf_kernels": "kernels"},
    package_data={"pgolf": ["configs/*.toml"]},
    install_requires=[
        "torch>=2.5",  # scaled_dot_product_attention(enable_gqa=...)
        "numpy",
        "sentencepiece>=0.2",
        "protobuf",  # sentencepiece needs it for surface pieces (the byte sidecar)
        "tqdm",
        "huggingface_hub",
        "brotli",
        "zstandard",
        "matplotlib",
    ],
    extras_require={
        # triton: the CPU interpreter tier; scipy: the stats tests; import-linter: the layers test
        "test": ["pytest", "hypothesis", "triton", "scipy", "import-linter"],
        # What a GPU user installs beside a CUDA torch (2.11 / CUDA 13 checked): each is used when
        # importable and pgolf falls back to its own kernels when not. flash-attn has no wheel on
        # PyPI: pip builds its sdist against the installed torch (needs nvcc; install it with
        # --no-build-isolation). fla 0.6 needs torch >= 2.7, triton >= 3.3, transformers 5.x.
        "gpu": ["flash-attn>=2.8.3", "flash-linear-attention>=0.6.0,<0.7", "liger-kernel>=0.8.5,<0.9", "ninja"],
    },
    entry_points={"console_scripts": ["pgolf=pgolf.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
