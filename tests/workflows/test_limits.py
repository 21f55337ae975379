"""Windowed limits on the real dev server: a call that takes a counter past its max is sent for
approval or denied, parallel runs cannot both pass under the max, a retried reservation or
settlement charges once, and a call that does not run gives its room back."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from sqlalchemy import Engine
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.limit_ledger import LimitLedger
from contracts import names
from contracts.models import CallStatus, RunState
from runtime.settings import EXAMPLE_POLICY, Settings
from tests.conftest import AirlockCli, Runs, call, count_rows
from tools.backoffice.db import refunds
from worker import build_worker

DAY = 86_400


def refund(amount: int, order: str = "ORD-1001") -> dict[str, Any]:
    return call("payments.create_refund", order_id=order, amount_usd=amount, reason="goodwill")


def limit_id() -> str:
    # The control store is the session's: each test counts on counters of its own.
    return f"refunds.daily-{uuid.uuid4().hex[:8]}"


def with_limits(
    settings: Settings, tmp_path: Path, tool: str, *limits: dict[str, Any], capabilities: list[str] | None = None
) -> Settings:
    """The settings with the shipped policy plus `limits` on `tool`."""
    policy = yaml.safe_load(EXAMPLE_POLICY.read_text())
    policy["tools"].setdefault(tool, {})["limits"] = list(limits)
    if capabilities:
        policy["agents"]["support"]["capabilities"] += capabilities
    path = tmp_path / "limits.yaml"
    path.write_text(yaml.safe_dump(policy))
    return settings.model_copy(update={"policy_path": path})


def daily(limit: str, max_usd: int, **more: Any) -> dict[str, Any]:
    return {
        "id": limit,
        "sum": "amount_usd",
        "unit": "USD",
        "per": "requester",
        "window": "1d",
        "max": max_usd,
        "effect": "require_approval",
        **more,
    }


def counter(settings: Settings, limit: str, subject: str = "u_alice", window_s: int = DAY) -> tuple[Decimal, Decimal]:
    """The counter's committed and reserved totals in the control store now."""
    return LimitLedger.open(settings.control_db).total("acme", limit, subject, window_s)


async def test_a_call_past_the_daily_total_waits_for_approval_naming_the_limit(
    client: Client, settings: Settings, tmp_path: Path, db: Engine, airlock_cli: AirlockCli
) -> None:
    """Refunds of 40 and 40 pass a 100 USD a day limit; a third of 30 would make 110: it waits
    for an approver, and status, the timeline and `airlock show` name the limit and the counter.
    Approved, it runs, and the counter holds all three."""
    limit = limit_id()
    limited = with_limits(settings, tmp_path, "payments.create_refund", daily(limit, 100, tier="critical"))
    async with build_worker(client, limited):
        runs = Runs(client, limited)
        first = await runs.start(script=[refund(40), refund(40)])
        assert [c.status for c in (await first.result()).calls] == [CallStatus.EXECUTED] * 2
        assert counter(limited, limit) == (Decimal(80), Decimal(0))

        handle = await runs.start(script=[refund(30)])
        pending = (await runs.pending(handle)).pending_approvals[0]
        shown = f"{limit}: 110 of 100 USD per u_alice per 1d"
        assert (pending.rule, pending.reason) == (limit, shown)
        # The limit names the critical tier: two approvers, one of them an admin.
        assert (pending.tier.value, pending.approvals_required, pending.required_role) == ("critical", 2, "admin")
        assert counter(limited, limit) == (Decimal(80), Decimal(0))  # nothing held while it waits
        timeline = await handle.query("timeline", result_type=list[dict[str, Any]])
        decision = [e for e in timeline if e["kind"] == "decision"][-1]
        assert (decision["rule"], decision["outcome"], decision["message"]) == (limit, "needs_approval", shown)
        assert decision["data"] == {"limits": [f"{shown} (not held)"]}

        for approver in ("u_bob", "u_carol"):
            await handle.signal("approve", {"approval_id": pending.approval_id, "approver": approver})
        report = await handle.result()
        assert report.calls[0].status is CallStatus.EXECUTED
        assert counter(limited, limit) == (Decimal(110), Decimal(0))
        status, text = await airlock_cli("show", handle.id)
    assert status == 0
    assert f"  step 1 payments.create_refund#0: {shown} (counted)" in text.splitlines()
    assert count_rows(db, refunds) == 3


