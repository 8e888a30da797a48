"""Integrity tools: the compliance harness (`pgolf check`) over eval modes and score ledgers."""
