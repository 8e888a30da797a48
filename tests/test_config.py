import pytest

from pgolf.config import ENV_NAMES, FIELDS, Config, from_dict, load_config
from pgolf.errors import PgolfError


def test_baseline_preset_is_the_naive_baseline():
    cfg = load_config("baseline", env={})
    m, o, t = cfg.model, cfg.optim, cfg.train
    assert (m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.mlp_mult) == (1024, 9, 512, 8, 4, 2)
    assert (m.tie_embeddings, m.tied_embed_init_std, m.logit_softcap, m.qk_gain_init, m.rope_base) == (True, 0.005, 30.0, 1.5, 10000.0)
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
])
def test_bad_settings_are_clear_errors(overrides, env, message):
    with pytest.raises(PgolfError, match=message):
        load_config("smoke", overrides, env=env)


def test_bad_presets(tmp_path):
    with pytest.raises(PgolfError, match="no such preset or file \\(presets: baseline, gdn, smoke"):
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
    assert Config() == load_config(None, env={})