async def test_a_deny_limit_refuses_the_call_past_its_count(client: Client, settings: Settings, tmp_path: Path) -> None:
    """At most two refunds an hour in the workspace: the third is denied by the limit, not run,
    and not counted."""
    limit = limit_id()
    two = {"id": limit, "count": True, "per": "workspace", "window": "1h", "max": 2, "effect": "deny"}
    limited = with_limits(settings, tmp_path, "payments.create_refund", two | {"reason": "two refunds an hour"})
    async with build_worker(client, limited):
        report = await (await Runs(client, limited).start(script=[refund(10), refund(10), refund(10)])).result()
    assert [c.status for c in report.calls] == [CallStatus.EXECUTED, CallStatus.EXECUTED, CallStatus.DENIED]
    refused = report.calls[2].decision
    assert refused is not None and refused.rule == limit
    assert refused.reason == f"two refunds an hour: {limit}: 3 of 2 calls per workspace per 1h"
    assert counter(limited, limit, "*", 3600) == (Decimal(2), Decimal(0))


async def test_parallel_runs_cannot_both_pass_under_the_max(
    client: Client, settings: Settings, tmp_path: Path, db: Engine
) -> None:
    """Four runs each refund 30 at once under a 50 USD limit: exactly one runs; the others wait for
    approval, and once stopped give back nothing they did not hold."""
    limit = limit_id()
    limited = with_limits(settings, tmp_path, "payments.create_refund", daily(limit, 50))
    async with build_worker(client, limited):
        runs = Runs(client, limited)
        handles = await asyncio.gather(*(runs.start(script=[refund(30, order="ORD-1002")]) for _ in range(4)))

        async def settled(handle: Any) -> str:
            status = await runs.wait_for(handle, lambda s: bool(s.pending_approvals) or s.state is RunState.COMPLETED)
            return "waiting" if status.pending_approvals else "ran"

        outcomes = sorted(await asyncio.gather(*(settled(h) for h in handles)))
        assert outcomes == ["ran", "waiting", "waiting", "waiting"]
        for handle in handles:
            if (await runs.status(handle)).pending_approvals:
                await handle.cancel()
        reports = [await h.result() for h in handles]
    assert sorted(r.state.value for r in reports) == ["completed", "stopped", "stopped", "stopped"]
    assert counter(limited, limit) == (Decimal(30), Decimal(0))
    assert count_rows(db, refunds) == 1


class LoseFirstLimitCompletions(Interceptor):
    """A worker that commits a reservation (then a settlement) in the control store and dies
    before reporting it: the local activity is attempted again under the same key."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _LoseFirst(next)


class _LoseFirst(ActivityInboundInterceptor):
    attempts: ClassVar[list[tuple[str, int]]] = []

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await self.next.execute_activity(input)
        info = activity.info()
        if info.activity_type in (names.LIMITS_RESERVE, names.LIMITS_SETTLE):
            _LoseFirst.attempts.append((info.activity_type, info.attempt))
            if info.attempt == 1:
                raise RuntimeError("worker lost the completion after the store committed")
        return result


async def test_a_reservation_retried_after_it_committed_charges_once(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    """30 USD under a 50 USD limit, the reservation and the settlement each retried after they
    committed: a double charge would make 60 and send the call for approval; it runs, counted once."""
    limit = limit_id()
    limited = with_limits(settings, tmp_path, "payments.create_refund", daily(limit, 50))
    _LoseFirst.attempts.clear()
    async with build_worker(client, limited, extra_interceptors=[LoseFirstLimitCompletions()]):
        report = await (await Runs(client, limited).start(script=[refund(30)])).result()
    assert _LoseFirst.attempts == [
        (names.LIMITS_RESERVE, 1),
        (names.LIMITS_RESERVE, 2),
        (names.LIMITS_SETTLE, 1),
        (names.LIMITS_SETTLE, 2),
    ]
    assert report.calls[0].status is CallStatus.EXECUTED
    assert counter(limited, limit) == (Decimal(30), Decimal(0))


async def test_a_call_that_fails_or_is_denied_gives_its_room_back(
    client: Client, fault_settings: Settings, tmp_path: Path
) -> None:
    """One call of a failing tool a day: the failure releases its reservation, so the next call is
    not refused by the limit (it fails too, on its own); an approver's denial releases as well."""
    limit = limit_id()
    once = {"id": limit, "count": True, "window": "1d", "max": 1, "effect": "deny"}
    limited = with_limits(fault_settings, tmp_path, "faults.broken", once, capabilities=["faults.broken"])
    probe = call("faults.broken", key="x")
    async with build_worker(client, limited):
        runs = Runs(client, limited)
        report = await (await runs.start(script=[probe, probe])).result()
        assert [c.status for c in report.calls] == [CallStatus.FAILED, CallStatus.FAILED]
        assert all(c.decision is not None and c.decision.rule != limit for c in report.calls)
        assert counter(limited, limit) == (Decimal(0), Decimal(0))

    money = limit_id()
    approved = with_limits(limited, tmp_path, "payments.create_refund", daily(money, 1000))
    async with build_worker(client, approved):
        runs = Runs(client, approved)
        handle = await runs.start(mode="approve", script=[refund(30)])
        pending = (await runs.pending(handle)).pending_approvals[0]
        assert counter(approved, money) == (Decimal(0), Decimal(30))  # held while it waits
        await handle.signal("deny", {"approval_id": pending.approval_id, "approver": "u_bob"})
        assert (await handle.result()).calls[0].status is CallStatus.REJECTED
    assert counter(approved, money) == (Decimal(0), Decimal(0))


