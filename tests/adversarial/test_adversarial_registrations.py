"""Registrations as a namespace insider sends them: runs of another workspace, and made-up run ids
by the thousand.

The control workflow carries the runs it tracks across continue-as-new, under Temporal's 2 MB
per payload: if anyone who can signal it could grow that without bound, its checkpoint would stop
fitting and the kill switch would stop with it. What it tracks stays bounded (RUNS_TRACKED runs,
RUN_ID_BYTES_TRACKED bytes of ids), made-up runs are forgotten once the server says they are
not running, and what finds no room is refused and shown in the `state` query.

The control workflow of the example policy's `sandbox` workspace is started afresh for each test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from contracts.models import RunState
from contracts.workspace_io import ReserveResult, SwitchResult, WorkspaceView
from runtime.converter import data_converter
from tests.adversarial_support import assert_not_stuck, chain_histories, control_state, fresh_control
from tests.conftest import Runs
from workflows.workspace_control import RESERVATION_BYTES_OPEN, RUN_ID_BYTES_TRACKED, RUNS_TRACKED, WorkspaceControl

WORKSPACE = "sandbox"


@pytest_asyncio.fixture(loop_scope="session")
async def control(env: WorkflowEnvironment, control_worker: Worker) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    handle = await fresh_control(env.client, WORKSPACE)
    yield handle
    # What the floods left registered is not for the next test that uses the workspace: a run
    # that starts there brings a new control workflow up, which reads the live runs afresh.
    await handle.terminate("test over")


view = control_state


async def state_when(
    control: WorkflowHandle[Any, Any], ok: Callable[[WorkspaceView], bool], timeout: float = 120.0
) -> WorkspaceView:
    """The state once `ok` holds of it, or as it is after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    for _ in range(100_000):
        state = await view(control)
        if ok(state) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    return state


async def refusals(control: WorkflowHandle[Any, Any], reason: str, at_least: int) -> WorkspaceView:
    """The state once `reason` counts `at_least` refusals."""
    state = await state_when(control, lambda v: v.refused_messages.by_reason.get(reason, 0) >= at_least)
    assert state.refused_messages.by_reason.get(reason, 0) >= at_least, state.refused_messages
    return state


async def assert_replays(client: Client, control: WorkflowHandle[Any, Any]) -> None:
    """Every history of the control workflow's chain replays with today's code: the bounds are
    behind patches, and what they decided is decided again."""
    replayer = Replayer(workflows=[WorkspaceControl], data_converter=data_converter)
    for history in await chain_histories(client, control.id, control.first_execution_run_id):
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, result.replay_failure


def batch(ids: list[str], workspace: str = WORKSPACE, generation: int = 0) -> dict[str, Any]:
    """Registrations of runs that read the switches of `generation` (one behind those in force
    is told of them at once, and forgotten when the signal finds no run)."""
    return {"registrations": [{"workspace": workspace, "run_id": i, "read_generation": generation} for i in ids]}


async def test_a_run_of_another_workspace_is_refused(control: WorkflowHandle[Any, Any]) -> None:
    """A registration naming another workspace is a mistake or a forgery: it is not tracked (it
    would be told of this workspace's switches), and the refusal names both workspaces."""
    before = await view(control)
    await control.signal("register", {"workspace": "acme", "run_id": "elsewhere-1", "read_generation": 0})
    await control.signal("register_batch", batch(["elsewhere-2"], workspace="acme"))
    after = await refusals(control, "other workspace in register", 2)
    assert after.runs == before.runs
    assert (
        "run 'elsewhere-2' is of workspace 'acme', and this is the control workflow of 'sandbox'"
        in (after.refused_messages.last[-1])
    )


async def test_run_ids_too_long_to_keep_are_refused(control: WorkflowHandle[Any, Any]) -> None:
    """500 made-up run ids of 1,000 characters each (half a megabyte) would pass what the state
    keeps of run ids: the batch is refused whole, and nothing of it is tracked."""
    before = await view(control)
    tag = uuid.uuid4().hex[:8]
    ids = [f"{tag}-{i:04d}-".ljust(1000, "x") for i in range(500)]
    assert sum(map(len, ids)) > RUN_ID_BYTES_TRACKED
    await control.signal("register_batch", batch(ids))
    after = await refusals(
        control, "no room in register", before.refused_messages.by_reason.get("no room in register", 0) + 1
    )
    assert after.runs == before.runs
    assert "registration of 500 run(s) refused" in after.refused_messages.last[-1]


