"""Record what every consumer of parameter roles did before roles were declared (tests/test_roles.py
checks the current code against it). Run once, at the commit before the change (04590db; the export
digests were re-recorded there when they changed to payload digests):

    python tests/golden/make_roles_reference.py > tests/golden/roles_reference.json

It uses only interfaces that both codes share, and falls back to the new functions where the
old ones are gone, so re-running it now must print the same file (except where stated in
test_roles.py: the layout groups of GDN projections).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import torch

from pgolf.config import load_config
from pgolf.export import codecs
from pgolf.export.artifact import _read_table, encode_artifact
from pgolf.export.export import build_artifact
from pgolf.model import GPT
from pgolf.optim.build import build_optimizers
from pgolf.quant.hessians import HessianCollector

MODELS = {  # name: (preset, overrides)
    "smoke": ("smoke", []),
    "baseline": ("baseline", []),
    "gdn": ("gdn", []),
    "gdn_hybrid": ("gdn", ["model.attn_layers=1,4"]),
    "untied": ("smoke", ["model.tie_embeddings=false"]),
}
EXPORTS = {  # name: (preset, overrides); exported from a seeded model with nonzero weights
    "smoke": ("smoke", []),
    "baseline_small": ("baseline", ["model.num_layers=3", "model.model_dim=256"]),
    "transformer_gptq_grouped": ("smoke", ["model.num_layers=2", "model.model_dim=256", "export.method=gptq",
                                           "export.matrix_bits=6", "export.embed_bits=7", "export.layout=grouped",
                                           "export.lqer_top=2", "export.codec=zlib"]),
}


def qat_names(model) -> list[str]:
    try:
        from pgolf.train.trainer import late_qat_layers
        return sorted(late_qat_layers(model))
    except ImportError:
        from pgolf.quant.qat import qat_layers
        return sorted(qat_layers(model))


def fp32_names(model) -> list[str]:
    try:
        from pgolf.model.gpt import keeps_fp32
        from pgolf.model.layers import CastedLinear
        linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, CastedLinear)}
        return sorted(n for n, p in model.named_parameters() if n in linear or keeps_fp32(n, p))
    except ImportError:
        from pgolf.model.roles import param_roles
        return sorted(n for n, r in param_roles(model).items() if r.keep_fp32)


def groups(model, cfg) -> list[list[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    optimizers, _ = build_optimizers(model, cfg.optim)
    return [[names[id(p)] for g in o.param_groups for p in g["params"]] for o in optimizers]


def hessian_names(model, cfg) -> list[str]:
    collector = HessianCollector(model)
    try:
        with torch.no_grad():
            x = torch.randint(0, cfg.model.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))
            model(x, x)
        return sorted(collector.hessians())
    finally:
        collector.remove()


def _payload_digest(blob: bytes) -> tuple[str, int]:
    """sha256 and size of what the tensors put in the file: every stream's bytes, the index reduced
    to its tensor entries. The model config, meta and format version are left out, so settings
    added to the config and format bumps do not count as a change of the weights' bytes."""
    table, pos = _read_table(blob, "digest")
    h, total = hashlib.sha256(), 0
    for name, codec, size in table:
        data = blob[pos:pos + size]
        pos += size
        if name == "index":
            tensors = json.dumps(json.loads(codecs.decompress(codec, data))["tensors"], sort_keys=True)
            data = re.sub(r"blocks\.(\d+)\.attn\.", r"blocks.\1.mixer.", tensors).encode()  # format 3's names
        h.update(name.encode() + codec.encode() + data)
        total += len(data)
    return h.hexdigest(), total


def export_digest(preset: str, overrides: list[str]) -> dict:
    cfg = load_config(preset, overrides, env={})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    for p in model.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.02)
    hessians = None
    if cfg.export.method == "gptq":
        collector = HessianCollector(model)
        with torch.no_grad():
            x = torch.randint(0, cfg.model.vocab_size, (2, 128), generator=torch.Generator().manual_seed(1))
            model(x, x)
        hessians = collector.hessians()
        collector.remove()
    art = build_artifact(model.state_dict(), cfg.to_dict()["model"], cfg.export, hessians=hessians)
    blob, _ = encode_artifact(dataclasses.replace(art, meta={}), cfg.export.layout, cfg.export.codec)
    digest, payload = _payload_digest(blob)
    return {"bytes": payload, "sha256": digest,
            "schemes": {n: [e.scheme, e.bits, str(e.parts.get("data", e.parts.get("q")).dtype)]
                        for n, e in art.tensors.items()}}


def main() -> None:
    out = {"models": {}, "exports": {}}
    for name, (preset, overrides) in MODELS.items():
        cfg = load_config(preset, overrides, env={})
        torch.manual_seed(0)
        model = GPT(cfg.model)
        out["models"][name] = {"optimizer_groups": groups(model, cfg), "qat": qat_names(model),
                               "fp32": fp32_names(model), "hessians": hessian_names(model, cfg) if name != "baseline" and not name.startswith("gdn") else None}
    for name, (preset, overrides) in EXPORTS.items():
        out["exports"][name] = export_digest(preset, overrides)
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
