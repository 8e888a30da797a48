"""Every fault a clear error: walks the fault tables (tests/fault_cases_*.py) with tests/faults.py."""
from __future__ import annotations

import json
import os

import pytest

from conftest import TINY
from fault_cases_data import CASES as DATA_CASES
from fault_cases_train import CASES as TRAIN_CASES
from faults import RUN_DIR, copy_demo, run_fault

CASES = [*DATA_CASES, *TRAIN_CASES]
assert len({c.id for c in CASES}) == len(CASES), "fault ids must be unique"


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory, bbc_docs, own_tokenizer):
    """A small finished run with relative paths only (see tests/faults.py)."""
    from pgolf.config import load_config
    from pgolf.data.prepare import PrepareOptions, prepare
    from pgolf.train.trainer import run_training

    root = tmp_path_factory.mktemp("demo")
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in bbc_docs[:400]))
    for suffix in (".model", ".vocab"):
        src = own_tokenizer.path.with_suffix(suffix)
        if src.is_file():
            (root / f"tok{suffix}").write_bytes(src.read_bytes())
    cwd = os.getcwd()
    os.chdir(root)
    try:
        prepare(PrepareOptions(inputs=[root / "docs.jsonl"], tokenizer=root / "tok.model", out_dir=root / "data",
                               val_docs=40, shard_tokens=60_000, workers=1, progress=False))
        cfg = load_config("smoke", [*TINY, "data.path=data", "data.tokenizer=tok.model",
                                    f"run.out_dir={RUN_DIR.parent}", f"run.name={RUN_DIR.name}"], env={})
        run_training(cfg, preset="smoke")
    finally:
        os.chdir(cwd)
    return root


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_is_a_clear_error(case, demo_dir, tmp_path, capsys, monkeypatch):
    for name in [n for n in os.environ if n in _CHALLENGE_ENV]:  # the host's settings must not leak in
        monkeypatch.delenv(name)
    run_fault(case, copy_demo(demo_dir, tmp_path / "demo"), capsys, monkeypatch)


def _challenge_env() -> set[str]:
    from pgolf.config import ENV_NAMES

    return set(ENV_NAMES)


_CHALLENGE_ENV = _challenge_env()
