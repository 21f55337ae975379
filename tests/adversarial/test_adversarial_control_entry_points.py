"""Every entry point of the workspace control workflow, sent what a namespace insider can send:
each signal, update and query with an argument in every encoding, with none, two or three
arguments, with a 1.5 MB argument, and under names the workflow does not know.

What every test checks against the real Temporal server: a signal that cannot be used changes
nothing and is refused in the `state` query (counted by reason, the reason naming what was wrong);
a malformed or unknown update is rejected to its sender and leaves no event in the history; a
query that cannot be answered says why; no workflow task of the control workflow ever fails, and
it still throws switches and admits runs afterwards.

The control workflow of the example policy's `sandbox` workspace is started afresh for this module
and shared by its tests; `acme`'s, shared by the whole session, is left alone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.models import RunState
from contracts.workspace_io import SpendView, Switches, SwitchResult, WorkspaceView
from tests.adversarial_support import ENCODINGS, assert_not_stuck, control_state, event_types, fresh_control, raw
from tests.conftest import Runs
from workflows.workspace_control import BATCH_BYTES, MESSAGE_BYTES, REFUSED_MESSAGES_KEPT

WORKSPACE = "sandbox"
BIG = "x" * 1_500_000

# A well-formed argument of each entry point: what every case below spoils.
VALID: dict[str, dict[str, Any]] = {
    "register": {"workspace": WORKSPACE, "run_id": "adv-run", "read_generation": 0},
    "register_batch": {"registrations": [{"workspace": WORKSPACE, "run_id": "adv-run", "read_generation": 0}]},
    "leave": {"run_id": "adv-run"},
    "settle": {"reservation_id": "adv-r", "usd": 0.1},
    "ack": {"run_id": "adv-run", "generation": 0},
    "switch": {"switch": "safe_mode", "on": True, "by": "u_carol", "reason": "drill"},
    "reserve": {
        "workspace": WORKSPACE,
        "run_id": "adv-run",
        "reservation_id": "adv-r",
        "agent": "support",
        "requested_by": "u_alice",
        "usd": 0.1,
        "cap_usd": 1.0,
    },
}
SIGNALS = ["register", "register_batch", "leave", "settle", "ack"]
UPDATES = ["switch", "reserve"]
ADMISSION_KEY = "adv-run@adv-run"

# The reason each spoiled argument must be refused with (a regex).
UNREADABLE = r"malformed payload: a payload of \d+ bytes with encoding '.+' could not be read"
REASONS = {
    # JSON, but not this message: here an approval vote's fields.
    "json/plain": r"malformed payload: .*(run_id|registrations|reservation_id|switch|workspace)",
    "json/plain (not JSON)": UNREADABLE,
    "binary/plain": r"malformed payload: ",
    "binary/null": r"malformed payload: ",
    "json/protobuf": UNREADABLE,
    "binary/protobuf": UNREADABLE,
    "unknown": UNREADABLE,
    "no metadata": UNREADABLE,
    "no argument": r"malformed payload: expected one argument, got 0",
    "two arguments": r"malformed payload: expected one argument, got 2",
    "three arguments": r"malformed payload: expected one argument, got 3",
    "1.5 MB": r"payload too large: \d{7} bytes; the limit is (64000|1000000)",
}
CASES = list(REASONS)


def spoiled(name: str, case: str) -> list[Any]:
    """The arguments of case `case` for entry point `name`."""
    valid: Any = VALID.get(name, ADMISSION_KEY if name == "admission" else {"key": ADMISSION_KEY})
    if case in ENCODINGS:
        # A readable JSON payload carries the wrong message; every other encoding, the right one.
        data = b'{"approval_id": "apr-1", "approver": "u_bob"}' if case == "json/plain" else _json(valid)
        return [raw(case, data)]
    if case == "no argument":
        return []
    if case == "two arguments":
        return [valid, valid]
    if case == "three arguments":
        return [valid, valid, valid]
    return [{**valid, "padding": BIG}]


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


# Updates this module sent that the control workflow accepted: each leaves an event in its history.
accepted_updates: list[str] = []


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def control(env: WorkflowEnvironment, control_worker: Worker) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    """The `sandbox` workspace's control workflow, started afresh on the session's control queue."""
    handle = await fresh_control(env.client, WORKSPACE)
    yield handle


view = control_state


async def refused_after(control: WorkflowHandle[Any, Any], total: int) -> WorkspaceView:
    """The state once the control workflow has refused more than `total` messages."""
    for _ in range(200):
        state = await view(control)
        if state.refused_messages.total > total:
            return state
        await asyncio.sleep(0.025)
    raise AssertionError(f"no refusal recorded: {state.refused_messages}")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", SIGNALS)
async def test_a_signal_that_cannot_be_used_is_refused_and_shown_in_state(
    client: Client, control: WorkflowHandle[Any, Any], name: str, case: str
) -> None:
    """A control signal with an argument in an encoding it cannot read, the wrong message, no
    argument or several, or one over its size limit changes nothing and is refused: the `state`
    query counts it under its reason and the signal's name, and shows it, naming the signal and
    what was wrong, cut to a bounded length."""
    before = await view(control)
    await control.signal(name, args=spoiled(name, case))
    after = await refused_after(control, before.refused_messages.total)
    assert after.refused_messages.total == before.refused_messages.total + 1
    last = after.refused_messages.last[-1]
    assert f"signal {name} refused: " in last and re.search(REASONS[case], last), last
    assert len(last) <= 500
    kind = ("payload too large" if case == "1.5 MB" else "malformed payload") + f" in {name}"
    assert after.refused_messages.by_reason[kind] == before.refused_messages.by_reason.get(kind, 0) + 1
    # Nothing it carried was taken: no run registered, none forgotten, no money settled.
    assert after.runs == before.runs
    assert (await control.query("spend", result_type=SpendView)).days == []


LONG = "i" * 1001


def with_long_id(name: str) -> dict[str, Any]:
    """The entry point's message with an id one character longer than Temporal allows a workflow id."""
    if name == "register_batch":
        return {"registrations": [{**VALID["register"], "run_id": LONG}]}
    if name == "switch":
        return {**VALID["switch"], "by": LONG}
    field = "reservation_id" if name == "settle" else "run_id"
    return {**VALID[name], field: LONG}


