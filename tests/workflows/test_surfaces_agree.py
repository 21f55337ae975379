"""Every surface tells the same truth about a run, and says what holds it.

`status`, `airlock show` (text and JSON), `airlock inbox`, the audit export and the Temporal Web
UI's user metadata are read back on real runs: the state, what holds the run since when and what
would release it, the approvals' real deadlines, and the approvers' own words.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle

from contracts.models import RunState, Status
from runtime.settings import Settings
from tests.conftest import READ, RECORDINGS, REFUND_120, AirlockCli, Runs, fake_openai, switch
from worker import build_worker
from workflows.holds import at

METADATA = "__temporal_workflow_metadata"


async def details(handle: WorkflowHandle[Any, Any]) -> str:
    """The run's "current details" as the Web UI reads them (its metadata query)."""
    metadata = await handle.query(METADATA, result_type=WorkflowMetadata)
    return metadata.current_details


async def search_state(handle: WorkflowHandle[Any, Any]) -> str:
    described = await handle.describe()
    return str(described.search_attributes.get("AirlockState", [""])[0])


async def test_an_approved_write_held_by_safe_mode_is_open_and_held_on_every_surface(
    runs: Runs, client: Client, clean_switches: Any, airlock_cli: AirlockCli, tmp_path: Path
) -> None:
    """An approved refund that safe mode holds: the run is open and says so everywhere (not
    "stopped", no row from another time), with the approver's comment, and runs once released."""
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    handle = await runs.start(script=[READ, REFUND_120], mode="approve")
    approval_id = (await runs.pending(handle)).pending_approvals[0].approval_id
    await switch(client, "safe_mode", True)
    await handle.signal("approve", {"approval_id": approval_id, "approver": "u_bob", "comment": "matches the photo"})
    status = await runs.wait_for(handle, lambda s: s.held is not None and s.held.kind == "safe_mode")
    assert status.state is RunState.RUNNING and not status.pending_approvals
    assert status.held is not None
    assert "payments.create_refund is held" in status.held.waiting_for
    assert status.held.released_by == "`airlock workspace safe-mode-off acme --by ADMIN`"

    code, text = await airlock_cli("show", handle.id)
    assert code == 0
    assert f"Run {handle.id}: running (still open)" in text
    assert f"held since {at(status.held.since)}: the end of workspace acme's safe mode" in text
    assert "released by: `airlock workspace safe-mode-off acme --by ADMIN`" in text
    assert (
        f'({approval_id}): approved, not run yet: held by safe mode; votes: u_bob (approve): "matches the photo"'
        in text
    )
    assert "stopped" not in text
    code, out = await airlock_cli("show", handle.id, "--json")
    shown = json.loads(out)
    assert shown["state"] == "running" and shown["closed"] is False
    assert shown["held"]["kind"] == "safe_mode"
    assert shown["who_approved"][0]["comments"] == ["matches the photo"]
    started = datetime.fromisoformat(shown["timeline"][0]["at"])
    assert all(datetime.fromisoformat(e["at"]) >= started for e in shown["timeline"])

    web = await details(handle)
    assert web.startswith("**Airlock: running** · workspace `acme`")
    assert "the approved payments.create_refund is held" in web and "safe-mode-off acme" in web

    exported = tmp_path / "audit.jsonl"
    code, _ = await airlock_cli("audit", "export", "--since", since, "--workspace", "acme", "-o", str(exported))
    assert code == 0
    votes = [
        e
        for e in map(json.loads, exported.read_text().splitlines())
        if e["run_id"] == handle.id and e["type"] == "approval"
    ]
    assert [(v["actor"], v["comment"]) for v in votes] == [("u_bob", "matches the photo")]

    await switch(client, "safe_mode", False)
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert report.calls[-1].status.value == "executed" and report.calls[-1].votes[0].comment == "matches the photo"


async def test_the_real_deadline_is_shown_where_the_wall_clock_budget_ends_first(
    runs: Runs, airlock_cli: AirlockCli
) -> None:
    """The tier allows a day, the run's budget ten minutes: every surface names the instant the
    budget ends, and none says "within 86400s"."""
    handle = await runs.start(script=[REFUND_120], mode="approve", budget={"max_wall_clock_s": 600})
    status = await runs.pending(handle)
    pending = status.pending_approvals[0]
    assert pending.deadline - pending.requested_at <= timedelta(seconds=600)
    assert status.held is not None and status.held.kind == "approval" and status.held.until == pending.deadline
    deadline = at(pending.deadline)

    timeline = await handle.query("timeline", result_type=list[dict[str, Any]])
    requested = next(e for e in timeline if e["kind"] == "approval_requested")
    assert requested["message"].startswith(f"1 approval(s) of approver by {deadline}")
    assert "the run's wall-clock budget ends then" in requested["message"]
    assert "within" not in requested["message"]

    code, inbox = await airlock_cli("inbox", "--as", "u_bob")
    assert code == 0 and f"{handle.id}  {pending.approval_id}" in inbox and f"until {deadline}" in inbox
    code, text = await airlock_cli("show", handle.id)
    assert f"{pending.approval_id} waits for 1 more of approver by {deadline}" in text
    assert f"counts as denied at {deadline}" in text
    assert f"by {deadline}" in await details(handle)
    await handle.cancel()


