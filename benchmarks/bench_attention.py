"""Document-isolated causal attention, forward + backward: the backends of
pgolf.model.attention_backends against the dense mask.

    dense mask       SDPA with a [B, 1, T, T] document-causal bool mask (O(T²) memory; the tests' truth)
    flex             FlexAttention with a document-causal BlockMask (compiled on CUDA)
    flash varlen     flash-attn's varlen kernel on cu_seqlens (where flash_attn is installed, CUDA)
    sdpa causal      plain causal SDPA, documents NOT isolated: the floor, for scale only

At the record's shape per GPU (spec §5: 786,432 tokens / 8 GPUs = 98,304 tokens as 48 rows of
2,048; 8 query heads / 4 KV heads of 64; bf16). Documents: a seeded stream of lengths drawn
from an exponential law with the val set's mean, 957 tokens (47,853,343 tokens / 50,000
documents, spec §3; a synthetic stand-in for the real lengths), each opened by BOS, cut into
rows as the loader does (rows start mid-document). Reported: each backend's error against
the dense mask in fp32 (relative Frobenius, forward output), the mask build per forward
(once, shared by every layer), and median ms of the gradient-free forward and of forward +
backward (CPU: FlexAttention has no backward, so that row is skipped).

    python benchmarks/bench_attention.py                        # GPU: the record's shape
    python benchmarks/bench_attention.py --device cpu --small   # checks the script itself
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from harness import kernel_bench_args, median_seconds
from pgolf.model.attention_backends import FlashVarlen, FlexDocument, SDPACausal, flash_attn_available
from pgolf.model.segments import DocSegments

RECORD_SHAPE = (48, 2048, 8, 4, 64)  # rows, row length, query heads, KV heads, head dim: 98,304 tokens
SMALL_SHAPE = (3, 160, 4, 2, 16)
MEAN_DOC_TOKENS = 957.0  # val set: 47,853,343 tokens / 50,000 documents
BOS = 1
TOL = 2e-2  # bf16 backends against the fp32 dense truth (relative Frobenius error)


class DenseMask:
    """SDPA with the dense document-causal mask (the O(T²) baseline)."""

    name = "dense mask"

    def prepare(self, segments: DocSegments):
        doc = segments.doc_id
        t = doc.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=doc.device).tril()
        return (causal & (doc[:, :, None] == doc[:, None, :]))[:, None]

    def __call__(self, q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.size(1) != q.size(1))


def document_rows(rows: int, length: int, mean: float, device, seed: int = 0) -> torch.Tensor:
    """[rows, length] token ids: a stream of documents (exponential lengths, at least 2 tokens,
    BOS first) cut into rows; the other ids are arbitrary (attention never reads them)."""
    gen = torch.Generator().manual_seed(seed)
    total, lengths = rows * length, []
    while sum(lengths) < total + length:
        lengths.extend((torch.empty(256).exponential_(1 / mean, generator=gen).ceil().clamp_min(2)).long().tolist())
    starts = torch.tensor(lengths).cumsum(0) - torch.tensor(lengths)
    offset = int(torch.randint(0, length, (1,), generator=gen))  # the stream starts mid-document
    stream = torch.full((total + length,), BOS + 1, dtype=torch.long)
    stream[starts[starts < total + length]] = BOS
    return stream[offset: offset + total].view(rows, length).to(device)


def providers(device) -> dict[str, object]:
    out = {"dense mask": DenseMask(), "flex": FlexDocument()}
    if flash_attn_available() and torch.device(device).type == "cuda":
        out["flash varlen"] = FlashVarlen()
    out["sdpa causal (no isolation)"] = SDPACausal()
    return out


def make_case(device, shape, dtype, seed: int = 1) -> dict:
    b, t, h, hkv, hd = shape
    g = torch.Generator(device=device).manual_seed(seed)
    make = lambda heads: torch.randn(b, heads, t, hd, device=device, generator=g).to(dtype)
    return {"q": make(h), "k": make(hkv), "v": make(hkv), "dout": make(h)}


def time_ms(fn: Callable[[], object], device) -> float:
    if torch.device(device).type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    return 1e3 * median_seconds(fn, repeats=3, warmup=1)


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))


def errors(segments: DocSegments, case: dict, device) -> dict[str, float]:
    """Each isolating backend's forward against the dense mask in fp32."""
    dense = DenseMask()
    fp32 = {k: case[k].float() for k in ("q", "k", "v")}
    with torch.no_grad():
        ref = dense(*fp32.values(), dense.prepare(segments))
        out = {}
        for name, backend in providers(device).items():
            if isinstance(backend, (SDPACausal, DenseMask)):
                continue
            out[name] = rel_error(backend(case["q"], case["k"], case["v"], backend.prepare(segments)), ref)
    return out


def bench(segments: DocSegments, case: dict, device) -> list[dict]:
    rows = []
    on_cpu = torch.device(device).type == "cpu"
    leaves = [case[k].clone().requires_grad_() for k in ("q", "k", "v")]
    for name, backend in providers(device).items():
        mask = backend.prepare(segments)

        def forward(backend=backend, mask=mask):
            with torch.no_grad():
                backend(case["q"], case["k"], case["v"], mask)

        def train_pass(backend=backend, mask=mask):
            backend(*leaves, mask).backward(case["dout"])
            for t in leaves:
                t.grad = None

        row = {"provider": name, "prepare_ms": time_ms(lambda: backend.prepare(segments), device),
               "fwd_ms": time_ms(forward, device), "fwd_bwd_ms": None}
        if not (on_cpu and isinstance(backend, FlexDocument)):
            row["fwd_bwd_ms"] = time_ms(train_pass, device)
        rows.append(row)
    return rows


def main() -> None:
    args, dev = kernel_bench_args()
    # CPU FlexAttention is torch's unfused forward by design here; its warning says so at length
    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
    shape = SMALL_SHAPE if args.small else RECORD_SHAPE
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    ids = document_rows(shape[0], shape[1], MEAN_DOC_TOKENS if not args.small else 40.0, dev)
    segments = DocSegments.from_tokens(ids, BOS)
    docs = int(segments.cu_seqlens.numel() - 1)
    print("rows {} x {} tokens, {} heads / {} KV heads of {}, {}; {} segments (documents cut at row starts), "
          "mean {:.0f} tokens\n".format(*shape, str(dtype).removeprefix("torch."), docs, ids.numel() / docs))
    case = make_case(dev, shape, dtype)
    print(f"Forward error against the dense mask in fp32 (tolerance {TOL:.0e} for bf16)\n")
    print("| provider | rel. error |\n|---|---:|")
    for name, err in errors(segments, case, dev).items():
        print(f"| {name} | {err:.2e}{'' if err <= TOL else ' (ABOVE TOLERANCE)'} |")
    print("\n| provider | mask build ms | fwd ms (no grad) | fwd+bwd ms |\n|---|---:|---:|---:|")
    for row in bench(segments, case, dev):
        fb = "n/a (no CPU backward)" if row["fwd_bwd_ms"] is None else f"{row['fwd_bwd_ms']:.3f}"
        print(f"| {row['provider']} | {row['prepare_ms']:.3f} | {row['fwd_ms']:.3f} | {fb} |")
    if dev.type == "cpu":
        print("\nCPU run: checks the script; the timings say nothing about the GPU.")


if __name__ == "__main__":
    main()