@pytest.mark.parametrize("name", [*SIGNALS, *UPDATES])
async def test_a_message_with_an_id_longer_than_a_workflow_id_is_refused(
    control: WorkflowHandle[Any, Any], name: str
) -> None:
    """A message under its size limit whose run id, reservation id or name is longer than any
    workflow id (1000 characters) is refused like any malformed one, so that what the control
    workflow keeps of a message is never more than a real run sends: a signal in `state`, an
    update rejected to its sender."""
    before = await view(control)
    if name in UPDATES:
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await control.execute_update(name, with_long_id(name))
        cause = rejected.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "MalformedUpdate", cause
        assert re.search(r"at most (1000|200) characters", cause.message), cause.message
        assert (await view(control)).runs == before.runs
        return
    await control.signal(name, with_long_id(name))
    after = await refused_after(control, before.refused_messages.total)
    assert f"signal {name} refused: malformed payload" in after.refused_messages.last[-1]
    assert re.search(r"at most 1000 characters", after.refused_messages.last[-1]), after.refused_messages.last[-1]
    assert after.runs == before.runs


@pytest.mark.parametrize("name", ["registr", "Register", "switch", "leave ", "x" * 1000])
async def test_a_signal_of_an_unknown_name_is_refused_naming_it(control: WorkflowHandle[Any, Any], name: str) -> None:
    """A signal the control workflow has no handler for (a misspelling, an update's name, a
    1000-character name), which Temporal would drop in silence, is refused in `state` under
    "unknown signal", naming it (cut to 200 characters) and the signals it takes."""
    before = await view(control)
    await control.signal(name, VALID["leave"])
    after = await refused_after(control, before.refused_messages.total)
    last = after.refused_messages.last[-1]
    assert f"unknown signal {name[:199]!r}"[:150] in last and "takes the signals ack, leave" in last, last
    assert (
        after.refused_messages.by_reason["unknown signal"]
        == before.refused_messages.by_reason.get("unknown signal", 0) + 1
    )


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", UPDATES)
async def test_an_update_that_cannot_be_used_is_rejected_before_it_reaches_history(
    control: WorkflowHandle[Any, Any], name: str, case: str
) -> None:
    """`switch` and `reserve` with an unreadable argument, the wrong message, no argument or
    several, or one over 64 KB are rejected by their validators: the sender is told why (naming
    the update and the problem), nothing changes, and no event is written (checked for the whole
    module in the last test)."""
    before = await view(control)
    with pytest.raises(WorkflowUpdateFailedError) as rejected:
        await asyncio.wait_for(control.execute_update(name, args=spoiled(name, case)), 10)
    cause = rejected.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "MalformedUpdate", cause
    assert cause.message.startswith(f"update {name} rejected: ") and re.search(REASONS[case], cause.message)
    assert len(cause.message) <= 1100
    after = await view(control)
    assert after.switches == before.switches and after.refused == before.refused
    assert (await control.query("spend", result_type=SpendView)).reserved_usd == 0


@pytest.mark.parametrize("name", ["swich", "Switch", "register", "decide", "y" * 1000])
async def test_an_update_of_an_unknown_name_is_rejected_naming_it(control: WorkflowHandle[Any, Any], name: str) -> None:
    """An update of a name the control workflow does not take (a signal's name among them) is
    rejected before it is accepted, naming it and the updates there are."""
    with pytest.raises(WorkflowUpdateFailedError) as rejected:
        await asyncio.wait_for(control.execute_update(name, VALID["switch"]), 10)
    cause = rejected.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "UnknownUpdate"
    assert f"unknown update {name[:199]!r}"[:150] in cause.message and "reserve, switch" in cause.message


