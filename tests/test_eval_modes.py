"""The eval section an artifact records, and how `pgolf eval` reads it back."""
import pytest

from pgolf.config import Config
from pgolf.errors import PgolfError
from pgolf.eval.modes import eval_mode, windows_mode
from pgolf.eval.scoring import recorded_eval_config


def _meta(**eval_changes):
    cfg = Config()
    for k, v in eval_changes.items():
        setattr(cfg.eval, k, v)
    return {"seq_len": 256, "stride": cfg.eval.stride, "eval": cfg.to_dict()["eval"]}


def test_the_recorded_eval_section_comes_back_with_overrides():
    meta = _meta(stride=64, batch_tokens=8192)
    meta["eval"]["ttt"]["lora_rank"] = 16
    got = recorded_eval_config("a.pgolf", meta)
    assert (got.mode, got.stride, got.batch_tokens, got.ttt.lora_rank) == ("windows", 64, 8192, 16)
    got = recorded_eval_config("a.pgolf", meta, stride=0, batch_tokens=4096, mode="windows")
    assert (got.stride, got.batch_tokens, got.ttt.lora_rank) == (0, 4096, 16)


def test_files_without_an_eval_section_keep_their_recorded_stride():
    got = recorded_eval_config("old.pgolf", {"seq_len": 128, "stride": 32})
    assert (got.mode, got.stride) == ("windows", 32)


@pytest.mark.parametrize("change, needle", [
    ({"mode": "nope"}, "eval.mode"),
    ({"stride": 512}, "eval.stride"),
    ({"ttt": {"chunk_size": 0}}, "eval.ttt.chunk_size"),
    ({"bogus": 1}, "bogus"),
])
def test_a_bad_recorded_eval_section_is_a_clear_error_naming_file_and_field(change, needle):
    meta = _meta()
    for k, v in change.items():
        if isinstance(v, dict):
            meta["eval"][k].update(v)
        else:
            meta["eval"][k] = v
    with pytest.raises(PgolfError, match=rf"bad\.pgolf.*{needle}"):
        recorded_eval_config("bad.pgolf", meta)


def test_windows_is_the_default_mode():
    assert Config().eval.mode == "windows" and eval_mode("windows") is windows_mode


def test_every_configured_mode_has_a_function_and_no_other_name_does():
    from pgolf.config import EVAL_MODES

    assert all(callable(eval_mode(name)) for name in EVAL_MODES)
    with pytest.raises(PgolfError, match="eval.mode='nope' is not an eval mode"):
        eval_mode("nope")
