"""Short fault suite: misbehaving models and tools end runs cleanly, never in a loop."""

from __future__ import annotations

from temporalio.client import Client

from airlock.models import CallStatus, RunState, Status
from airlock.settings import Settings
from tests.conftest import Runs, call
from tests.example_tools import faults
from worker import build_worker


async def test_the_same_call_in_a_loop_ends_the_run(runs: Runs) -> None:
    """A model repeating one call (same tool, same arguments) is stopped, not indulged."""
    handle = await runs.start(script=[call("kb.search", query="refund")] * 10, budget={"max_identical_calls": 3})
    report = await handle.result()
    assert report.state is RunState.BUDGET_EXHAUSTED
    assert report.reason == "max_identical_calls: kb.search proposed 4 times with the same arguments (limit 3)"
    assert len(report.calls) == 4 and report.calls[-1].status is CallStatus.INVALID


async def test_huge_arguments_are_refused_before_anything_reads_them(runs: Runs) -> None:
    handle = await runs.start(script=[call("kb.search", query="x" * 40_000), call("orders.get_order", order_id="ORD-1001")])
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert report.calls[0].status is CallStatus.INVALID and "the limit is 32768" in report.calls[0].error
    assert report.calls[0].args == {}
    assert report.calls[1].status is CallStatus.EXECUTED


async def test_a_failing_tool_opens_the_circuit_instead_of_burning_the_budget(client: Client, fault_settings: Settings) -> None:
    """After three calls whose activity gave up, the run stops calling the tool for a while and
    says so in `status`; other tools go on working."""
    faults.calls.clear()
    async with build_worker(client, fault_settings):
        runs = Runs(client, fault_settings)
        script = [call("faults.broken", key=str(i)) for i in range(5)] + [call("orders.get_order", order_id="ORD-1001")]
        handle = await runs.start(script=script, mode="approve")
        report = await handle.result()
        status = await handle.query("status", result_type=Status)
    assert report.state is RunState.COMPLETED
    statuses = [c.status for c in report.calls]
    assert statuses == [CallStatus.FAILED] * 5 + [CallStatus.EXECUTED]
    assert all("tool unavailable after retries" in c.error for c in report.calls[:3])
    assert all(c.error.startswith("circuit open: faults.broken") for c in report.calls[3:5])
    assert faults.calls["faults.broken"] == 3 * 3  # three calls, three attempts each; then none
    assert "faults.broken" in status.open_circuits
