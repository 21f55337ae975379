"""Replay tests: today's workflow code replays the histories committed under tests/histories/."""
