"""Models. `GPT` is the challenge baseline and its variants (GatedDeltaNet, hybrids); its pieces
(attention, GatedDeltaNet, MLP, block, embeddings) are separate modules so that variants reuse them."""
from pgolf.model.gpt import GPT, prepare_for_device, roles_for_config, tokenizer_mismatch
from pgolf.model.roles import Role, param_roles

__all__ = ["GPT", "Role", "param_roles", "prepare_for_device", "roles_for_config", "tokenizer_mismatch"]
