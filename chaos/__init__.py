"""Fault suites: `make chaos` runs them in full; tests/faults/test_chaos.py runs a short version."""
