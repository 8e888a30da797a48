"""pgolf's Triton kernels, installed as `pgolf_kernels`.

Each kernel lives in its own module here; its torch.library op, eager reference and fake
implementation are registered in `pgolf`, which imports a kernel only where Triton can
run it (a GPU, or TRITON_INTERPRET=1 for tests).
"""
