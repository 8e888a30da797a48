"""`pgolf data download`: fetch the published FineWeb exports, manifest-driven and resumable.

The hub repositories share one layout under a remote root (default `datasets/`, env
MATCHED_FINEWEB_REMOTE_ROOT_PREFIX as in parameter-golf):

    <root>/manifest.json
    <root>/datasets/<dataset>/fineweb_{val,train}_NNNNNN.bin   (+ fineweb_val_bytes_NNNNNN.bin for CaseOps)
    <root>/tokenizers/<model files>

and land locally in the same shape parameter-golf's `data/` uses:
`<out>/manifest.json`, `<out>/datasets/<dataset>/`, `<out>/tokenizers/`.

The manifest says how many shards exist (`stats.files_train`, `stats.files_val`) and which
tokenizer files belong to the dataset. Files are fetched one at a time into a temporary
name and renamed when complete and valid, so a re-run skips everything already present
and fetches the rest: that is what makes it resumable.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from pgolf.data import shards
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_open


@dataclass(frozen=True)
class Variant:
    repo_id: str
    dataset: str
    sidecar: bool  # the val split carries fineweb_val_bytes_* (transformed tokenizers)


VARIANTS = {
    "sp1024": Variant("willdepueoai/parameter-golf", "fineweb10B_sp1024", sidecar=False),
    "sp8192": Variant("kevclark/parameter-golf", "fineweb10B_sp8192", sidecar=False),
    "caseops": Variant("romeerp/parameter-golf-caseops-v1", "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved", sidecar=True),
}
DEFAULT_REMOTE_ROOT = "datasets"


class Source(Protocol):
    def fetch(self, remote_path: str, dest: Path) -> None:
        """Write the file at `remote_path` (relative to the repository root) to `dest`."""


class HubSource:
    """A Hugging Face dataset repository, through huggingface_hub's cache (which resumes partial downloads)."""

    def __init__(self, repo_id: str, revision: str | None = None):
        self.repo_id, self.revision = repo_id, revision

    def _unreachable(self, remote_path: str, why: str) -> PgolfError:
        return PgolfError(f"cannot reach the Hugging Face Hub to fetch {remote_path} from {self.repo_id} ({why}); "
                          "check the network (or unset HF_HUB_OFFLINE), or copy from a local mirror with --mirror DIR")

    def fetch(self, remote_path: str, dest: Path) -> None:
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled

        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise self._unreachable(remote_path, "HF_HUB_OFFLINE is set")
        parent, _, name = remote_path.rpartition("/")
        try:
            cached = huggingface_hub.hf_hub_download(repo_id=self.repo_id, filename=name, subfolder=parent or None,
                                                     repo_type="dataset", revision=self.revision)
        except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
            # LocalEntryNotFoundError subclasses EntryNotFoundError: it means "offline and not cached",
            # not "the file does not exist", so it must be caught first
            raise self._unreachable(remote_path, type(e).__name__) from None
        except EntryNotFoundError:
            raise PgolfError(f"{remote_path} is not in the hub dataset {self.repo_id}") from None
        except OSError as e:  # connection errors of the HTTP client (requests/httpx subclass OSError or not)
            raise self._unreachable(remote_path, f"{type(e).__name__}: {e}") from None
        _copy_atomic(Path(cached).resolve(strict=True), dest)


