"""The bytes/token constants of spec §3.3 on the official val sets, when they are here.

Set PGOLF_OFFICIAL_DATA to a `pgolf data download` root (the layout parameter-golf's
data/ uses) to run these; without it they are skipped, since CI has no FineWeb export.
The published constants come from truncated streams (§3.4.8), so the same truncation
is applied.
"""
import math
import os
from pathlib import Path

import pytest
import torch

from bpb_invariant import KNOWN_BYTES_PER_TOKEN
from pgolf.data.tokenizer import load_tokenizer
from pgolf.metric.valset import load_val_set

ROOT = os.environ.get("PGOLF_OFFICIAL_DATA")
CASES = [  # variant, dataset dir, tokenizer file, seq_len the published stream was truncated to
    ("sp1024", "fineweb10B_sp1024", "fineweb_1024_bpe.model", 1024),
    ("sp8192", "fineweb10B_sp8192", "fineweb_8192_bpe.model", 2048),
    ("caseops", "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved",
     "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model", None),
]


@pytest.mark.skipif(not ROOT, reason="PGOLF_OFFICIAL_DATA is not set")
@pytest.mark.parametrize("variant, dataset, model, seq_len", CASES, ids=[c[0] for c in CASES])
def test_published_bytes_per_token(variant, dataset, model, seq_len):
    data, tok_path = Path(ROOT) / "datasets" / dataset, Path(ROOT) / "tokenizers" / model
    if not data.is_dir() or not tok_path.is_file():
        pytest.skip(f"{variant} not downloaded under {ROOT}")
    val = load_val_set(data, load_tokenizer(tok_path))
    n = len(val)
    end = ((n - 1) // seq_len) * seq_len + 1 if seq_len else n  # the TTT path scores everything
    acc = val.accumulator(end)
    positions = torch.arange(1, end)
    acc.add(torch.ones(end - 1), positions)
    r = acc.result()
    expected = KNOWN_BYTES_PER_TOKEN[variant]
    assert math.isclose(r.bytes_per_token, expected, rel_tol=5e-6), (r.bytes_per_token, expected)
