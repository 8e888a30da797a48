"""pgolf's torch.library ops (namespace `pgolf::`), each with an eager reference, a fake
implementation, autograd, and a Triton kernel used where Triton can run."""
from pgolf.ops.leaky_relu2_mlp import leaky_relu_squared_mlp, reference_leaky_relu2_mlp
from pgolf.ops.softcapped_ce import (linear_softcapped_cross_entropy, reference_softcapped_ce,
                                     softcapped_cross_entropy)

__all__ = ["softcapped_cross_entropy", "linear_softcapped_cross_entropy", "reference_softcapped_ce",
           "leaky_relu_squared_mlp", "reference_leaky_relu2_mlp"]
