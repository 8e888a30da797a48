"""Optimizers: Muon (with its Newton-Schulz reference), Adam groups and schedules."""
