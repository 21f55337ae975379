"""Fault suites: `make chaos` runs them in full; tests/test_chaos.py runs a short version."""
