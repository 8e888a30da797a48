"""Which Frobenius safety factor Newton-Schulz should use: 1.0 (the PG records' plain
‖G‖_F + eps) or 1.02 (modded-nanogpt and dion, for which Polar Express was computed).

Frobenius normalisation guarantees σ_max <= 1 in exact arithmetic, with equality for a
rank-1 matrix. Gradients are close to low rank, so σ_max sits near 1, where bf16 rounding
can push it over and an aggressive polynomial (Polar Express's first step is
8.16x - 22.5x³ + 15.9x⁵) is steep. This script measures, for each coefficient set and
scale, the singular values the bf16 op produces on (1) matrices with a dominant direction
(σ_max/‖G‖_F from 0.9 to 1), (2) real Muon inputs (Nesterov momenta) from a few training
steps of the smoke model on the embedded corpus, and reports the worst deviation from 1
of the singular values along the input's live directions (σ_in >= 1e-3·σ_max). CPU,
deterministic.

    python benchmarks/ns_norm_scale.py
"""
from __future__ import annotations

import sys

import torch

from harness import header
from pgolf.data.encode import document_tokens
from pgolf.ops.newton_schulz import newton_schulz


def dominant(rows, cols, share, seed):
    """A matrix whose top singular value is `share` of its Frobenius norm."""
    g = torch.Generator().manual_seed(seed)
    u, _, vh = torch.linalg.svd(torch.randn(rows, cols, generator=g, dtype=torch.float64), full_matrices=False)
    k = min(rows, cols)
    tail = torch.rand(k - 1, generator=g, dtype=torch.float64)
    tail = tail / tail.norm() * (1 - share ** 2) ** 0.5
    s = torch.cat([torch.tensor([share], dtype=torch.float64), tail])
    return (u * s) @ vh


def real_momenta(steps=30):
    """Nesterov momenta of the smoke model's matrices over its first steps (the inputs Muon orthogonalises)."""
    from pgolf.config import load_config
    from pgolf.data.embedded import bbc_news_documents
    from pgolf.data.tokenizer_training import train_tokenizer
    from pgolf.model import GPT
    from pgolf.optim.build import build_optimizers
    import tempfile, numpy as np

    docs = bbc_news_documents()
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_tokenizer(docs[:600], f"{tmp}/t.model", 1024)
        stream = np.concatenate([document_tokens(tok, d) for d in docs[:600]])
    cfg = load_config("smoke", env={})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    optimizers, muon = build_optimizers(model, cfg.optim)
    captured, seq = [], 256
    for step in range(steps):
        start = step * 16 * seq
        chunk = torch.from_numpy(stream[start:start + 16 * seq + 1].astype(np.int64))
        loss = model(chunk[:-1].view(16, seq), chunk[1:].view(16, seq))
        loss.backward()
        for p in muon.param_groups[0]["params"]:
            buf = muon.state.get(p, {}).get("m", torch.zeros_like(p))
            buf = 0.95 * buf + p.grad
            muon.state[p]["m"] = buf
            captured.append(p.grad + 0.95 * buf)
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
    return captured[-len(muon.param_groups[0]["params"]) * 5:]  # the last 5 steps


def live_singular_values(x, coefficients, scale):
    """Output singular values along the input's live directions: max, min, max |σ - 1|."""
    s_in = torch.linalg.svdvals(x.double())
    live = int((s_in >= 1e-3 * s_in[0]).sum())
    s = torch.linalg.svdvals(newton_schulz(x.float(), 5, coefficients, norm_scale=scale).double())[:live]
    return float(s.max()), float(s.min()), float((s - 1).abs().max())


def main():
    print(header("python " + " ".join(sys.argv)))
    print("\n| input | coefficients | scale | max σ | min σ | max abs(σ-1) |")
    print("|---|---|---:|---:|---:|---:|")
    cases = [(f"dominant share {share}", [dominant(512, 512, share, s) for s in range(3)])
             for share in (0.9, 0.99, 0.999, 1.0)]
    cases.append(("smoke-model momenta (last 5 steps)", real_momenta()))
    for name, mats in cases:
        for coefficients in ("classic", "polar_express"):
            for scale in (1.0, 1.02):
                stats = [live_singular_values(m, coefficients, scale) for m in mats]
                print(f"| {name} | {coefficients} | {scale} | {max(s[0] for s in stats):.3f} | "
                      f"{min(s[1] for s in stats):.3f} | {max(s[2] for s in stats):.3f} |")


if __name__ == "__main__":
    main()
