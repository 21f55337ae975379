"""Fault suites: killed workers, flaky tools, crashes at every window of a write."""
