"""Score-first test-time training: the per-document LoRA engine, global SGD phases, sliding-window SGD."""
