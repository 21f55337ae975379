"""The capability policy: a file a reviewer reads, and pure functions that decide with it."""

from contracts.policy import Policy
from policy.engine import CallContext, decide, effective_mode, may_start, vote_refusal
from policy.loader import PolicyError, load_policy, parse_policy

__all__ = [
    "CallContext",
    "Policy",
    "PolicyError",
    "decide",
    "effective_mode",
    "load_policy",
    "may_start",
    "parse_policy",
    "vote_refusal",
]
