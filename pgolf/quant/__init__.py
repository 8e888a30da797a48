"""Post-training quantization: round-to-nearest and GPTQ with SDClip scales, LQER low-rank
corrections, bit packing, and the per-tensor recipe that chooses among them."""
