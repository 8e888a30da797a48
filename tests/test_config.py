import pytest

from pgolf.config import ENV_NAMES, FIELDS, Config, from_dict, load_config
from pgolf.errors import PgolfError


def test_baseline_preset_is_the_naive_baseline():
    cfg = load_config("baseline", env={})
    m, o, t = cfg.model, cfg.optim, cfg.train
    assert (m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.mlp_mult) == (1024, 9, 512, 8, 4, 2)
    assert (m.tie_embeddings, m.tied_embed_init_std, m.logit_softcap, m.attention.qk_gain_init, m.attention.rope_base) == (True, 0.005, 30.0, 1.5, 10000.0)
    assert (o.matrix_lr, o.scalar_lr, o.tied_embed_lr, o.muon_momentum, o.muon_backend_steps) == (0.04, 0.04, 0.05, 0.95, 5)
    assert (o.muon_momentum_warmup_start, o.muon_momentum_warmup_steps, o.beta1, o.beta2) == (0.85, 500, 0.9, 0.95)
    assert (t.batch_tokens, t.seq_len, t.iterations, t.warmup_steps, t.warmdown_iters, t.max_wallclock_seconds) == (
        524_288, 1024, 20000, 20, 1200, 600.0)
    assert (cfg.export.method, cfg.export.matrix_bits, cfg.export.embed_bits, cfg.export.codec) == ("rtn", 8, 8, "zlib")


def test_precedence_preset_then_environment_then_command_line():
    cfg = load_config("smoke", ["train.iterations=7"], env={"ITERATIONS": "5", "MODEL_DIM": "96", "SEED": "3"})
    assert cfg.train.iterations == 7  # the command line beats the environment
    assert cfg.model.model_dim == 96 and cfg.run.seed == 3  # the environment beats the preset
    assert cfg.model.num_layers == 4  # the preset beats the default


def test_challenge_names_work_on_the_command_line_too():
    cfg = load_config(None, ["DATA_PATH=/d", "TOKENIZER_PATH=/t.model", "VOCAB_SIZE=8192", "TIE_EMBEDDINGS=0",
                             "MAX_WALLCLOCK_SECONDS=30", "train.batch_tokens=524_288"], env={})
    assert (cfg.data.path, cfg.data.tokenizer, cfg.model.vocab_size) == ("/d", "/t.model", 8192)
    assert cfg.model.tie_embeddings is False and cfg.train.max_wallclock_seconds == 30.0


def test_every_baseline_env_name_is_mapped():
    names = ("DATA_PATH TOKENIZER_PATH RUN_ID SEED VAL_BATCH_SIZE VAL_LOSS_EVERY TRAIN_LOG_EVERY ITERATIONS "
             "WARMDOWN_ITERS WARMUP_STEPS TRAIN_BATCH_TOKENS TRAIN_SEQ_LEN MAX_WALLCLOCK_SECONDS QK_GAIN_INIT "
             "VOCAB_SIZE NUM_LAYERS NUM_KV_HEADS MODEL_DIM NUM_HEADS MLP_MULT TIE_EMBEDDINGS ROPE_BASE LOGIT_SOFTCAP "
             "EMBED_LR HEAD_LR TIED_EMBED_LR TIED_EMBED_INIT_STD MATRIX_LR SCALAR_LR MUON_MOMENTUM MUON_BACKEND_STEPS "
             "MUON_MOMENTUM_WARMUP_START MUON_MOMENTUM_WARMUP_STEPS BETA1 BETA2 ADAM_EPS GRAD_CLIP_NORM").split()
    assert set(names) <= set(ENV_NAMES)
    assert all(key in FIELDS for key in ENV_NAMES.values())


