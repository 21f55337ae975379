"""Workflow code: deterministic, replayed from history, run inside the workflow sandbox. It imports
only `contracts`, `policy` and its own modules (`scripts/check_layers.py`)."""
