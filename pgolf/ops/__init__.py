"""pgolf's torch.library ops (namespace `pgolf::`), each with an eager reference, a fake
implementation, autograd, and a Triton kernel used where Triton can run. Import them from their
modules: the package imports none of them, so a run loads (and a packed script ships) only the
ops its options use (pgolf.export.trace)."""
