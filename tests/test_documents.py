import gzip
import json

import pytest

from pgolf.data.documents import iter_documents
from pgolf.errors import PgolfError


def test_reads_txt_jsonl_and_gzip_in_order(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "one", "id": 1}) + "\n\n" + json.dumps({"text": " two\n"}) + "\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "thrée"}) + "\n")
    sub = tmp_path / "c"
    sub.mkdir()
    (sub / "2.txt").write_text("five")
    (sub / "1.txt").write_text("four\n\nstill four")
    (sub / "ignored.csv").write_text("x")
    docs = list(iter_documents([tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz", sub]))
    assert docs == ["one", " two\n", "thrée", "four\n\nstill four", "five"]  # text untouched


def test_custom_text_field(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    assert list(iter_documents([tmp_path / "a.jsonl"], text_field="body")) == ["x"]


@pytest.mark.parametrize("line, message", [
    ("{not json", "a.jsonl:2: invalid JSON"),
    (json.dumps({"txt": "x"}), "a.jsonl:2: no 'text' field"),
    (json.dumps({"text": 5}), "a.jsonl:2: field 'text' is int"),
    (json.dumps(["text"]), "a.jsonl:2: no 'text' field"),
])
def test_bad_records_name_file_and_line(tmp_path, line, message):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
    with pytest.raises(PgolfError, match=message.replace("(", r"\(")):
        list(iter_documents([tmp_path / "a.jsonl"]))


def test_bad_inputs(tmp_path):
    with pytest.raises(PgolfError, match="does not exist"):
        list(iter_documents([tmp_path / "missing.jsonl"]))
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(PgolfError, match="unsupported file type"):
        list(iter_documents([tmp_path / "x.parquet"]))
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe")
    with pytest.raises(PgolfError, match="bad.txt: not valid UTF-8"):
        list(iter_documents([tmp_path / "bad.txt"]))
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(PgolfError, match="bad.jsonl.gz: corrupt gzip"):
        list(iter_documents([tmp_path / "bad.jsonl.gz"]))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PgolfError, match="holds no .txt"):
        list(iter_documents([empty]))
