"""The layer plan: the ordered slots `GPT.forward` walks, as a pure function of the config.

A slot says which physical block runs (its weights), at which virtual position, and how the
residual stream around it is wired: whether a U-Net skip is popped (and with which skip
weight) before it and pushed after it, how many residual lanes exist there, and the scale
of the block's normed inputs. The forward pass only walks slots; a new wiring is a new plan.

    baseline (9 layers, U-Net):  0 1 2 3 | 4 5 6 7 8    (4 pushes, then 4 pops with weights 0..3)
    recurrence (issue 14, 11 layers, layers 3-5 three times, 17 slots):
        order 0 1 2 3 4 5 3 4 5 3 4 5 6 7 8 9 10, encoder = the first 8 slots, decoder = 9
    parallel lanes: slots from some layer on carry lanes=2 (the walk forks the stream there
        and averages the lanes at the end); the blocks there are built with the two-lane wiring

`plan_from_order` is the one constructor: every plan, today's and those to come, is an order
of physical layers plus these per-slot decisions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from pgolf.config import ModelConfig


@dataclass(frozen=True)
class Slot:
    layer: int  # the physical block whose weights run here
    index: int  # the virtual position in the walk (a recurrent layer has several)
    skip_pop: int | None = None  # before the block: x += skip_weights[skip_pop] * (last pushed skip)
    skip_push: bool = False  # after the block: push x for a decoder slot
    lanes: int = 1  # residual lanes from this slot on (1: one stream; 2: parallel lanes, issue 14)
    norm_scale: float = 1.0  # multiplies the block's normed inputs (the records' LN scale 1/sqrt(l+1))


@dataclass(frozen=True)
class LayerPlan:
    slots: tuple[Slot, ...]
    num_layers: int  # physical blocks
    num_skip_weights: int  # rows of GPT.skip_weights

    @property
    def num_encoder(self) -> int:
        """Slots up to and including the last push (0 without skips)."""
        return max((s.index + 1 for s in self.slots if s.skip_push), default=0)

    def check(self) -> "LayerPlan":
        """Structural invariants: every pop has a push before it, weights exist, lanes never shrink."""
        depth, lanes = 0, 1
        for i, s in enumerate(self.slots):
            assert s.index == i and 0 <= s.layer < self.num_layers, s
            assert s.lanes >= lanes, f"slot {i}: lanes shrink from {lanes} to {s.lanes}"
            lanes = s.lanes
            if s.skip_pop is not None:
                assert depth > 0 and 0 <= s.skip_pop < self.num_skip_weights, f"slot {i} pops nothing"
                depth -= 1
            depth += s.skip_push
        return self


def plan_from_order(order: Sequence[int], num_layers: int, unet_skips: bool, num_skip_weights: int | None = None,
                    lanes_from: int | None = None,
                    norm_scale: Callable[[int], float] = lambda layer: 1.0) -> LayerPlan:
    """Slots for a walk over `order` (physical layers, repeats allowed).

    With U-Net skips the walk splits in half (encoder = len // 2 slots): every encoder slot
    pushes; decoder slot j pops with skip weight j while j < num_skip_weights (default: as
    many as there are pushes and decoder slots). Slots from virtual position `lanes_from` on
    run on two lanes.
    """
    n = len(order)
    encoder = n // 2 if unet_skips else n
    decoder = n - encoder
    pairs = min(encoder, decoder)
    weights = pairs if num_skip_weights is None else num_skip_weights
    slots = []
    for i, layer in enumerate(order):
        j = i - encoder
        slots.append(Slot(layer=layer, index=i,
                          skip_pop=j if 0 <= j < min(pairs, weights) else None,
                          skip_push=i < encoder and decoder > 0,
                          lanes=2 if lanes_from is not None and i >= lanes_from else 1,
                          norm_scale=norm_scale(layer)))
    return LayerPlan(tuple(slots), num_layers, weights).check()


def ln_scale(layer: int) -> float:
    """The records' LN scale (spec §5.3): 1/sqrt(l+1), l the *physical* layer (PR #315)."""
    return 1.0 / math.sqrt(layer + 1)


def build_plan(cfg: ModelConfig, recurrence: bool = False) -> LayerPlan:
    """The plan of `cfg`'s stack: each physical layer once, in order (or, with `recurrence` and
    model.stack.loop_layers set, the looped order), with the baseline's U-Net skips or none,
    the LN scale of model.stack.ln_scale, and two lanes from model.stack.parallel_start on.

    Both plans of a looped model keep the looped plan's number of skip weights (spec §5.5:
    fixed at construction), so switching recurrence changes no parameter's shape."""
    st, n = cfg.stack, cfg.num_layers
    loop = sorted(st.loop_layers.indices(n))
    looped = looped_order(n, range(loop[0], loop[-1] + 1), st.loop_count - 1) if loop else list(range(n))
    order = looped if recurrence else list(range(n))
    weights = None
    if loop and st.unet_skips:
        weights = min(len(looped) // 2, len(looped) - len(looped) // 2)
    return plan_from_order(order, n, st.unet_skips, weights, lanes_from=parallel_from(order, st.parallel_start),
                           norm_scale=ln_scale if st.ln_scale else (lambda layer: 1.0))


def parallel_from(order: Sequence[int], start: int) -> int | None:
    """The first virtual position whose layer is >= start (-1: None); those layers must be the order's tail."""
    if start < 0:
        return None
    tail = [i for i, layer in enumerate(order) if layer >= start]
    assert tail == list(range(len(order) - len(tail), len(order))), \
        f"the layers from {start} on are not the tail of the order {order}"
    return tail[0] if tail else None


def looped_order(num_layers: int, loop: range, loops: int) -> list[int]:
    """Physical layers with `loop` run `loops` extra times right after itself (spec §5.5:
    11 layers, loop range(3, 6), loops 2 -> 0 1 2 3 4 5 3 4 5 3 4 5 6 7 8 9 10)."""
    return [*range(loop.stop), *list(loop) * loops, *range(loop.stop, num_layers)]
