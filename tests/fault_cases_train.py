"""Fault table: train, export and resume (see tests/faults.py)."""
from faults import CHECKPOINT, Fault

CASES = [
    Fault("train-unknown-setting", ["train", "--config", "smoke", "data.path=data", "data.tokenizer=tok.model",
                                    "train.iteratons=3"], "train.iteratons"),
    Fault("export-missing-checkpoint", ["export", "runs/t/nope.pt", "--out", "x.pgolf"], "nope.pt"),
    Fault("export-train-setting", ["export", str(CHECKPOINT), "--out", "x.pgolf", "train.iterations=3"],
          "export settings only"),
]
