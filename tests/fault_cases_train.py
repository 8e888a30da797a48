"""Fault table: train, export and resume (see tests/faults.py)."""
import hashlib
import io

import torch

from conftest import TINY
from faults import CHECKPOINT, RUN_DIR, Fault

TRAIN = ["train", "--config", "smoke", *TINY, "data.path=data", "data.tokenizer=tok.model", "run.name=again"]
RESUME = [*TRAIN, f"run.resume={CHECKPOINT}", "train.iterations=12"]
EXPORT = ["export", str(CHECKPOINT), "--out", "x.pgolf"]


def _shards(root, split="train"):
    from pgolf.data.shards import list_token_shards

    return list_token_shards(root / "data", split)


def _empty_train_shards(root):
    from pgolf.data.shard_writer import write_shard

    for p in _shards(root):
        write_shard(p, [])


def _bad_last_train_header(root):
    last = _shards(root)[-1]
    data = bytearray(last.read_bytes())
    data[0] ^= 0xFF  # the magic number; the first shards are fine, so training would reach it only late
    last.write_bytes(bytes(data))


def _flip_optimizer_byte(root):
    from pgolf.train.checkpoint import MAGIC

    path = root / CHECKPOINT
    data = bytearray(path.read_bytes())
    state = torch.load(io.BytesIO(bytes(data[len(MAGIC) + 32:])), weights_only=True)
    t = next(v for opt in state["optimizers"] for s in opt["state"].values() for v in s.values()
             if isinstance(v, torch.Tensor) and v.numel() >= 64)
    at = bytes(data).find(t.numpy().tobytes()[:128])
    assert at > 0, "the optimizer state's bytes are not in the file"
    data[at + 5] ^= 0x01
    path.write_bytes(bytes(data))


def _rewrite_checkpoint(change):
    """A checkpoint with a valid checksum whose content `change` altered (a crafted file)."""
    def setup(root):
        from pgolf.train.checkpoint import MAGIC

        path = root / CHECKPOINT
        data = path.read_bytes()
        state = torch.load(io.BytesIO(data[len(MAGIC) + 32:]), weights_only=True)
        change(state)
        buf = io.BytesIO()
        torch.save(state, buf)
        payload = buf.getvalue()
        path.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)
    return setup


def _reprepare_data(root):
    """Different data at the same path (fewer val docs: every shard changes)."""
    from pgolf.data.prepare import PrepareOptions, prepare

    prepare(PrepareOptions(inputs=[root / "docs.jsonl"], tokenizer=root / "tok.model", out_dir=root / "data",
                           val_docs=30, shard_tokens=60_000, workers=1, progress=False, overwrite=True))


def _file(name):
    def setup(root):
        (root / name).write_text("not a directory\n")
    return setup