ADMISSION_REASONS = {
    **REASONS,
    # Bytes read as text are a key, of a run that has not registered.
    "binary/plain": r"has not registered yet",
    "json/plain": r"malformed payload: ",
    "1.5 MB": r"payload too large: \d{7} bytes; the limit is 2102",
}


@pytest.mark.parametrize("case", CASES)
async def test_an_admission_query_that_cannot_be_answered_says_why(
    control: WorkflowHandle[Any, Any], case: str
) -> None:
    """The `admission` query with an unreadable key, none, several or one of 1.5 MB answers with
    an error naming the problem and the argument it takes; the workflow answers on."""
    args = [BIG] if case == "1.5 MB" else spoiled("admission", case)
    with pytest.raises(WorkflowQueryFailedError) as failed:
        await control.query("admission", args=args)
    assert re.search(ADMISSION_REASONS[case], str(failed.value)), str(failed.value)
    assert len(str(failed.value)) <= 1200
    assert (await view(control)).workspace == WORKSPACE


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ["state", "spend", "switches"])
async def test_a_query_sent_arguments_it_does_not_take_says_so(
    control: WorkflowHandle[Any, Any], name: str, case: str
) -> None:
    """`state`, `spend` and `switches` take no argument: sent any (in any encoding, of any size,
    however many), they answer with an error saying how many they got; without one, they answer."""
    args = spoiled(name, case)
    if not args:
        answer = await control.query(name, result_type={"state": WorkspaceView, "spend": SpendView}.get(name, Switches))
        assert answer is not None
        return
    with pytest.raises(WorkflowQueryFailedError, match=rf"query {name} takes no argument, got {len(args)}"):
        await control.query(name, args=args)


@pytest.mark.parametrize("name", ["State", "status", "admissions", "z" * 1000])
async def test_an_unknown_query_names_itself_and_the_queries_there_are(
    control: WorkflowHandle[Any, Any], name: str
) -> None:
    """A query of a name the control workflow does not answer fails with an error naming it."""
    with pytest.raises(WorkflowQueryFailedError) as failed:
        await control.query(name)
    message = str(failed.value)
    assert f"unknown query {name[:199]!r}"[:150] in message and "admission, spend, state, switches" in message


async def test_a_flood_of_refusals_keeps_a_bounded_record(control: WorkflowHandle[Any, Any]) -> None:
    """Past 20 refusals, the state keeps the last 20 in full and counts every one."""
    before = await view(control)
    for n in range(REFUSED_MESSAGES_KEPT + 5):
        await control.signal(f"flood-{n}", {})
    for _ in range(200):
        after = await view(control)
        if after.refused_messages.total >= before.refused_messages.total + REFUSED_MESSAGES_KEPT + 5:
            break
        await asyncio.sleep(0.025)
    assert after.refused_messages.total == before.refused_messages.total + REFUSED_MESSAGES_KEPT + 5
    assert len(after.refused_messages.last) == REFUSED_MESSAGES_KEPT
    assert "'flood-24'" in after.refused_messages.last[-1] and "'flood-5'" in after.refused_messages.last[0]


async def test_after_everything_the_control_workflow_switches_and_admits_and_never_failed_a_task(
    client: Client, control: WorkflowHandle[Any, Any], runs: Runs
) -> None:
    """After one of every refused message (run first, and again when this test runs alone), a
    real `switch` is accepted and reaches runs, a real run registers and completes, no workflow
    task of the control workflow failed or is retrying, and the history holds an accepted update
    only for the updates that were accepted."""
    for name in [*SIGNALS, "registr"]:
        await control.signal(name, args=spoiled(name, "1.5 MB"))
    for name in [*UPDATES, "swich"]:
        with pytest.raises(WorkflowUpdateFailedError):
            await control.execute_update(name, args=spoiled(name, "two arguments"))
    before = await view(control)
    for on in (True, False):
        result = await control.execute_update("switch", {**VALID["switch"], "on": on}, result_type=SwitchResult)
        accepted_updates.append("switch")
        assert result.accepted and result.generation is not None, result
    handle = await runs.start(workspace=WORKSPACE, mode="suggest", script=[])
    report = await asyncio.wait_for(handle.result(), 30)
    assert report.state is RunState.COMPLETED
    after = await view(control)
    assert after.switches.generation == before.switches.generation + 2 and not after.switches.safe_mode
    assert after.runs == before.runs + 1
    await assert_not_stuck(client, control)  # a task the server turned back (new messages) is no failure
    types = await event_types(client, control)
    assert types.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED) == len(accepted_updates)


def test_the_size_limits_leave_room_for_real_messages() -> None:
    """A batch of 1000 registrations with long ids fits the batch limit, and every other message
    (a switch with its longest reason and a signature) fits the message limit."""
    batch = {"registrations": [{**VALID["register"], "run_id": "r" * 200, "chain_run_id": "c" * 36}] * 1000}
    assert len(_json(batch)) < BATCH_BYTES
    assert len(_json({**VALID["switch"], "reason": "r" * 2000, "signature": "s" * 88})) < MESSAGE_BYTES