async def test_a_paused_run_waiting_for_votes_says_paused_and_still_takes_votes(
    runs: Runs, airlock_cli: AirlockCli
) -> None:
    """Paused while a call waits for approval: `paused` in status, search attributes and the Web
    UI, with who paused it and how to resume; the inbox still offers the vote; resumed, the run
    waits for the vote again."""
    handle = await runs.start(script=[REFUND_120], mode="approve")
    approval_id = (await runs.pending(handle)).pending_approvals[0].approval_id
    await handle.signal("pause", {"by": "u_carol", "reason": "checking the order"})
    status = await runs.wait_for(handle, lambda s: s.state is RunState.PAUSED)
    assert [p.approval_id for p in status.pending_approvals] == [approval_id]
    assert status.held is not None and status.held.kind == "paused"
    assert status.held.waiting_for == "a resume: u_carol paused the run (checking the order)"
    assert status.held.released_by == "a `resume` signal from u_carol, an admin or an approver"
    assert await search_state(handle) == "paused"
    assert (await details(handle)).startswith("**Airlock: paused**")

    code, inbox = await airlock_cli("inbox", "--as", "u_bob")
    assert code == 0 and approval_id in inbox
    assert "the run is paused: a resume: u_carol paused the run (checking the order); votes still count" in inbox
    code, text = await airlock_cli("show", handle.id)
    assert "held since" in text and "a resume: u_carol paused the run" in text

    await handle.signal("resume", {"by": "u_carol", "reason": "order checked"})
    status = await runs.wait_for(handle, lambda s: s.state is RunState.AWAITING_APPROVAL)
    assert status.held is not None and status.held.kind == "approval"
    assert await search_state(handle) == "awaiting_approval"
    await handle.signal("approve", {"approval_id": approval_id, "approver": "u_bob"})
    assert (await handle.result()).state is RunState.COMPLETED


def _flaky_model(failures: int, status: int) -> Any:
    """An OpenAI-compatible endpoint that fails `failures` times with `status`, then answers with
    one recorded response."""
    recorded = json.loads((RECORDINGS / "tool_call_proposal.json").read_text())["response"]
    seen = {"n": 0}

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen["n"] += 1
        if seen["n"] <= failures:
            return httpx2.Response(
                status, json={"error": {"message": "upstream is overloaded", "type": "server_error"}}
            )
        return httpx2.Response(recorded["status"], headers=recorded["headers"], json=recorded["json"])

    return answer


async def test_a_model_being_retried_is_not_shown_as_running_fine(client: Client, settings: Settings) -> None:
    """While a failing model call is retried, status names the error, the attempt and the next
    one; the timeline records each failed attempt; the run then goes on."""
    provider = fake_openai(settings, _flaky_model(failures=2, status=503))
    async with build_worker(client, settings, openai=provider):
        runs = Runs(client, settings)
        handle = await runs.start(model={"provider": "openai", "name": "gpt-4o-mini"}, budget={"max_steps": 1})
        status: Status = await runs.wait_for(handle, lambda s: s.held is not None and s.held.kind == "model_retry")
        assert status.held is not None
        assert status.held.waiting_for.startswith("model openai:gpt-4o-mini: attempt 1 of 6 failed:")
        assert status.last_error is not None and "attempt 1 of 6 failed" in status.last_error
        assert status.held.until is not None and status.held.until > status.held.since
        assert "model openai:gpt-4o-mini: attempt 1 of 6 failed" in await details(handle)
        report = await handle.result()
        timeline = await handle.query("timeline", result_type=list[dict[str, Any]])
    assert [e["data"]["attempt"] for e in timeline if e["kind"] == "model_retry"] == [1, 2], [
        (e["kind"], e["message"]) for e in timeline
    ]
    assert report.used.tokens == 469, "the third attempt answered and was charged"


async def test_the_web_ui_names_what_a_run_waits_for(client: Client, runs: Runs) -> None:
    """Opened in the Web UI, a waiting run shows the call, its diff and who may approve, and its
    timers and activities carry summaries."""
    handle = await runs.start(script=[READ, REFUND_120], mode="approve")
    status = await runs.pending(handle)
    approval_id = status.pending_approvals[0].approval_id
    web = await details(handle)
    assert web.startswith("**Airlock: awaiting approval**")
    assert f"### payments.create_refund — {approval_id}" in web
    assert "`orders[ORD-1001].refunded_usd`: 0.00 → 120.00" in web
    assert f"`airlock approve {handle.id} {approval_id} --as PERSON` by one of: u_bob, u_carol" in web

    history = await handle.fetch_history()
    summaries = {
        EventType.Name(e.event_type): client.data_converter.payload_converter.from_payload(e.user_metadata.summary, str)
        for e in history.events
        if e.HasField("user_metadata") and e.user_metadata.HasField("summary")
    }
    assert summaries["EVENT_TYPE_TIMER_STARTED"] == f"{approval_id}: no decision by now counts as denied"
    marker_summaries = [
        client.data_converter.payload_converter.from_payload(e.user_metadata.summary, str)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and e.HasField("user_metadata")
    ]
    assert any(s.startswith("preview payments.create_refund(") for s in marker_summaries), marker_summaries
    assert any(s.startswith("read orders.get_order(") for s in marker_summaries), marker_summaries
    await handle.cancel()


async def test_the_web_ui_shows_a_failed_run_as_failed(client: Client, settings: Settings) -> None:
    """A run whose Airlock state is `failed` says FAILED in the Web UI, though Temporal completed
    the workflow (it returned its report)."""
    provider = fake_openai(settings, _flaky_model(failures=1, status=400))
    async with build_worker(client, settings, openai=provider):
        failing = await Runs(client, settings).start(model={"provider": "openai", "name": "gpt-4o-mini"})
        report = await failing.result()
        assert report.state is RunState.FAILED
        web = await details(failing)
    assert web.startswith("**Airlock: FAILED**")
    assert "Outcome: model.decide failed" in web
