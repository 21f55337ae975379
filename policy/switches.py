"""What the workspace's switches forbid, decided once: the policy engine (a call decided while
safe mode is on), the run (a call about to start) and the worker's last gate (the control store
read as the call starts) all ask here."""

from __future__ import annotations

from typing import Literal

from contracts.models import Effect


def safe_mode_forbids(effect: Effect) -> bool:
    """Safe mode is read-only: it forbids every call that is not a read (writes and external calls)."""
    return effect is not Effect.READ


def held_by(*, paused: bool, safe_mode: bool, effect: Effect) -> Literal["kill_switch", "safe_mode"] | None:
    """Which switch holds a call of this effect from starting, or None: the kill switch holds
    every call, safe mode those it forbids."""
    if paused:
        return "kill_switch"
    if safe_mode and safe_mode_forbids(effect):
        return "safe_mode"
    return None
