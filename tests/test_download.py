"""`pgolf data download` against a local directory laid out like the hub repositories."""
import json
from pathlib import Path

import pytest

from pgolf.data import shard_writer, shards
from pgolf.data.download import MirrorSource, download
from pgolf.errors import PgolfError

SP1024 = "fineweb10B_sp1024"
CASEOPS = "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"


def make_mirror(root: Path, n_train=5) -> Path:
    base = root / "datasets"
    for dataset, sidecar in ((SP1024, False), (CASEOPS, True)):
        d = base / "datasets" / dataset
        d.mkdir(parents=True)
        shard_writer.write_shard(d / "fineweb_val_000000.bin", [1, 5, 6, 1, 7])
        if sidecar:
            shard_writer.write_shard(d / "fineweb_val_bytes_000000.bin", [0, 3, 1, 0, 2])
        for i in range(n_train):
            shard_writer.write_shard(d / f"fineweb_train_{i:06d}.bin", [1, i, i])
    (base / "tokenizers").mkdir()
    for name in ("fineweb_1024_bpe.model", "fineweb_1024_bpe.vocab", "caseops.model"):
        (base / "tokenizers" / name).write_bytes(b"model bytes " + name.encode())
    manifest = {
        "datasets": [
            {"name": SP1024, "tokenizer_name": "sp_bpe_1024", "stats": {"files_train": n_train, "files_val": 1}},
            {"name": CASEOPS, "tokenizer_name": "caseops", "stats": {"files_train": n_train, "files_val": 1}},
        ],
        "tokenizers": [
            {"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model", "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"},
            {"name": "caseops", "model_path": "tokenizers/caseops.model"},
        ],
    }
    (base / "manifest.json").write_text(json.dumps(manifest))
    return root


class CountingSource(MirrorSource):
    def __init__(self, root):
        super().__init__(root)
        self.fetched = []

    def fetch(self, remote_path, dest):
        self.fetched.append(remote_path)
        super().fetch(remote_path, dest)


@pytest.fixture
def mirror(tmp_path):
    return make_mirror(tmp_path / "hub")