@pytest.mark.parametrize("overrides, env, message", [
    (["train.iteratons=5"], {}, "command line: unknown setting 'train.iteratons' \\(did you mean train.iterations"),
    (["ITERATONS=5"], {}, "unknown setting 'ITERATONS'"),
    (["train.iterations=5.5"], {}, "train.iterations='5.5' is not a valid int"),
    (["model.tie_embeddings=maybe"], {}, "model.tie_embeddings='maybe' is not a valid bool"),
    (["export.codec=gzip"], {}, "export.codec='gzip' must be one of"),
    (["iterations"], {}, "must look like section.key=value"),
    ([], {"ITERATIONS": "many"}, "environment variable ITERATIONS: train.iterations='many' is not a valid int"),
    (["model.model_dim=100", "model.num_heads=8"], {}, "model.model_dim=100 must be divisible by model.num_heads=8"),
    (["model.num_heads=6", "model.num_kv_heads=4", "model.model_dim=384"], {}, "must be divisible by model.num_kv_heads"),
    (["train.batch_tokens=1000"], {}, "must be a multiple of train.seq_len"),
    (["train.iterations=-1"], {}, "train.iterations must not be negative"),
    (["eval.stride=4096"], {}, "eval.stride=4096 must not exceed"),
    (["optim.matrix_lr=nan"], {}, "optim.matrix_lr must be a finite number, got nan"),
    (["optim.scalar_lr=-0.1"], {}, "optim.scalar_lr must not be negative, got -0.1"),
    (["model.logit_softcap=nan"], {}, "model.logit_softcap must be a finite number"),
    (["model.logit_softcap=-30"], {}, "model.logit_softcap must be positive, got -30.0"),
    (["optim.grad_clip_norm=inf"], {}, "optim.grad_clip_norm must be a finite number, got inf"),
    (["optim.grad_clip_norm=-1"], {}, "optim.grad_clip_norm must not be negative"),
    ([], {"MAX_WALLCLOCK_SECONDS": "nan"}, "train.max_wallclock_seconds must be a finite number"),
    (["MAX_WALLCLOCK_SECONDS=-5"], {}, "train.max_wallclock_seconds must not be negative"),
    (["optim.beta2=1.0"], {}, "optim.beta2 must be in \\[0, 1\\)"),
    (["train.qat_threshold=2"], {}, "train.qat_threshold must be in \\[0, 1\\]"),
    (["train.qat_threshold=0.15"], {}, "trains against int6 codes, but export.matrix_bits=8"),
    (["model.attention.rope_base=0"], {}, "model.attention.rope_base must be positive"),
    (["model.attention.rope_dims=15"], {}, "model.attention.rope_dims=15 must be even"),
    (["model.attention.rope_dims=64"], {}, "at most the head dim 32"),
    (["model.stack.attn_layers=1"], {}, "model.stack.attn_layers only applies to model.arch=gdn"),
    (["model.stack.attn_layers=3-1"], {}, "model.stack.attn_layers=.3-1. is not a layer set \\(range .3-1. runs backwards"),
    (["model.stack.attn_layers=x"], {}, "is not a layer set"),
    (["model.doc_isolation=true", "model.attention.backend=sdpa"], {}, "backend=sdpa cannot keep documents apart"),
    (["model.attention.backend=flex"], {}, "backend=flex is a document-aware backend"),
])
def test_bad_settings_are_clear_errors(overrides, env, message):
    with pytest.raises(PgolfError, match=message):
        load_config("smoke", overrides, env=env)


def test_bad_presets(tmp_path):
    with pytest.raises(PgolfError, match="no such preset or file \\(presets: baseline, frontier, gdn, record_1855, smoke"):
        load_config("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\niterations = 'ten'\n")
    with pytest.raises(PgolfError, match=f"{bad}: train.iterations must be int, got str"):
        load_config(bad, env={})
    bad.write_text("[train]\nitterations = 10\n")
    with pytest.raises(PgolfError, match="unknown setting 'train.itterations'"):
        load_config(bad, env={})
    bad.write_text("[nosuch]\nx = 1\n")
    with pytest.raises(PgolfError, match="unknown setting 'nosuch.x'"):
        load_config(bad, env={})
    bad.write_text("[train\n")
    with pytest.raises(PgolfError, match="invalid TOML"):
        load_config(bad, env={})


def test_roundtrip_through_a_dict():
    cfg = load_config("baseline", ["train.iterations=9"], env={})
    assert from_dict(cfg.to_dict(), "test") == cfg
    gdn = load_config("gdn", ["model.stack.attn_layers=0,3-5"], env={})
    plain = gdn.to_dict()
    assert type(plain["model"]["stack"]["attn_layers"]) is str  # checkpoints stay weights_only-loadable
    assert from_dict(plain, "test") == gdn
    assert Config() == load_config(None, env={})


