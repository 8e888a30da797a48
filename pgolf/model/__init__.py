"""Models. `GPT` is the challenge baseline; its pieces (attention, MLP, block) are separate
modules so that variants reuse them."""
from pgolf.model.gpt import CONTROL_PARAM_PATTERNS, GPT, is_control, prepare_for_device

__all__ = ["GPT", "CONTROL_PARAM_PATTERNS", "is_control", "prepare_for_device"]
