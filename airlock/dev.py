"""`airlock dev`: a local Temporal dev server (Web UI on), a worker, and a demo run that waits
for approval, with the commands that drive it printed ready to paste.

Before it starts anything it loads the policy and the tool modules (as `airlock worker` does), and
checks the ports: a Temporal server already at TEMPORAL_ADDRESS is used; anything else holding
that port or the Web UI's is named (pid and process name) instead of waited for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError

from airlock import ports
from contracts.models import RunReport, Status
from runtime.binaries import binary
from runtime.connection import connect_client
from runtime.exits import ExitError, ExitStatus, TemporalUnreachable
from runtime.settings import Settings

# How long a dev server this command started may take to answer.
SERVER_START_TIMEOUT_S = 30.0


def demo_script(order_id: str = "ORD-1001", amount: Decimal = Decimal(120)) -> list[dict[str, Any]]:
    return [
        {"tool": "orders.get_order", "args": {"order_id": order_id}},
        {"tool": "kb.search", "args": {"query": "refund damaged"}},
        {
            "tool": "payments.create_refund",
            "args": {"order_id": order_id, "amount_usd": float(amount), "reason": "damaged"},
        },
        {"answer": f"Refunded {amount} USD on {order_id} after approval."},
    ]


def demo_refund(settings: Settings) -> tuple[str, Decimal] | None:
    """The demo refunds 120 USD; earlier demo runs on the same database may have used it up."""
    from tools.backoffice.db import connect
    from tools.backoffice.orders import load_order
    from tools.base import ToolContext

    with connect(settings.db).connect() as conn:
        for order_id in ("ORD-1001", "ORD-1002"):
            left = load_order(ToolContext(conn), order_id).refundable_usd
            if left >= 1:
                return order_id, min(Decimal(120), left)
    return None


def demo_input(order_id: str = "ORD-1001", amount: Decimal = Decimal(120)) -> dict[str, Any]:
    return {
        "goal": "Refund order ORD-1001, it arrived damaged",
        "workspace": "acme",
        "requested_by": "u_alice",
        "agent": "support",
        "model": {"provider": "scripted", "script": demo_script(order_id, amount)},
        "mode": "approve",
        "budget": {
            "max_steps": 20,
            "max_tool_calls": 20,
            "max_tokens": 50000,
            "max_cost_usd": 1.0,
            "max_wall_clock_s": 3600,
        },
    }


def temporal_binary() -> str:
    try:
        return binary("temporal")
    except RuntimeError as e:
        raise ExitError(str(e), ExitStatus.USAGE) from None


def _shown(binary: str) -> str:
    """The binary as a person would type it from here."""
    name = Path(binary).name
    if shutil.which(name) == binary:
        return name
    with contextlib.suppress(ValueError):
        return str(Path(binary).relative_to(Path.cwd()))
    return binary


def _address(settings: Settings) -> tuple[str, int]:
    host, _, port = settings.temporal_address.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port or "7233")
    except ValueError:
        raise ExitError(f"TEMPORAL_ADDRESS {settings.temporal_address!r} is not HOST:PORT", ExitStatus.USAGE) from None


def _ui_port() -> int:
    text = os.environ.get("AIRLOCK_UI_PORT", "8233")
    try:
        return int(text)
    except ValueError:
        raise ExitError(f"AIRLOCK_UI_PORT {text!r} is not a port number", ExitStatus.USAGE) from None


async def _existing_or_started(settings: Settings, state_dir: Path) -> tuple[Client, subprocess.Popen[bytes] | None]:
    """The Temporal server at TEMPORAL_ADDRESS, or a dev server started there when the port is free."""
    host, port = _address(settings)
    if ports.accepts(host, port):
        try:
            client = await connect_client(settings)
        except TemporalUnreachable:
            raise ExitError(
                f"port {port} (TEMPORAL_ADDRESS {settings.temporal_address}) is held by {ports.holder(port)}, "
                "which does not answer as a Temporal server: stop it, or set TEMPORAL_ADDRESS to a free port",
                ExitStatus.USAGE,
            ) from None
        print(f"using the Temporal server already at {settings.temporal_address}", flush=True)
        return client, None
    ui = _ui_port()
    for taken, what, setting in (
        (port, "Temporal's port", "TEMPORAL_ADDRESS"),
        (ui, "the Web UI's port", "AIRLOCK_UI_PORT"),
    ):
        try:
            free = ports.bindable(host, taken)
        except OSError as e:  # not an address of this machine: a dev server cannot start there
            raise TemporalUnreachable(
                f"cannot reach Temporal at {settings.temporal_address}, and cannot start a dev server there: {e.strerror}"
            ) from None
        if not free:
            raise ExitError(
                f"port {taken} ({what}) is held by {ports.holder(taken)}: stop it, or set {setting} to a free port",
                ExitStatus.USAGE,
            )
    server = _start_dev_server(settings, state_dir, host, port, ui)
    try:
        client = await _answering(settings, server, state_dir)
    except BaseException:  # Ctrl-C included: a server this command started never outlives it
        _stop(server)
        raise
    print(f"started a Temporal dev server at {settings.temporal_address} (pid {server.pid})", flush=True)
    return client, server


async def _answering(settings: Settings, server: subprocess.Popen[bytes], state_dir: Path) -> Client:
    """A client of the dev server just started, once it answers; its own last word if it exits."""
    deadline = asyncio.get_running_loop().time() + SERVER_START_TIMEOUT_S
    while True:
        try:
            return await connect_client(settings, timeout_s=2)
        except TemporalUnreachable:
            if server.poll() is not None:
                raise TemporalUnreachable(
                    f"the Temporal dev server exited at start (status {server.returncode}): "
                    f"{_last_line(state_dir / 'temporal-server.log')}"
                ) from None
            if asyncio.get_running_loop().time() > deadline:
                raise TemporalUnreachable(
                    f"the Temporal dev server (pid {server.pid}) does not answer at {settings.temporal_address} "
                    f"after {SERVER_START_TIMEOUT_S:g} s; see {state_dir / 'temporal-server.log'}"
                ) from None
            await asyncio.sleep(0.25)


def _last_line(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return f"see {log}"


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _start_dev_server(settings: Settings, state_dir: Path, host: str, port: int, ui: int) -> subprocess.Popen[bytes]:
    state_dir.mkdir(parents=True, exist_ok=True)
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        host,
        "--port",
        str(port),
        "--ui-port",
        str(ui),
        "--db-filename",
        str(state_dir / "temporal.db"),
        "--namespace",
        settings.namespace,
        "--log-level",
        "error",
    ]
    log = open(state_dir / "temporal-server.log", "ab")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _print_commands(tctl: str, workflow_id: str, status: Status, ui: str) -> None:
    approval = status.pending_approvals[0]
    q = shlex.quote
    approve = {"approval_id": approval.approval_id, "approver": "u_bob", "comment": "damage confirmed"}
    deny = {"approval_id": approval.approval_id, "approver": "u_bob", "reason": "needs photos"}
    diff = "; ".join(str(c) for c in approval.diff)
    cli = "airlock"
    with contextlib.suppress(RuntimeError):
        cli = q(_shown(binary("airlock")))
    print(
        f"""
