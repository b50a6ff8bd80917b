"""Defaults the Guard needs without loading the tool loop."""

DEFAULT_MAX_STEPS = 10
"""How many model calls ``run_tools`` makes at most, unless told otherwise."""