async def test_a_flood_of_made_up_runs_stays_bounded_and_real_runs_still_work(
    client: Client, control: WorkflowHandle[Any, Any], runs: Runs
) -> None:
    """Twelve batches of 1,000 made-up run ids, sent back to back: the control workflow never
    tracks more than RUNS_TRACKED runs, forgets the made-up ones once the server says they are not
    running, refuses what still finds no room, and afterwards a real switch is accepted, a real
    run registers and completes, and no workflow task of it failed."""
    tag = uuid.uuid4().hex[:8]
    before = await view(control)
    generation = before.switches.generation
    ids = [[f"fake-{tag}-{b}-{i}" for i in range(1000)] for b in range(12)]
    sent = [control.signal("register_batch", batch(chunk, generation=generation)) for chunk in ids]
    await asyncio.gather(*sent)
    tracked = []
    for _ in range(40):
        tracked.append((await view(control)).runs)
        await asyncio.sleep(0.05)
    assert max(tracked) <= RUNS_TRACKED
    after = await refusals(
        control, "no room in register", before.refused_messages.by_reason.get("no room in register", 0) + 1
    )
    assert after.runs <= RUNS_TRACKED

    result = await control.execute_update(
        "switch",
        {"switch": "safe_mode", "on": False, "by": "u_carol", "reason": "after the flood"},
        result_type=SwitchResult,
    )
    assert result.accepted, result
    report = await asyncio.wait_for((await runs.start(workspace=WORKSPACE, mode="suggest", script=[])).result(), 60)
    assert report.state is RunState.COMPLETED
    await assert_not_stuck(client, control)
    await assert_replays(client, control)


async def test_a_switch_reaches_thousands_of_registered_runs_without_failing_a_task(
    client: Client, control: WorkflowHandle[Any, Any]
) -> None:
    """4,000 registered runs (made up, so every signal to them fails): Temporal allows a workflow
    2,000 signals to others in flight, and a switch told to all at once failed its workflow task
    again and again. The switch is accepted, the runs are told in turns, those that do not exist
    are forgotten, and no workflow task failed."""
    tag = uuid.uuid4().hex[:8]
    before = await view(control)
    for b in range(4):
        ids = [f"many-{tag}-{b}-{i}" for i in range(1000)]
        await control.signal("register_batch", batch(ids, generation=before.switches.generation))
    registered = await state_when(control, lambda v: v.runs >= before.runs + 4000)
    assert registered.runs >= before.runs + 4000
    for on in (True, False):
        body = {"switch": "safe_mode", "on": on, "by": "u_carol", "reason": "drill with many runs"}
        result = await control.execute_update("switch", body, result_type=SwitchResult)
        assert result.accepted, result
    told = await state_when(control, lambda v: v.runs <= before.runs)
    assert told.runs <= before.runs
    await assert_not_stuck(client, control)
    await assert_replays(client, control)


async def test_spend_reservations_past_what_is_kept_or_not_of_this_workspace_are_refused(
    client: Client, control: WorkflowHandle[Any, Any]
) -> None:
    """Open spend reservations are carried across continue-as-new too. An insider holding tiny
    amounts under huge ids, one update after another, is refused once what is kept of their ids
    is full, and the reservations already held stay; a reservation for another workspace, or with
    ids or names that are not printable, is refused at once."""
    tag = uuid.uuid4().hex[:6]

    def reserve(i: int, **change: Any) -> dict[str, Any]:
        long = f"{tag}-{i:03d}-".ljust(1000, "x")
        body = {
            "workspace": WORKSPACE,
            "run_id": long,
            "reservation_id": long,
            "agent": "support",
            "requested_by": "u_alice",
            "usd": 0.000001,
            "cap_usd": 1_000_000.0,
        }
        return {**body, **change}

    for change, reason in [
        ({"workspace": "acme"}, "the reservation is for workspace 'acme'; this is 'sandbox'"),
        ({"agent": "\x01" * 1000}, "the reservation's ids or names hold characters that are not printable"),
        ({"reservation_id": "\x01" * 1000}, "the reservation's ids or names hold characters that are not printable"),
    ]:
        refused = await control.execute_update("reserve", reserve(999, **change), result_type=ReserveResult)
        assert (refused.granted, refused.reason) == (False, reason)
    fit = RESERVATION_BYTES_OPEN // (2 * 1000 + len("support") + len("u_alice"))
    results = [await control.execute_update("reserve", reserve(i), result_type=ReserveResult) for i in range(fit + 3)]
    assert all(r.granted for r in results[:fit])
    assert not any(r.granted for r in results[fit:])
    assert "spend reservations are open" in (results[fit].reason or "")
    await assert_replays(client, control)


async def test_a_sweep_for_room_keeps_the_runs_holding_a_concurrency_slot(control: WorkflowHandle[Any, Any]) -> None:
    """A registration that cannot fit sends the control workflow to ask the server which runs
    are live, and it forgets the others however recent. A run admitted under a concurrency cap
    that visibility does not list yet (it has not published its state) keeps its slot: forgotten,
    it would let another run start past the cap while it still runs."""
    tag = uuid.uuid4().hex[:6]
    before = await view(control)
    for i in range(2):
        body = {
            "workspace": WORKSPACE,
            "run_id": f"capped-{tag}-{i}",
            "chain_run_id": f"c-{i}",
            "max_concurrent_runs": 50,
        }
        await control.signal("register", body)
    admitted = await state_when(control, lambda v: v.runs >= before.runs + 2)
    assert admitted.runs == before.runs + 2
    too_many = [f"{tag}-{i:03d}-".ljust(1000, "x") for i in range(300)]
    await control.signal("register_batch", batch(too_many, generation=before.switches.generation))
    refused = await refusals(
        control, "no room in register", before.refused_messages.by_reason.get("no room in register", 0) + 1
    )
    assert refused.runs == before.runs + 2
