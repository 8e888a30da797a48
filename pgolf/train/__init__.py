"""Training: `torchrun --nproc_per_node=N -m pgolf.train [--config PRESET] [KEY=VALUE ...]`."""
