"""`limits.reserve` and `limits.settle`: a run's windowed limits, held and settled in the control
store (activities/limit_ledger.py). Local activities of the run: one marker event each. Both are
idempotent under the call's key, so a retry or a replayed workflow task counts nothing twice."""

from __future__ import annotations

from temporalio import activity

from activities.limit_ledger import LimitLedger
from contracts import names
from contracts.policy_limits import LimitsHeld, ReserveLimits, SettleLimits


class LimitActivities:
    def __init__(self, ledger: LimitLedger) -> None:
        self._ledger = ledger

    @activity.defn(name=names.LIMITS_RESERVE)
    def reserve(self, request: ReserveLimits) -> LimitsHeld:
        """Holds the call's charges, all or none; raises while the store cannot be written, and
        the run's retries (then the call's failure) follow: no call passes a limit unchecked."""
        return self._ledger.reserve(request)

    @activity.defn(name=names.LIMITS_SETTLE)
    def settle(self, request: SettleLimits) -> int:
        return self._ledger.settle(request)
