"""Parameter roles: what each parameter is, declared once by the module that owns it.

A module declares the role of each parameter it creates, at construction:
`CastedLinear(d, d, role=matrix("attn.c_q", clip="attn"))` for a linear layer,
`declare(self, q_gain=CONTROL)` for a parameter it registers itself. `param_roles(model)`
collects them by parameter name and raises if a parameter has no role or two.

Every consumer reads the role and nothing else (no parameter-name patterns anywhere):
- optimizer group (`optimizer`): Muon for matrices, Adam for the rest in three groups
- quantization (`quant`, `bits`, `clip_class`): coded at matrix or embed bits with the
  clip-sigma class's SDClip k (spec §5.11); gates int8 with row-max scales (the record's quant
  gate; a float gate such as the SmearGate's stays fp16); controls fp32 or fp16 as the export
  says; conv taps and norm weights fp16
- export layout (`group`, `hot`): coded tensors of one group share a compressed stream (spec §5.12)
- late QAT (`qat`), Hessian collection (`hessian`), fp32 keeping on the GPU (`keep_fp32`)

The declarations live in each module's `__dict__` keyed by the parameter's attribute name,
not on the tensors, so they survive .to(), dtype casts, deepcopy, state_dict loads (even
`assign=True`), and wrapping (DDP, torch.compile: names gain the wrapper's prefix on both sides).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pgolf.errors import PgolfError

KINDS = ("matrix", "embedding", "head", "ngram_table", "control", "gate", "conv", "norm")
CODED_KINDS = ("matrix", "embedding", "head", "ngram_table")  # integer codes at matrix_bits / embed_bits
MATRIX_CLIPS = ("attn", "mlp", "other")  # SDClip classes a matrix may declare (embeddings are "embed")
_ATTR = "_param_roles"


class RoleError(PgolfError):
    pass


@dataclass(frozen=True)
class Role:
    """kind: matrix (a linear layer's weight), embedding (the token table; `tied`: also the head),
    head (an untied output head), ngram_table (a hashed n-gram lookup table), control (scales,
    mixes, gains, decay parameters), gate (a small gate matrix), conv (conv taps), norm (a norm weight).
    group / hot: the export layout group of a coded tensor, and whether that group's rows are reordered.
    clip: a matrix's SDClip class (attn, mlp, other).
    rowmax: a gate's artifact form: int8 rows with row-max scales, or (False) an fp16 float as the
    records keep the SmearGate's gate."""
    kind: str
    group: str | None = None
    hot: bool = False
    clip: str | None = None
    tied: bool = False
    rowmax: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RoleError(f"unknown parameter role kind {self.kind!r} (one of {', '.join(KINDS)})")
        coded = self.kind in CODED_KINDS
        if coded != bool(self.group) or (self.hot and not coded):
            raise RoleError(f"role {self.kind}: coded kinds ({', '.join(CODED_KINDS)}) and only they "
                            f"name a layout group, got group={self.group!r}, hot={self.hot}")
        if (self.kind == "matrix") != (self.clip is not None) or (self.clip and self.clip not in MATRIX_CLIPS):
            raise RoleError(f"role {self.kind}: a matrix and only a matrix declares a clip class "
                            f"({', '.join(MATRIX_CLIPS)}), got {self.clip!r}")
        if self.tied and self.kind != "embedding":
            raise RoleError(f"role {self.kind}: only an embedding can be tied to the head")
        if not self.rowmax and self.kind != "gate":
            raise RoleError(f"role {self.kind}: only a gate chooses its artifact form (rowmax)")

    @property
    def optimizer(self) -> str:
        """muon, embed (Adam at the embedding lr), head (Adam at the head lr) or scalar (Adam)."""
        return {"matrix": "muon", "embedding": "embed", "ngram_table": "embed", "head": "head"}.get(self.kind, "scalar")

    @property
    def quant(self) -> str:
        """coded (per-row codes; the recipe keeps small ones fp16), int8_rowmax (when export.quant_gate),
        control (fp32 or fp16: export.control_dtype) or fp16."""
        if self.kind in CODED_KINDS:
            return "coded"
        if self.kind == "gate":
            return "int8_rowmax" if self.rowmax else "fp16"
        return "control" if self.kind == "control" else "fp16"

    @property
    def bits(self) -> str | None:
        """Which configured code width applies: "embed" (embed_bits) or "matrix" (matrix_bits)."""
        if self.kind not in CODED_KINDS:
            return None
        return "embed" if self.kind in ("embedding", "head") else "matrix"

    @property
    def clip_class(self) -> str | None:
        """SDClip class: attn, mlp, embed or other (export.{attn,mlp,embed,matrix}_clip_sigmas)."""
        if self.kind == "matrix":
            return self.clip
        return {"embedding": "embed", "head": "embed", "ngram_table": "other"}.get(self.kind)

    @property
    def qat(self) -> bool:
        """Late QAT may fake-quantize it (a linear layer's weight the export codes)."""
        return self.kind == "matrix"

    @property
    def hessian(self) -> str | None:
        """Whose inputs make GPTQ's Hessian: "input" (the owning linear layer's), "head" (the
        model's head input: the head, or the embedding tied to it), or None (none: lookups)."""
        if self.kind == "matrix":
            return "input"
        return "head" if self.kind == "head" or self.tied else None

    @property
    def keep_fp32(self) -> bool:
        """Stays fp32 in the bf16 body (spec §4.1): all but the embedding tables, whose rows
        are read, not multiplied with a cast, and which the baseline keeps bf16."""
        return self.kind not in ("embedding", "ngram_table")


def matrix(group: str, clip: str, hot: bool = False) -> Role:
    return Role("matrix", group=group, hot=hot, clip=clip)


CONTROL = Role("control")
GATE = Role("gate")
FLOAT_GATE = Role("gate", rowmax=False)  # a gate the records store as an fp16 float (the SmearGate's)
CONV = Role("conv")
NORM = Role("norm")


def declare(module: nn.Module, **roles: Role) -> None:
    """Declare the roles of `module`'s own parameters, by attribute name."""
    table = module.__dict__.setdefault(_ATTR, {})
    for name, role in roles.items():
        if name not in module._parameters:
            raise RoleError(f"{type(module).__name__} has no parameter {name!r} to declare a role for")
        if not isinstance(role, Role):
            raise RoleError(f"{type(module).__name__}.{name}: a role must be a Role, got {role!r}")
        if table.get(name, role) != role:
            raise RoleError(f"{type(module).__name__}.{name} declared twice: {table[name]} and {role}")
        table[name] = role


def declared_role(module: nn.Module, name: str) -> Role | None:
    """The role `module` declared for its own parameter `name`, or None."""
    return module.__dict__.get(_ATTR, {}).get(name)


def param_roles(model: nn.Module) -> dict[str, Role]:
    """Every parameter's role, keyed as model.named_parameters() names them.

    Raises RoleError naming a parameter that has no role, or that is registered in two places
    with different roles (a shared parameter must mean one thing)."""
    out: dict[str, Role] = {}
    seen: dict[int, tuple[str, Role]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        path, _, attr = name.rpartition(".")
        owner = model.get_submodule(path)
        role = declared_role(owner, attr)
        if role is None:
            raise RoleError(f"parameter {name} ({type(owner).__name__}.{attr}) has no declared role")
        if id(p) in seen:
            first, first_role = seen[id(p)]
            if first_role != role:
                raise RoleError(f"parameter {name} is {first} too, with two roles: {first_role} and {role}")
            continue
        seen[id(p)] = (name, role)
        out[name] = role
    return out


def roles_by_module(model: nn.Module) -> list[tuple[str, nn.Module, str, Role]]:
    """(module name, module, parameter attribute, role) for each parameter, once each, in
    named_parameters order: for consumers that act on the owning module (hooks, QAT)."""
    roles = param_roles(model)
    modules = dict(model.named_modules())
    out = []
    for name, role in roles.items():
        path, _, attr = name.rpartition(".")
        out.append((path, modules[path], attr, role))
    return out