class StoreUnreachable(Interceptor):
    """A control store that cannot be written: every reservation raises."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Unreachable(next)


class _Unreachable(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if activity.info().activity_type == names.LIMITS_RESERVE:
            raise ConnectionError("control store unreachable")
        return await self.next.execute_activity(input)


async def test_a_call_whose_limits_cannot_be_held_does_not_run(
    client: Client, settings: Settings, tmp_path: Path, db: Engine
) -> None:
    """Fail closed: with the control store out of reach the limited call fails, and nothing is
    refunded; the run goes on and reports it."""
    limited = with_limits(settings, tmp_path, "payments.create_refund", daily(limit_id(), 1000))
    async with build_worker(client, limited, extra_interceptors=[StoreUnreachable()]):
        report = await (await Runs(client, limited).start(script=[refund(30)])).result()
    [failed] = report.calls
    assert failed.status is CallStatus.FAILED
    assert (failed.error or "").startswith("the control store could not hold the call's windowed limits")
    assert report.state is RunState.COMPLETED
    assert count_rows(db, refunds) == 0


async def test_airlock_workspace_limits_shows_each_counter_in_its_window(
    client: Client, settings: Settings, tmp_path: Path, airlock_cli: AirlockCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After refunds of 40 and 40 under a 100 USD a day limit, `airlock workspace limits acme`
    names the limit and shows u_alice's counter, 80 of 100 USD, all settled; `--json` says the
    same; a limit of another workspace is not shown."""
    limit, elsewhere = limit_id(), limit_id()
    limited = with_limits(
        settings,
        tmp_path,
        "payments.create_refund",
        daily(limit, 100),
        daily(elsewhere, 100, workspaces=["sandbox"]),
    )
    async with build_worker(client, limited):
        first = await Runs(client, limited).start(script=[refund(40), refund(40)])
        assert [c.status for c in (await first.result()).calls] == [CallStatus.EXECUTED] * 2
    monkeypatch.setenv("AIRLOCK_POLICY", str(limited.policy_path))
    status, out = await airlock_cli("workspace", "limits", "acme")
    assert status == 0, out
    lines = out.splitlines()
    heading = (
        f"{limit} (payments.create_refund): sum of amount_usd per requester over 1d, max 100 USD, then require_approval"
    )
    assert lines[lines.index(heading) + 1] == "  u_alice: 80 of 100 USD (80 settled, 0 held)"
    assert elsewhere not in out
    status, out = await airlock_cli("workspace", "limits", "acme", "--json")
    [mine] = [u for u in json.loads(out) if u["limit"] == limit]
    assert mine["counters"] == [{"subject": "u_alice", "committed": "80", "reserved": "0"}]
