"""The global SGD step of the TTT phases, bound to its settings (pgolf.eval.ttt.global_sgd does the work)."""
from __future__ import annotations

from pgolf.config import TTTConfig


def global_step_for(ttt: TTTConfig):
    """(model, tokens, docs, ledger, env) -> steps, from eval.ttt's global_* settings; None without phases."""
    if ttt.phases == 0:
        return None
    from pgolf.eval.ttt.global_sgd import GlobalSGDSettings, global_sgd  # only when phases run

    settings = GlobalSGDSettings.from_config(ttt)
    return lambda model, tokens, docs, ledger, env: global_sgd(model, tokens, docs, settings, ledger, env)
