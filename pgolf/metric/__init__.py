"""Canonical bits-per-byte: byte accounting and the one accumulator every eval mode uses."""
from pgolf.metric.bpb import BPBAccumulator, BPBResult
from pgolf.metric.bytes import ByteLUT, position_bytes_for
from pgolf.metric.valset import ValSet, load_val_set

__all__ = ["BPBAccumulator", "BPBResult", "ByteLUT", "position_bytes_for", "ValSet", "load_val_set"]
