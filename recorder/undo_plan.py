"""`undo.plan`: reads a finished run's history and lists what to undo, newest first.

The plan comes from the history alone (replayed through the flight recorder), so it is right
even when the worker that ran the original is long gone.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client

from contracts.undo_io import NotUndone, UndoPlan, UndoStep
from recorder.flight_recorder import ReplayFailed, fetch_history, reconstruct


class UndoActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="undo.plan")
    async def plan(self, run_id: str) -> UndoPlan:
        try:
            rec = await reconstruct(await fetch_history(self._client, run_id))
        except ReplayFailed as e:
            return UndoPlan(run_id=run_id, workspace="", requested_by="", error=f"cannot read run {run_id}: {e}")
        m = rec.memory
        plan = UndoPlan(run_id=run_id, workspace=m.input.workspace, requested_by=m.input.requested_by)
        if not rec.closed:
            plan.error = f"run {run_id} is still {rec.state.value}; stop it (workflow cancel) before undoing it"
            return plan
        for call in reversed(m.executed_writes()):
            comp = call.compensation
            if comp is None or comp.tool is None:
                plan.not_undoable.append(
                    NotUndone(
                        step=call.step,
                        index=call.index,
                        tool=call.tool,
                        reason=comp.note if comp else "no compensation recorded",
                    )
                )
            else:
                plan.steps.append(
                    UndoStep(
                        step=call.step,
                        index=call.index,
                        tool=call.tool,
                        idempotency_key=call.idempotency_key,
                        compensation=comp,
                    )
                )
        return plan
