"""Airlock: governed AI agent runs on Temporal."""
