"""pgolf: `pip install -e .` installs the package and the `pgolf` command."""
from setuptools import find_packages, setup

setup(
    name="pgolf",
    version="0.1.0",
    description="Training and evaluation engine for OpenAI's Parameter Golf challenge",
    python_requires=">=3.10",
    packages=find_packages(include=["pgolf", "pgolf.*"]),
    install_requires=[
        "torch>=2.4",
        "numpy",
        "sentencepiece>=0.2",
        "protobuf",  # sentencepiece needs it for surface pieces (the byte sidecar)
        "tqdm",
        "huggingface_hub",
    ],
    extras_require={"test": ["pytest", "hypothesis"]},
    entry_points={"console_scripts": ["pgolf=pgolf.cli:main"]},
)
