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
        return list(Mode).index(self)


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
