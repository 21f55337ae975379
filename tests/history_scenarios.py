"""Runs that exercise every branch of AgentRun, WorkspaceControl and UndoRun, for recording histories
that replay tests keep.

`python -m tests.history_scenarios [NAME ...]` records them (all, or the named ones) into
tests/histories/ on a throwaway dev server.
Re-record only for a deliberate, versioned change to the workflow: the committed histories are
what proves that today's code still replays yesterday's runs.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import TerminatedError

from contracts.signing import new_key, public_key_text, sign, vote_message
from contracts.workspace_io import ReserveResult, SwitchResult, control_workflow_id
from runtime.settings import Settings
from tests.conftest import READ, REFUND_120, Runs, call, policy_file, ready_view
from worker import build_worker, start_local_server

HISTORIES = Path(__file__).parent / "histories"
EMAIL = call("email.send", to="dana@example.com", subject="Refund", body="Your refund is on its way.")

Scenario = Callable[[Runs], Awaitable[WorkflowHandle[Any, Any]]]


async def approved(runs: Runs) -> WorkflowHandle[Any, Any]:
    handle = await runs.start(mode="approve", script=[READ, REFUND_120, {"answer": "refunded"}])
    approval = (await runs.pending(handle)).pending_approvals[0].approval_id
    await handle.signal("approve", {"approval_id": approval, "approver": "u_alice"})  # refused
    await handle.signal("approve", {"approval_id": approval, "approver": "u_bob", "comment": "ok"})
    return handle


async def denied(runs: Runs) -> WorkflowHandle[Any, Any]:
    bad_email = call("email.send", to="x@evil.test", subject="s", body="b")
    big_refund = call("payments.create_refund", order_id="ORD-1002", amount_usd=120, reason="late")
    script = [bad_email, big_refund, call("nope.tool"), call("kb.search", query=5)]
    handle = await runs.start(mode="auto", script=script)
    approval = (await runs.pending(handle)).pending_approvals[0].approval_id
    await handle.execute_update("decide", {"approval_id": approval, "approver": "u_carol", "decision": "deny"})
    return handle


async def budget_exhausted(runs: Runs) -> WorkflowHandle[Any, Any]:
    return await runs.start(budget={"max_steps": 2}, script=[READ, READ, READ])


async def stopped(runs: Runs) -> WorkflowHandle[Any, Any]:
    handle = await runs.start(mode="approve", script=[READ, EMAIL])
    await runs.pending(handle)
    await handle.signal("pause", {"by": "u_ops", "reason": "incident"})
    await handle.cancel()
    return handle


async def continued(runs: Runs) -> WorkflowHandle[Any, Any]:
    return await runs.start(
        steps_per_history=2, budget={"max_identical_calls": 10}, script=[READ, READ, READ, READ, READ]
    )


async def governed(runs: Runs) -> WorkflowHandle[Any, Any]:
    """The production controls: a concurrency cap (admission and sign-off), an approval that
    escalates, an unsigned vote refused and a signed one counted."""
    with tempfile.TemporaryDirectory() as tmp:
        key = new_key(Path(tmp), "u_bob")
        path = policy_file(
            Path(tmp) / "governed.yaml",
            workspaces={
                "governed": {"max_autonomy": "auto", "signed_approvals": True, "limits": {"max_concurrent_runs": 5}}
            },
            people={"u_bob": {"keys": [public_key_text(key)]}},
            tiers={"high": {"escalate_after_s": 1, "escalate_to": "admin"}},
        )
        settings = runs.settings.model_copy(
            update={
                "policy_path": path,
                "control_task_queue": None,
                "task_queue": runs.settings.task_queue + "-governed",
            }
        )
        async with build_worker(runs.client, settings):
            own = Runs(runs.client, settings)
            handle = await own.start(workspace="governed", mode="approve", script=[READ, REFUND_120])
            status = await own.pending(handle)
            pending = status.pending_approvals[0]
            await handle.signal("approve", {"approval_id": pending.approval_id, "approver": "u_bob"})  # unsigned
            await own.wait_for(
                handle, lambda s: bool(s.pending_approvals) and s.pending_approvals[0].escalated_to == "admin"
            )
            message = vote_message(
                workflow_id=handle.id,
                run_id=status.chain_run_id or "",
                approval_id=pending.approval_id,
                decision="approve",
                call_hash=pending.call_hash or "",
            )
            await handle.signal(
                "approve",
                {"approval_id": pending.approval_id, "approver": "u_bob", "signature": sign(key, message)},
            )
            await handle.result()
    return handle


async def workspace_control(runs: Runs) -> WorkflowHandle[Any, Any]:
    """The control workflow of a workspace of its own: registrations (single, capped, batch), an
    acknowledgement, switches on and off (one refused), a reservation granted and settled and one
    refused, a run leaving, then a continue-as-new, a switch in the continued run, and the end
    (terminated: a control workflow never ends by itself)."""
    workspace = f"history-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        path = policy_file(Path(tmp) / "control.yaml", workspaces={workspace: {"max_autonomy": "auto"}})
        settings = runs.settings.model_copy(
            update={
                "policy_path": path,
                "control_db": f"{tmp}/control.db",
                "control_task_queue": None,
                "control_events_per_history": 40,
                "task_queue": runs.settings.task_queue + "-control",
            }
        )
        async with build_worker(runs.client, settings):
            handle = await runs.client.start_workflow(
                "WorkspaceControl", workspace, id=control_workflow_id(workspace), task_queue=settings.task_queue
            )
            await ready_view(handle)
            first_run = handle.result_run_id
            await handle.signal("register", {"workspace": workspace, "run_id": "run-a", "read_generation": 0})
            await handle.signal("register", {"workspace": workspace, "run_id": "run-b", "max_concurrent_runs": 5})
            await handle.signal("ack", {"run_id": "run-a", "generation": 0})
            await handle.signal(
                "register_batch",
                {"registrations": [{"workspace": workspace, "run_id": "run-c", "read_generation": 0}]},
            )
            await handle.execute_update(
                "switch", {"switch": "kill_switch", "on": True, "by": "u_carol", "reason": "incident"}
            )
            await handle.execute_update("switch", {"switch": "safe_mode", "on": True, "by": "u_dave"})  # refused
            await handle.execute_update("switch", {"switch": "kill_switch", "on": False, "by": "u_carol"})
            reserve = {"workspace": workspace, "agent": "support", "requested_by": "u_alice", "cap_usd": 1.0}
            for n, usd in ((1, 0.4), (2, 0.9)):  # the second is refused: 0.4 + 0.9 > 1.0
                await handle.execute_update(
                    "reserve",
                    {**reserve, "run_id": f"run-{n}", "reservation_id": f"r-{n}", "usd": usd},
                    result_type=ReserveResult,
                )
            await handle.signal("settle", {"reservation_id": "r-1", "usd": 0.3})
            await handle.signal("register", {"workspace": workspace, "run_id": "run-d", "read_generation": 0})
            await handle.signal("leave", {"run_id": "run-d"})
            for i in range(8):  # past 40 events: the control workflow continues as new
                body = {"switch": "safe_mode", "on": i % 2 == 0, "by": "u_carol", "reason": f"drill {i}"}
                await handle.execute_update("switch", body, result_type=SwitchResult)
                if (await handle.describe()).run_id != first_run:
                    break
            for _ in range(200):
                if (await handle.describe()).run_id != first_run:
                    break
                await asyncio.sleep(0.05)
            await handle.execute_update("switch", {"switch": "safe_mode", "on": False, "by": "u_carol"})
            await handle.query("state")
            await handle.terminate("history recorded")
    return handle


async def undo(runs: Runs) -> WorkflowHandle[Any, Any]:
    """A refund executed, then undone: the void goes through the policy and needs an approver."""
    refund = call("payments.create_refund", order_id="ORD-1001", amount_usd=40, reason="damaged")
    original = await runs.start(script=[refund])
    await original.result()
    handle = await runs.client.start_workflow(
        "UndoRun", {"run_id": original.id}, id=f"undo-{original.id}", task_queue=runs.settings.task_queue
    )
    child = runs.client.get_workflow_handle(f"undo-{original.id}.compensations")
    pending = await runs.pending(child)
    await child.signal("approve", {"approval_id": pending.pending_approvals[0].approval_id, "approver": "u_bob"})
    await handle.result()
    return handle


async def paused_awaiting(runs: Runs) -> WorkflowHandle[Any, Any]:
    """Paused while a call waits for votes (the run says `paused`), voted on while paused,
    resumed: the call runs."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    approval = (await runs.pending(handle)).pending_approvals[0].approval_id
    await handle.signal("pause", {"by": "u_carol", "reason": "checking"})
    await runs.wait_for(handle, lambda s: s.state.value == "paused")
    await handle.signal("resume", {"by": "u_carol", "reason": "checked"})
    await runs.wait_for(handle, lambda s: s.state.value == "awaiting_approval")
    await handle.signal("pause", {"by": "u_carol", "reason": "once more"})
    await runs.wait_for(handle, lambda s: s.state.value == "paused")
    await handle.signal("approve", {"approval_id": approval, "approver": "u_bob", "comment": "fine"})
    await handle.signal("resume", {"by": "u_bob", "reason": "go"})
    return handle


