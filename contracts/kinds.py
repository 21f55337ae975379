"""The kinds every other contract speaks of: autonomy modes, tool effects, risk tiers, outcomes.

Kept apart so that the policy's models and the run's models can both use them without importing
each other (`contracts.models` re-exports them, where they have always been imported from).
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """How much the agent may do on its own, least to most."""

    SUGGEST = "suggest"
    APPROVE = "approve"
    AUTO = "auto"

    @property
    def rank(self) -> int:
        # A lookup, not `list(Mode).index(self)`: every decision reads it, twice.
        return _MODE_RANK[self]


_MODE_RANK = {mode: i for i, mode in enumerate(Mode)}


class Effect(StrEnum):
    READ = "read"
    WRITE = "write"
    EXTERNAL = "external"


class Tier(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Outcome(StrEnum):
    ALLOW = "allow"
    APPROVE = "needs_approval"
    DENY = "deny"