def test_fetches_val_prefix_of_train_and_tokenizer_in_local_layout(tmp_path, mirror):
    src = CountingSource(mirror)
    plan = download("sp1024", tmp_path / "data", 2, source=src, log=lambda m: None)
    data = tmp_path / "data" / "datasets" / SP1024
    assert plan.dataset_dir == data and plan.train_shards_available == 5
    assert sorted(p.name for p in data.iterdir()) == ["fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    assert (tmp_path / "data" / "tokenizers" / "fineweb_1024_bpe.model").read_bytes() == b"model bytes fineweb_1024_bpe.model"
    assert plan.tokenizer_paths[0] == tmp_path / "data" / "tokenizers" / "fineweb_1024_bpe.model"
    assert src.fetched[0] == "datasets/manifest.json"
    assert f"datasets/datasets/{SP1024}/fineweb_train_000001.bin" in src.fetched


def test_resumes_skipping_what_is_complete(tmp_path, mirror):
    out = tmp_path / "data"
    download("sp1024", out, 2, source=CountingSource(mirror), log=lambda m: None)
    again = CountingSource(mirror)
    download("sp1024", out, 2, source=again, log=lambda m: None)
    assert again.fetched == []
    more = CountingSource(mirror)
    download("sp1024", out, 4, source=more, log=lambda m: None)
    assert more.fetched == [f"datasets/datasets/{SP1024}/fineweb_train_{i:06d}.bin" for i in (2, 3)]

    data = out / "datasets" / SP1024
    (data / "fineweb_train_000001.bin").unlink()
    partial = data / "fineweb_train_000000.bin"
    partial.write_bytes(partial.read_bytes()[:-2])  # an interrupted copy from some other tool
    repair = CountingSource(mirror)
    download("sp1024", out, 4, source=repair, log=lambda m: None)
    assert sorted(repair.fetched) == [f"datasets/datasets/{SP1024}/fineweb_train_{i:06d}.bin" for i in (0, 1)]
    assert shards.read_shard(partial).tolist() == [1, 0, 0]


def test_all_train_shards_by_default_and_the_caseops_sidecar(tmp_path, mirror):
    download("caseops", tmp_path, source=MirrorSource(mirror), log=lambda m: None)
    data = tmp_path / "datasets" / CASEOPS
    assert len(shards.list_token_shards(data, "train")) == 5
    assert [p.name for p in shards.list_sidecar_shards(data)] == ["fineweb_val_bytes_000000.bin"]
    assert shards.load_sidecar(data, shards.load_split(data, "val"), bos_id=1).tolist() == [0, 3, 1, 0, 2]


def test_errors_name_the_problem(tmp_path, mirror):
    src = MirrorSource(mirror)
    quiet = dict(source=src, log=lambda m: None)
    with pytest.raises(PgolfError, match="--train-shards 6: fineweb10B_sp1024 has only 5 train shards"):
        download("sp1024", tmp_path, 6, **quiet)
    with pytest.raises(PgolfError, match="--variant must be one of"):
        download("sp4096", tmp_path, 1, **quiet)
    with pytest.raises(PgolfError, match="manifest.json: no dataset named 'fineweb10B_sp8192'"):
        download("sp8192", tmp_path, 1, **quiet)
    with pytest.raises(PgolfError, match="--mirror .* is not a directory"):
        MirrorSource(tmp_path / "nowhere")

    manifest = json.loads((mirror / "datasets" / "manifest.json").read_text())
    manifest["tokenizers"] = []
    (mirror / "datasets" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PgolfError, match="names tokenizer 'sp_bpe_1024', which the manifest does not list"):
        download("sp1024", tmp_path / "fresh", 1, **quiet)


def test_a_corrupt_remote_shard_is_not_kept(tmp_path, mirror):
    bad = mirror / "datasets" / "datasets" / SP1024 / "fineweb_train_000000.bin"
    bad.write_bytes(bad.read_bytes() + b"xx")
    with pytest.raises(shards.ShardError, match="2 bytes beyond"):
        download("sp1024", tmp_path, 1, source=MirrorSource(mirror), log=lambda m: None)
    assert not (tmp_path / "datasets" / SP1024 / "fineweb_train_000000.bin").exists()


def test_hub_source_asks_for_the_right_repo_and_paths(tmp_path, mirror, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_hf_hub_download(repo_id, filename, subfolder=None, repo_type=None, revision=None):
        calls.append((repo_id, subfolder, filename, repo_type))
        return str(mirror / subfolder / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    download("sp1024", tmp_path, 1, log=lambda m: None)
    assert calls[0] == ("willdepueoai/parameter-golf", "datasets", "manifest.json", "dataset")
    assert ("willdepueoai/parameter-golf", f"datasets/datasets/{SP1024}", "fineweb_train_000000.bin", "dataset") in calls
    assert ("willdepueoai/parameter-golf", "datasets/tokenizers", "fineweb_1024_bpe.vocab", "dataset") in calls

    calls.clear()
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", "someone/fork")
    download("caseops", tmp_path, 1, log=lambda m: None)
    assert {c[0] for c in calls} == {"someone/fork"}


def test_an_unreachable_hub_is_named_as_such(tmp_path, monkeypatch):
    """Offline, huggingface_hub raises LocalEntryNotFoundError, a subclass of EntryNotFoundError:
    it used to be reported as "manifest.json is not in the hub dataset"."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(**kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(PgolfError, match="cannot reach the Hugging Face Hub to fetch datasets/manifest.json .*--mirror"):
        download("sp1024", tmp_path / "dl", 1, log=lambda m: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kw: (_ for _ in ()).throw(ConnectionError("refused")))
    with pytest.raises(PgolfError, match="cannot reach the Hugging Face Hub .*ConnectionError: refused"):
        download("sp1024", tmp_path / "dl", 1, log=lambda m: None)
    assert not (tmp_path / "dl").exists()
