"""Autonomy as policy, end to end: a rule that lifts one capability out of approve mode, and a
role whose runs only suggest, on a worker running policy/production-example.yaml."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy import Engine
from temporalio.client import Client

from contracts.models import CallStatus, Mode, Outcome, RunState
from runtime.settings import Settings
from tests.conftest import PRODUCTION_POLICY, Runs, call, count_rows
from tools.backoffice.db import refunds
from worker import build_worker


def refund(amount: int) -> dict[str, object]:
    return call("payments.create_refund", order_id="ORD-1001", amount_usd=amount, reason="damaged")


@pytest_asyncio.fixture(loop_scope="session")
async def production_runs(client: Client, settings: Settings) -> AsyncIterator[Runs]:
    settings = settings.model_copy(update={"policy_path": PRODUCTION_POLICY})
    async with build_worker(client, settings):
        yield Runs(client, settings)


async def test_a_small_refund_runs_on_its_own_in_approve_mode_and_a_larger_one_waits(
    production_runs: Runs, db: Engine
) -> None:
    """In approve mode the 15 USD refund is lifted by refund.under-20-auto and executes at once;
    the 30 USD refund is not, and waits for an approver."""
    runs = production_runs
    handle = await runs.start(mode="approve", requested_by="u_alice", script=[refund(15), refund(30)])
    status = await runs.pending(handle)
    assert status.mode is Mode.APPROVE
    [pending] = status.pending_approvals
    assert (pending.tool, pending.args["amount_usd"]) == ("payments.create_refund", "30.00")
    assert count_rows(db, refunds) == 1
    await handle.signal("approve", {"approval_id": pending.approval_id, "approver": "u_bob"})
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    small, large = report.calls
    assert small.status is CallStatus.EXECUTED and small.votes == []
    assert (small.decision.outcome, small.decision.rule) == (Outcome.ALLOW, "refund.under-20-auto")
    assert small.decision.reason == "refunds under 20 USD run on their own in acme"
    assert large.status is CallStatus.EXECUTED and [v.approver for v in large.votes] == ["u_bob"]
    assert large.decision.rule == "mode.approve"
    assert count_rows(db, refunds) == 2


async def test_an_interns_run_only_suggests_whatever_mode_it_asks_for(production_runs: Runs, db: Engine) -> None:
    """u_intern may start runs, but autonomy_by_role caps interns at suggest: asking for auto,
    the lifted refund is still only recorded as a suggestion."""
    handle = await production_runs.start(mode="auto", requested_by="u_intern", script=[refund(15)])
    report = await handle.result()
    assert report.state is RunState.COMPLETED and report.mode is Mode.SUGGEST
    [suggested] = report.calls
    assert suggested.status is CallStatus.SUGGESTED and suggested.result is None
    assert suggested.decision.rule == "mode.suggest"
    assert count_rows(db, refunds) == 0
