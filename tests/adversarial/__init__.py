"""Adversarial suites: a compromised model, a namespace insider, malformed input of every kind."""
