"""Fault table: data, tokenizer, eval and artifact commands (see tests/faults.py)."""
from faults import ARTIFACT, Fault

CASES = [
    Fault("eval-missing-artifact", ["eval", "runs/t/missing.pgolf"], "missing.pgolf"),
    Fault("eval-unknown-flag", ["eval", str(ARTIFACT), "--no-such-flag"], "--no-such-flag"),
]