class MirrorSource:
    """A local directory laid out like the hub repository (an offline mirror)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise PgolfError(f"--mirror {self.root} is not a directory")

    def fetch(self, remote_path: str, dest: Path) -> None:
        src = self.root / remote_path
        if not src.is_file():
            raise PgolfError(f"{remote_path} is not in the mirror {self.root}")
        _copy_atomic(src, dest)


def _copy_atomic(src: Path, dest: Path) -> None:
    with open(src, "rb") as fin, atomic_open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)


@dataclass
class Plan:
    """What one download needs: remote path -> local path, in fetch order."""

    files: list[tuple[str, Path]]
    dataset_dir: Path
    tokenizer_paths: list[Path]
    train_shards_available: int


def plan_download(manifest: dict, variant: Variant, out_root: Path, remote_root: str,
                  train_shards: int | None) -> Plan:
    """Resolve the manifest into the list of files to have locally."""
    where = f"{remote_root}/manifest.json"
    entry = next((d for d in manifest.get("datasets", []) if d.get("name") == variant.dataset), None)
    if entry is None:
        names = [d.get("name") for d in manifest.get("datasets", [])]
        raise PgolfError(f"{where}: no dataset named {variant.dataset!r} (it lists {names})")
    stats = entry.get("stats") or {}
    try:
        n_train, n_val = int(stats["files_train"]), int(stats["files_val"])
    except (KeyError, TypeError, ValueError):
        raise PgolfError(f"{where}: dataset {variant.dataset!r} lacks integer stats.files_train / stats.files_val") from None
    want = n_train if train_shards is None else train_shards
    if want < 0:
        raise PgolfError(f"--train-shards must be non-negative, got {want}")
    if want > n_train:
        raise PgolfError(f"--train-shards {want}: {variant.dataset} has only {n_train} train shards")
    tok_name = entry.get("tokenizer_name")
    tok_entry = next((t for t in manifest.get("tokenizers", []) if t.get("name") == tok_name), None)
    if tok_entry is None:
        raise PgolfError(f"{where}: dataset {variant.dataset!r} names tokenizer {tok_name!r}, which the manifest does not list")
    tok_files = [str(tok_entry[k]) for k in ("model_path", "vocab_path", "path") if tok_entry.get(k)]
    if not tok_files:
        raise PgolfError(f"{where}: tokenizer {tok_name!r} lists no model_path/vocab_path/path")

    dataset_dir = out_root / "datasets" / variant.dataset
    data_remote = f"{remote_root}/datasets/{variant.dataset}"
    names = [shards.shard_name("val", i) for i in range(n_val)]
    if variant.sidecar:
        names += [shards.sidecar_name(i) for i in range(int(stats.get("files_val_bytes", n_val)))]
    names += [shards.shard_name("train", i) for i in range(want)]
    files = [(f"{data_remote}/{n}", dataset_dir / n) for n in names]
    tokenizer_paths = []
    for rel in tok_files:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise PgolfError(f"{where}: tokenizer path {rel!r} must be relative to the repository root")
        tokenizer_paths.append(out_root / rel)
        files.append((f"{remote_root}/{rel}", out_root / rel))
    return Plan(files, dataset_dir, tokenizer_paths, n_train)


def _is_complete(path: Path) -> bool:
    """A local file can be kept: it exists and, if a shard, validates."""
    if not path.is_file():
        return False
    if path.suffix != ".bin":
        return True
    try:
        shards.read_header(path)
        return True
    except shards.ShardError:
        return False


def download(variant_name: str, out_root: str | Path, train_shards: int | None = None, *,
             source: Source | None = None, remote_root: str | None = None, refresh_manifest: bool = False,
             log: Callable[[str], None] = print) -> Plan:
    """Fetch a variant's val split (and sidecar), the first `train_shards` train shards
    (all when None) and its tokenizer into `out_root`; skip what is already there."""
    if variant_name not in VARIANTS:
        raise PgolfError(f"--variant must be one of {sorted(VARIANTS)}, got {variant_name!r}")
    variant = VARIANTS[variant_name]
    repo_id = os.environ.get("MATCHED_FINEWEB_REPO_ID", variant.repo_id)
    remote_root = (remote_root if remote_root is not None
                   else os.environ.get("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", DEFAULT_REMOTE_ROOT)).strip("/")
    source = source or HubSource(repo_id)
    out_root = Path(out_root)

    manifest_path = out_root / "manifest.json"
    if refresh_manifest or not manifest_path.is_file() or _manifest_lacks(manifest_path, variant.dataset):
        source.fetch(f"{remote_root}/manifest.json", manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PgolfError(f"{manifest_path}: not valid JSON ({e.msg}); delete it and re-run") from None

    plan = plan_download(manifest, variant, out_root, remote_root, train_shards)
    todo = [(r, p) for r, p in plan.files if not _is_complete(p)]
    log(f"{variant_name}: {len(plan.files) - len(todo)} of {len(plan.files)} files already present; fetching {len(todo)}")
    for remote, local in todo:
        source.fetch(remote, local)
        if local.suffix == ".bin":
            try:
                shards.read_header(local)
            except shards.ShardError:
                local.unlink()
                raise
        log(f"  {local}")
    return plan


def _manifest_lacks(path: Path, dataset: str) -> bool:
    # One local manifest.json serves several variants only if it came from the same repo;
    # a manifest without this variant's dataset is refetched rather than trusted.
    try:
        return not any(d.get("name") == dataset for d in json.loads(path.read_text()).get("datasets", []))
    except (OSError, json.JSONDecodeError, AttributeError):
        return True
