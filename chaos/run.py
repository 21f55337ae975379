"""`make chaos`: the fault suites in full, printing their counts.

    python -m chaos.run [--runs 20] [--rounds 6]

1. crash consistency: workers SIGKILLed right after a write commits, over several rounds, and
   at each point of one write's life (after its preparation, after the decision, after its
   commit, during its approval wait), on SQLite and on a throwaway PostgreSQL;
2. server restart: the Temporal dev server (persistent database) killed and restarted while runs
   wait for approvals that were already given;
3. flaky and hanging tools: 30% transient failures, 5% hangs past the timeout, 5% commits that
   time out before reporting, on both databases;
4. model misbehaviour: the same call in a loop, endless steps, huge and schema-invalid arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from temporalio.client import Client

from chaos.crash import crash_suite, crash_windows, window_table
from chaos.flaky import chaos_settings, flaky_suite
from chaos.postgres import ThrowawayPostgres
from chaos.runs import pending_approval_id, start_scripted
from contracts.models import FINAL_STATES, RunReport
from runtime.binaries import binary
from runtime.converter import data_converter
from runtime.logging import configure_logging
from runtime.settings import Settings
from tools.backoffice.db import connect, refunds
from worker import build_worker, register_search_attributes, start_local_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, db_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            binary("temporal"),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--db-filename",
            str(db_file),
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def connect_when_up(port: int) -> Client:
    for _ in range(200):
        try:
            return await Client.connect(f"127.0.0.1:{port}", data_converter=data_converter)
        except Exception:
            await asyncio.sleep(0.1)
    raise RuntimeError("the dev server did not come up")


async def server_restart_suite(tmp: Path, runs: int) -> str:
    port = free_port()
    db_file = tmp / "temporal.db"
    server = start_server(port, db_file)
    settings = Settings(
        db=str(tmp / "restart.db"), task_queue="chaos-restart", control_db=str(tmp / "control-store.db")
    )
    try:
        client = await connect_when_up(port)
        await register_search_attributes(client)
        async with build_worker(client, settings):
            handles = [
                await start_scripted(
                    client,
                    settings.task_queue,
                    f"restart-{i}",
                    [
                        {
                            "tool": "payments.create_refund",
                            "args": {"order_id": "ORD-1002", "amount_usd": 2, "reason": f"r{i}"},
                        }
                    ],
                    goal="restart",
                    mode="approve",
                )
                for i in range(runs)
            ]
            approvals = {h.id: await pending_approval_id(h) for h in handles}
            # Approve every run, then kill the server at once: the approvals must survive.
            for h in handles:
                await h.signal("approve", {"approval_id": approvals[h.id], "approver": "u_bob"})
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        server = start_server(port, db_file)
        client = await connect_when_up(port)
        async with build_worker(client, settings):
            reports = [
                await asyncio.wait_for(client.get_workflow_handle(h.id, result_type=RunReport).result(), 120)
                for h in handles
            ]
        with connect(settings.db).connect() as conn:
            rows = conn.execute(select(func.count()).select_from(refunds)).scalar_one()
        final = sum(r.state in FINAL_STATES for r in reports)
        approved = sum(1 for r in reports if r.calls and r.calls[0].votes and r.calls[0].votes[0].approver == "u_bob")
        return "\n".join(
            [
                f"runs                         {runs}",
                f"runs in a final state        {final}",
                f"approvals kept across kill   {approved} of {runs}",
                f"refund rows / runs           {rows} / {runs}",
                f"duplicate side effects       {rows - runs}",
            ]
        )
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()


async def misbehaving_model_suite(client: Client, settings: Settings) -> str:
    cases: dict[str, dict[str, Any]] = {
        "same call in a loop": {"script": [{"tool": "kb.search", "args": {"query": "refund"}}] * 50},
        "endless steps": {
            "script": [{"tool": "kb.search", "args": {"query": f"q{i}"}} for i in range(500)],
            "budget": {"max_steps": 30},
        },
        "huge arguments": {"script": [{"tool": "kb.search", "args": {"query": "x" * 100_000}}] * 3},
        "schema-invalid arguments": {
            "script": [{"tool": "payments.create_refund", "args": {"amount_usd": "all of it"}}] * 5
        },
    }
    lines: list[str] = []
    async with build_worker(client, settings):
        for name, case in cases.items():
            extra = {field: value for field, value in case.items() if field != "script"}
            started = time.perf_counter()
            handle = await start_scripted(client, settings.task_queue, "model", case["script"], goal=name, **extra)
            report = await handle.result()
            lines.append(
                f"{name:<26} {report.state.value:<17} {len(report.calls):>4} calls  {time.perf_counter() - started:6.2f}s  {report.reason}"
            )
    return "\n".join(lines)


CONTROL_QUEUE = "chaos-workspace-control"


async def database_suites(
    client: Client, tmp: Path, db_name: str, new_database: Callable[[str], str], runs: int, rounds: int
) -> bool:
    """The suites whose subject is the back-office database, each on a fresh database of one
    kind (their counts are of whole tables); True when they all hold."""

    def suite(name: str) -> Settings:
        return Settings(db=new_database(name), task_queue=f"chaos-{name}-{db_name}", control_task_queue=CONTROL_QUEUE)

    crash = await crash_suite(client, suite("crash"), runs, rounds)
    print(
        f"## crash consistency on {db_name} (SIGKILL right after a write commits)\n" + crash.table() + "\n", flush=True
    )
    windows = await crash_windows(client, suite("windows"))
    print(
        f"## crash windows of one write on {db_name} (a refund of most of what is refundable)\n"
        + window_table(windows)
        + "\n",
        flush=True,
    )
    flaky = await flaky_suite(client, chaos_settings(suite("flaky"), tmp), runs=max(5, runs // 2), calls_per_run=6)
    print(f"## flaky and hanging tools on {db_name}\n" + flaky.table() + "\n", flush=True)
    return (
        crash.duplicates == 0
        and crash.final == crash.runs
        and crash.answered_from_ledger > 0
        and all(w.holds for w in windows)
        and flaky.marks == flaky.ledger_rows
    )


async def main(runs: int, rounds: int) -> None:
    configure_logging("ERROR")
    with tempfile.TemporaryDirectory() as tmp_dir, ThrowawayPostgres() as pg:
        tmp = Path(tmp_dir)
        env = await start_local_server(log_level="warn")

        def suite(name: str) -> Settings:
            return Settings(
                db=str(tmp / f"{name}.db"),
                task_queue=f"chaos-{name}",
                control_task_queue=CONTROL_QUEUE,
                control_db=str(tmp / "control-store.db"),
            )

        try:
            # Workspace control workflows outlive each suite's workers: one worker serves them all, so
            # a suite never joins a control workflow left on a queue that nobody polls any more.
            async with build_worker(
                env.client,
                Settings(
                    db=str(tmp / "control.db"), task_queue=CONTROL_QUEUE, control_db=str(tmp / "control-store.db")
                ),
            ):
                print(f"# chaos: {' '.join(sys.argv)}\n")
                ok = True
                databases: dict[str, Callable[[str], str]] = {
                    "sqlite": lambda name: str(tmp / f"{name}.db"),
                    "postgresql": pg.new_database,
                }
                for db_name, new_database in databases.items():
                    ok = await database_suites(env.client, tmp, db_name, new_database, runs, rounds) and ok
                print(
                    "## Temporal server killed and restarted (persistent database)\n"
                    + await server_restart_suite(tmp, max(5, runs // 2))
                    + "\n",
                    flush=True,
                )
                print("## model misbehaviour\n" + await misbehaving_model_suite(env.client, suite("model")), flush=True)
                print("\nresult:", "PASS" if ok else "FAIL")
                if not ok:
                    raise SystemExit(1)
        finally:
            await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.rounds))