The demo run {workflow_id} is waiting for approval:
  {approval.tool} {json.dumps(approval.args)}
  tier {approval.tier.value}, {approval.approvals_still_needed} approval needed ({", ".join(approval.approver_roles)})
  diff: {diff}

Approve it (u_bob holds the approver role; u_alice, who requested the run, may not):
  {tctl} workflow signal --workflow-id {workflow_id} --name approve --input {q(json.dumps(approve))}

Or deny it:
  {tctl} workflow signal --workflow-id {workflow_id} --name deny --input {q(json.dumps(deny))}

Or vote with the airlock CLI: it shows the diff, binds the vote to this exact call (signed, once
u_bob has a key from `airlock keys new --as u_bob`) and says at once whether it counted:
  {cli} approve {workflow_id} {approval.approval_id} --as u_bob --comment "damage confirmed"

Watch it:
  {tctl} workflow query --workflow-id {workflow_id} --name status
  {tctl} workflow query --workflow-id {workflow_id} --name timeline
  {tctl} workflow list --query {q('AirlockState="awaiting_approval" AND AirlockWorkspace="acme"')}
  Web UI: {ui}/namespaces/default/workflows/{workflow_id}

Start your own run:
  {tctl} workflow start --task-queue airlock --type AgentRun --workflow-id my-run --input {q(json.dumps(demo_input()))}

