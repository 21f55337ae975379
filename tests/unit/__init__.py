"""Unit tests: pure code (policy, budgets, tools on a database, contracts), no Temporal server."""