def test_every_float_setting_refuses_nan_and_inf():
    from pgolf.config import get

    floats = [key for key in FIELDS if isinstance(get(Config(), key), float)]
    assert len(floats) > 20
    for key in floats:
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(PgolfError, match=f"{key} must be a finite number"):
                load_config("smoke", [f"{key}={bad}"], env={})


def test_layer_sets():
    from pgolf.config import LayerSet

    assert LayerSet("all").indices(4) == {0, 1, 2, 3} and LayerSet("").indices(4) == frozenset()
    assert LayerSet(" 0, 3-5 ,8").indices(11) == {0, 3, 4, 5, 8} and LayerSet(" 0, 3-5 ,8") == "0,3-5,8"
    for bad in ("-1", "a", "1-", "5-3", "1,,2"):
        with pytest.raises(ValueError):
            LayerSet(bad)
    cfg = load_config("gdn", ["model.num_layers=6", "ATTN_LAYERS=all"], env={})
    assert cfg.model.stack.attn_layers == "all"


def test_presets_extend_the_baseline_and_resolve_as_before():
    """Presets list only their differences; resolved, they equal the flat presets they replaced
    (tests/golden/presets_before_extends.json), except the gdn fixes of issue 12 (bugs 3 and 8)
    and the settings that did not exist then."""
    import json
    from pathlib import Path

    from pgolf.config import MOVED, PRESET_DIR, get

    before = json.loads((Path(__file__).parent / "golden" / "presets_before_extends.json").read_text())
    new_keys = {"model.attention.rope_dims", "model.attention.backend"}
    fixes = {"gdn": {"export.code_bytes": ("raw", "wrapped"), "train.warmdown": ("auto", "step")}}
    old_name = {new: old for old, new in MOVED.items()}
    for preset, old in before.items():
        cfg = load_config(preset, env={})
        now = {old_name.get(k, k): get(cfg, k) for k in FIELDS if k not in new_keys}
        changed = {k: (old[k], now[k]) for k in old if old[k] != now[k]}
        assert changed == fixes.get(preset, {}), preset
    for preset in ("smoke", "gdn"):
        assert (PRESET_DIR / f"{preset}.toml").read_text().count('extends = "baseline"') == 1


def test_extends_chains_and_refuses_loops(tmp_path):
    child = tmp_path / "child.toml"
    child.write_text('extends = "smoke"\n[model.attention]\nrope_dims = 16\n[model]\nunet_skips = false\n')
    cfg = load_config(child, env={})
    assert cfg.model.num_layers == 4 and cfg.model.attention.rope_dims == 16 and not cfg.model.stack.unet_skips
    grandchild = tmp_path / "g.toml"
    grandchild.write_text('extends = "child.toml"\n[train]\niterations = 3\n')  # relative to the file
    cfg = load_config(grandchild, env={})
    assert (cfg.train.iterations, cfg.model.attention.rope_dims, cfg.model.model_dim) == (3, 16, 128)
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('extends = "b.toml"\n')
    b.write_text('extends = "a.toml"\n')
    with pytest.raises(PgolfError, match="extends` loops back"):
        load_config(a, env={})
    a.write_text("extends = 3\n")
    with pytest.raises(PgolfError, match="extends must be a preset name"):
        load_config(a, env={})


def test_gdn_warmdown_counts_steps_like_the_record():
    """Issue 12 bug 3: the record's warmdown is the last 2100 of 7000 steps, so at its speed
    (1,583-1,890 steps in the budget) the LR never leaves 1.0 and late QAT never fires."""
    from pgolf.optim.schedule import LRSchedule

    cfg = load_config("gdn", env={})
    schedule = LRSchedule.from_config(cfg.train)
    assert not schedule.time_based
    for step, elapsed_s in ((100, 30.0), (1000, 300.0), (1890, 590.0)):
        assert schedule.lr_mul(step, 1000 * elapsed_s) == 1.0
    assert schedule.lr_mul(6999, 0.0) < cfg.train.qat_threshold
    assert cfg.export.code_bytes == "wrapped"  # issue 12 bug 8