async def fresh_facts(runs: Runs) -> WorkflowHandle[Any, Any]:
    """Approved on facts that changed before the call ran: decided again, approved again, run."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    first = (await runs.pending(handle)).pending_approvals[0].approval_id
    small = call("payments.create_refund", order_id="ORD-1001", amount_usd=20, reason="goodwill")
    await (await runs.start(mode="auto", script=[small])).result()
    await handle.signal("approve", {"approval_id": first, "approver": "u_bob"})
    second = await runs.wait_for(handle, lambda s: any(p.approval_id != first for p in s.pending_approvals))
    await handle.signal("approve", {"approval_id": second.pending_approvals[0].approval_id, "approver": "u_carol"})
    return handle


async def windowed_limits(runs: Runs) -> WorkflowHandle[Any, Any]:
    """Windowed limits: two refunds held and committed under a 100 USD a day limit, a third past
    it sent for approval and held once approved, a fourth denied by a count limit."""
    suffix = uuid.uuid4().hex[:8]
    limits = [
        {
            "id": f"refunds.daily-{suffix}",
            "sum": "amount_usd",
            "unit": "USD",
            "window": "1d",
            "max": 100,
            "effect": "require_approval",
        },
        {
            "id": f"refunds.hourly-{suffix}",
            "count": True,
            "per": "workspace",
            "window": "1h",
            "max": 3,
            "effect": "deny",
        },
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = policy_file(Path(tmp) / "limits.yaml", tools={"payments.create_refund": {"limits": limits}})
        settings = runs.settings.model_copy(
            update={"policy_path": path, "task_queue": runs.settings.task_queue + "-limits"}
        )
        async with build_worker(runs.client, settings):
            own = Runs(runs.client, settings)
            refunds = [
                call("payments.create_refund", order_id="ORD-1001", amount_usd=amount, reason="goodwill")
                for amount in (40, 40, 30, 10)
            ]
            handle = await own.start(mode="auto", script=refunds)
            pending = (await own.pending(handle)).pending_approvals[0]
            await handle.signal("approve", {"approval_id": pending.approval_id, "approver": "u_bob"})
            await handle.result()
    return handle


SCENARIOS: dict[str, Scenario] = {
    "approved": approved,
    "denied": denied,
    "budget_exhausted": budget_exhausted,
    "stopped": stopped,
    "continued": continued,
    "governed": governed,
    "workspace_control": workspace_control,
    "undo": undo,
    "paused_awaiting": paused_awaiting,
    "fresh_facts": fresh_facts,
    "windowed_limits": windowed_limits,
}


async def histories_of(client: Client, handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Every run of the workflow's continue-as-new chain, oldest first, as history JSON. A control
    workflow's chain ends terminated: it never ends by itself."""
    try:
        await handle.result()
    except WorkflowFailureError as e:
        if not isinstance(e.cause, TerminatedError):
            raise
    texts: list[str] = []
    run_id = handle.first_execution_run_id or handle.result_run_id
    while run_id:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        texts.append(history.to_json())
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    return texts


async def record(into: Path = HISTORIES, names: list[str] | None = None) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    env = await start_local_server(log_level="warn")
    written: list[Path] = []
    try:
        for name, scenario in SCENARIOS.items():
            if names and name not in names:
                continue
            # A back office of its own: one scenario's refunds must not change what another's may do.
            with tempfile.TemporaryDirectory() as tmp:
                settings = Settings(db=f"{tmp}/backoffice.db", task_queue=f"airlock-histories-{name}")
                async with build_worker(env.client, settings):
                    handle = await scenario(Runs(env.client, settings))
                    for i, text in enumerate(await histories_of(env.client, handle)):
                        path = into / (f"{name}.json" if i == 0 else f"{name}.{i}.json")
                        path.write_text(text)
                        written.append(path)
    finally:
        await env.shutdown()
    return written


if __name__ == "__main__":
    import sys

    for path in asyncio.run(record(names=sys.argv[1:] or None)):
        print(path)
