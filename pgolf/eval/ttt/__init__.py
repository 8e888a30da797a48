"""Score-first test-time training (challenge-spec §5.14, frontier-spec F3/F4).

- documents: the val stream split at BOS, the length-sorted batch queue, #2014's chunk schedule, the
  ledger view that treats document BOS positions as public
- chunks: the windows of one score-then-update step
- claims: ranks claim batches from a shared counter in the process group's store
- engine: per-document batched LoRA TTT, score then update, with global SGD phases (global_sgd)
- sliding: the sliding-window score-first SGD TTT (eval.mode=sliding_ttt)
"""
