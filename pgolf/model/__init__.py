"""Models. `GPT` is the challenge baseline and its variants (GatedDeltaNet, hybrids); its pieces
(attention, GatedDeltaNet, MLP, block, embeddings) are separate modules so that variants reuse them."""
from pgolf.model.gpt import CONTROL_PARAM_PATTERNS, GPT, is_control, prepare_for_device, tokenizer_mismatch

__all__ = ["GPT", "CONTROL_PARAM_PATTERNS", "is_control", "prepare_for_device", "tokenizer_mismatch"]
