"""Workflow tests: real runs on the session's Temporal dev server (or the time-skipping test server), a real worker and database."""