CASES = [
    Fault("train-unknown-setting", ["train", "--config", "smoke", "data.path=data", "data.tokenizer=tok.model",
                                    "train.iteratons=3"], "train.iteratons"),
    Fault("export-missing-checkpoint", ["export", "runs/t/nope.pt", "--out", "x.pgolf"], "nope.pt"),
    Fault("export-train-setting", [*EXPORT, "train.iterations=3"], "export settings only"),
    # data
    Fault("train-all-shards-empty", TRAIN, "is empty (0 tokens)", setup=_empty_train_shards),
    Fault("train-late-shard-bad-header", TRAIN, "fineweb_train_000005.bin: wrong magic", setup=_bad_last_train_header),
    Fault("train-missing-tokenizer", [*TRAIN, "data.tokenizer=nope.model"], "nope.model"),
    Fault("train-reserve-exceeds-cap", [*TRAIN, "export.method=gptq", "train.max_wallclock_seconds=5"],
          "export.reserve_seconds=8.0"),
    # output paths
    Fault("train-out-dir-is-a-file", [*TRAIN, "run.out_dir=docs.jsonl"], "docs.jsonl is a file"),
    Fault("train-run-dir-is-a-file", [*TRAIN, "run.name=taken"], "runs/taken is a file", setup=_file("runs/taken")),
    Fault("export-out-is-a-directory", ["export", str(CHECKPOINT), "--out", str(RUN_DIR)], "--out runs/t is an existing directory"),
    Fault("export-out-under-a-file", ["export", str(CHECKPOINT), "--out", "docs.jsonl/x.pgolf"], "docs.jsonl is a file"),
    # export settings from the environment, like train
    Fault("export-env-method-needs-hessians", EXPORT, "export.method=gptq needs Hessians",
          env={"EXPORT_METHOD": "gptq"}),
    Fault("export-env-bad-bits", EXPORT, "MATRIX_BITS", env={"MATRIX_BITS": "5"}),
    # checkpoints: damaged, crafted, or not fitting the run
    Fault("resume-flipped-optimizer-byte", RESUME, "checksum mismatch", setup=_flip_optimizer_byte),
    Fault("export-flipped-optimizer-byte", EXPORT, "checksum mismatch", setup=_flip_optimizer_byte),
    Fault("resume-truncated-checkpoint", RESUME, "checkpoint.pt",
          setup=lambda root: (root / CHECKPOINT).write_bytes((root / CHECKPOINT).read_bytes()[:1000])),
    Fault("resume-checkpoint-missing-loader", RESUME, "field 'loader' is missing",
          setup=_rewrite_checkpoint(lambda s: s.pop("loader"))),
    Fault("export-checkpoint-step-is-text", EXPORT, "field 'step' must be a non-negative integer",
          setup=_rewrite_checkpoint(lambda s: s.update(step="8"))),
    Fault("export-checkpoint-model-not-tensors", EXPORT, "field 'model'",
          setup=_rewrite_checkpoint(lambda s: s.update(model={"tok_emb.weight": [1, 2]}))),
    Fault("export-checkpoint-model-wrong-shape", EXPORT, "does not fit its model config",
          setup=_rewrite_checkpoint(lambda s: s["model"].update({"tok_emb.weight": torch.zeros(3, 3)}))),
    Fault("resume-checkpoint-rng-ill-typed", RESUME, "field 'rng'",
          setup=_rewrite_checkpoint(lambda s: s["rng"].update(python="abc"))),
    Fault("resume-with-an-ema-from-a-run-without", [*RESUME, "optim.ema_decay=0.9"], "optim.ema_decay"),
    Fault("resume-checkpoint-ema-missing", [*RESUME, "optim.ema_decay=0.9"], "holds no EMA of the weights",
          setup=_rewrite_checkpoint(lambda s: s["config"]["optim"].update(ema_decay=0.9))),
    Fault("resume-checkpoint-ema-wrong-shape", [*RESUME, "optim.ema_decay=0.9"], "field 'ema' does not fit",
          setup=_rewrite_checkpoint(lambda s: (s["config"]["optim"].update(ema_decay=0.9),
                                               s.update(ema={"tok_emb.weight": torch.zeros(3, 3)})))),
    Fault("resume-checkpoint-ema-not-tensors", RESUME, "field 'ema' must be null or a dict of name -> tensor",
          setup=_rewrite_checkpoint(lambda s: s.update(ema={"tok_emb.weight": [1.0]}))),
    Fault("resume-checkpoint-config-ill-typed", RESUME, "model.model_dim must be int",
          setup=_rewrite_checkpoint(lambda s: s["config"]["model"].update(model_dim="64"))),
    Fault("resume-crafted-loader-position", RESUME, "loader position file_idx=0 pos=1000000000",
          setup=_rewrite_checkpoint(lambda s: s["loader"].update(pos=10**9))),
    Fault("resume-crafted-loader-file", RESUME, "loader position file_idx=-1",
          setup=_rewrite_checkpoint(lambda s: s["loader"].update(file_idx=-1))),
    Fault("resume-loader-position-not-int", RESUME, "loader position must be",
          setup=_rewrite_checkpoint(lambda s: s["loader"].update(pos=1.5))),
    Fault("resume-past-iterations", [*TRAIN, f"run.resume={CHECKPOINT}", "train.iterations=3"],
          "train.iterations=3 leaves nothing to train"),
    Fault("resume-changed-data-same-path", RESUME, "are not the data it was trained on", setup=_reprepare_data),
    Fault("resume-checkpoint-is-a-directory", [*TRAIN, f"run.resume={RUN_DIR}"], "is not a file"),
]
