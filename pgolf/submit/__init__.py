"""Integrity tools: the submission packer and records folder (`pgolf submit`)."""