Ctrl-C stops the worker and the dev server.
""",
        flush=True,
    )


def _print_report(report: RunReport) -> None:
    print(f"\nRun {report.workflow_id} ended {report.state.value}: {report.reason}")
    if report.answer:
        print(f"  answer: {report.answer}")
    for c in report.calls:
        who = ", ".join(v.approver for v in c.votes) or "-"
        rule = c.decision.rule if c.decision else "-"
        print(f"  step {c.step} {c.tool}: {c.status.value} (rule {rule}; votes: {who})")
    for c in report.changes:
        for d in c.diff:
            print(f"  changed {d}")
    for r in report.refused_votes:
        print(f"  refused vote by {r.approver or '?'}: {r.reason}")
    for u in report.undo:
        print(f"  undo: {u.tool} {json.dumps(u.args)} ({u.note})")
    print(f"  cost: {report.used.tokens} tokens, {report.used.cost_usd} USD; policy {report.policy_hash}\n", flush=True)


async def _follow_demo(client: Client, settings: Settings, tctl: str, ui: str) -> None:
    refund = demo_refund(settings)
    if refund is None:
        print("the demo orders are fully refunded; `make demo-reset` resets the demo data", flush=True)
        return
    order_id, amount = refund
    workflow_id = f"refund-{order_id.lower()}-{uuid.uuid4().hex[:6]}"
    handle: WorkflowHandle[Any, RunReport] = await client.start_workflow(
        "AgentRun",
        demo_input(order_id, amount),
        id=workflow_id,
        task_queue=settings.task_queue,
        result_type=RunReport,
        static_summary=f"Demo: refund {order_id} ({amount} USD); waits for an approver",
    )
    for _ in range(600):
        try:
            status = await handle.query("status", result_type=Status)
        except WorkflowQueryFailedError:  # still pinning its policy: not started yet
            status = None
        if status is not None and status.pending_approvals:
            _print_commands(tctl, workflow_id, status, ui)
            break
        await asyncio.sleep(0.05)
    else:
        print(f"the demo run {workflow_id} did not reach its approval; see its timeline", flush=True)
    _print_report(await handle.result())


async def dev(settings: Settings, with_demo: bool) -> None:
    from runtime.logging import configure_logging
    from worker import build_worker, freeze_startup_heap, preflight, register_search_attributes

    configure_logging(os.environ.get("AIRLOCK_LOG_LEVEL", "WARNING"))
    # What `make demo` would otherwise find out only after starting a server.
    loaded = preflight(settings)
    state_dir = Path(".airlock")
    client, server = await _existing_or_started(settings, state_dir)
    ui = f"http://127.0.0.1:{_ui_port()}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await register_search_attributes(client)
        worker = build_worker(client, settings, loaded=loaded)
        freeze_startup_heap()
        async with worker:
            print(f"worker polling task queue {settings.task_queue!r}; Web UI {ui}", flush=True)
            if with_demo:
                demo = asyncio.create_task(_follow_demo(client, settings, _shown(temporal_binary()), ui))
                demo.add_done_callback(
                    lambda t: (
                        t.cancelled() or t.exception() is None or print(f"demo run: {t.exception()}", file=sys.stderr)
                    )
                )
            await stop.wait()
    finally:
        if server is not None:
            _stop(server)
