"""How a run's loop ends it: an exception raised from wherever the reason is found, caught once
by the loop, which finishes the run in that state."""

from __future__ import annotations

from contracts.models import RunState


class RunEnded(Exception):
    """Raised inside the loop to end the run in a final state with a reason."""

    def __init__(self, state: RunState, reason: str, answer: str | None = None) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason
        self.answer = answer
