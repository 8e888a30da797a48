"""Export a trained model: quantize, lay out and compress, count the bytes, enforce the limit, write.

The challenge's limit is on artifact + code: strictly below 16,000,000 bytes (decimal).
`write_export` raises before anything is written if the total is at or above it. Exporting a
state dict outside a run (`pgolf export`, tests) is pgolf.export.offline.
"""
from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

import pgolf
from pgolf.config import Config, ExportConfig, from_dict
from pgolf.errors import PgolfError
from pgolf.fileio import sha256_file
from pgolf.export.artifact import Artifact, StreamReport, encode_artifact, write_artifact
from pgolf.export.code_size import CodeBytes, count_code_bytes
from pgolf.model import Role, roles_for_config
from pgolf.quant.recipe import quantize_state

SIZE_LIMIT = 16_000_000


class ArtifactTooLarge(PgolfError):
    pass


@dataclass(frozen=True)
class ExportReport:
    path: str
    method: str
    layout: str
    artifact_bytes: int
    code_bytes: int
    code_mode: str
    total_bytes: int
    params: int
    streams: tuple[StreamReport, ...] = field(default=())
    quantize_seconds: float = 0.0  # quantization alone (GPTQ, LQER), without compression: what a reserve covers

    @property
    def headroom(self) -> int:
        return SIZE_LIMIT - self.total_bytes

    @property
    def bits_per_weight(self) -> float:
        """Artifact bits per model parameter (the record reaches 3.53, spec §5.12)."""
        return 8 * self.artifact_bytes / self.params

    def summary(self) -> str:
        return (f"artifact {self.artifact_bytes:,} B ({self.method}, {self.layout}, {self.bits_per_weight:.2f} bits/weight)"
                f" + code {self.code_bytes:,} B ({self.code_mode}) = {self.total_bytes:,} B, "
                f"{self.headroom:,} B under the {SIZE_LIMIT:,} limit")


def run_meta(cfg: Config, steps: int) -> dict:
    """What an artifact records about its training run, so `pgolf eval` can score it as trained.

    The tokenizer's sha256 lets `pgolf eval` refuse a different model with the same vocabulary
    size (which would score without error and give a wrong val_bpb).
    """
    meta = {"steps": steps, "seed": cfg.run.seed, "seq_len": cfg.eval.seq_len or cfg.train.seq_len,
            "stride": cfg.eval.stride, "eval": cfg.to_dict()["eval"],
            "data_path": cfg.data.path, "tokenizer_path": cfg.data.tokenizer}
    if Path(cfg.data.tokenizer).is_file():
        meta["tokenizer_sha256"] = sha256_file(cfg.data.tokenizer)
    return meta


def build_artifact(state: dict[str, Tensor], model_config: dict, cfg: ExportConfig, meta: dict | None = None,
                   hessians: dict[str, Tensor] | None = None, roles: dict[str, Role] | None = None) -> Artifact:
    """The artifact of a state dict. Its tensors' roles are those the model `model_config`
    describes declares (so a bare checkpoint exports exactly as its model trained), or `roles`."""
    if cfg.method == "gptq" and not hessians:
        raise PgolfError("export.method=gptq needs Hessians collected during training (or use export.method=rtn)")
    if roles is None:
        roles = roles_for_config(from_dict({"model": model_config}, "the model config").model)
    meta = {"pgolf_version": pgolf.__version__, "method": cfg.method, "matrix_bits": cfg.matrix_bits,
            "embed_bits": cfg.embed_bits, "lqer_top": cfg.lqer_top,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **(meta or {})}
    return Artifact(model_config, quantize_state(state, cfg, roles, hessians), meta, roles)


def write_export(art: Artifact, cfg: ExportConfig, path: str | Path, params: int,
                 run_config: Config | None = None, quantize_seconds: float = 0.0,
                 code: CodeBytes | None = None) -> ExportReport:
    """Encode and write a built artifact (what a stage between quantization and writing, such as
    logit calibration, may have added to it counts); `params`: the model's, for bits per weight;
    `quantize_seconds`: how long building it took (reported, for the export reserve); `code`: the
    code bytes a trainer measured at setup (so a packer failure stops a run before it trains), else
    measured now."""
    blob, streams = encode_artifact(art, cfg.layout, cfg.codec)
    if code is None:
        if run_config is None:
            run_config = from_dict({"model": art.model_config, "export": dataclasses.asdict(cfg)}, "the export settings")
        code = count_code_bytes(cfg.code_bytes, run_config)
    report = ExportReport(str(path), cfg.method, cfg.layout, len(blob), code.counted_bytes, code.mode,
                          len(blob) + code.counted_bytes, params, tuple(streams), quantize_seconds)
    if report.total_bytes >= SIZE_LIMIT:
        raise ArtifactTooLarge(
            f"not exported: artifact {report.artifact_bytes:,} B + code {report.code_bytes:,} B ({code.mode}) = "
            f"{report.total_bytes:,} B, which is not below the {SIZE_LIMIT:,}-byte limit")
    write_artifact(path, blob)
    return report
