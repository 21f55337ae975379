"""Figure 6: one long run (scripted reads) through continue-as-new, and the size of each history.

The reads are knowledge-base searches that all differ, as an agent's would: one call repeated
thousands of times would be stopped by Airlock's loop guard (`max_identical_calls`).

Each run of the chain starts with what it carries (the run input and the run's memory) and ends
with a continue-as-new event that carries it again. If that state grows with the steps taken,
every later history is bigger than the one before: the table shows it. A run whose workflow
task keeps failing (for example, a continue-as-new input over the server's 2 MB payload limit)
is reported as stuck and terminated, with what the chain had reached.
"""

from __future__ import annotations

import json
import time
from typing import Any

from temporalio.client import Client, WorkflowFailureError

from bench.common import HistorySize, RunStuck, airlock_worker, kb_reads, new_id, result_or_stuck, run_input
from contracts.models import RunReport


async def _chain(client: Client, workflow_id: str, first_run_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    run_id: str | None = first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        size = HistorySize.of(history)
        events = history.events
        started = events[0].workflow_execution_started_event_attributes
        last = events[-1]
        payloads = list(started.input.payloads)
        memory_fields: dict[str, int] = {}
        if len(payloads) > 1:
            try:
                memory = json.loads(payloads[1].data)
                memory_fields = {k: len(json.dumps(v, separators=(",", ":"))) for k, v in memory.items()}
            except ValueError:
                pass
        runs.append(
            {
                "carried_payload_bytes": [p.ByteSize() for p in payloads],
                "carried_memory_fields": dict(sorted(memory_fields.items(), key=lambda kv: -kv[1])[:6]),
                "events": size.events,
                "json_bytes": size.json_bytes,
                "proto_bytes": size.proto_bytes,
                "carried_in_bytes": started.input.ByteSize(),
                "markers": sum(1 for e in events if e.HasField("marker_recorded_event_attributes")),
                "last_event": (last.WhichOneof("attributes") or "?").removesuffix("_event_attributes"),
            }
        )
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    return runs


async def measure(client: Client, steps: int, steps_per_history: int, timeout_s: float) -> dict[str, Any]:
    async with airlock_worker(client, new_id("bench-long")) as settings:
        raw = run_input(kb_reads(steps), steps_per_history=steps_per_history)
        handle = await client.start_workflow(
            "AgentRun", raw, id=new_id("long"), task_queue=settings.task_queue, result_type=RunReport
        )
        first_run_id = handle.first_execution_run_id or handle.result_run_id
        assert first_run_id
        started = time.perf_counter()
        finished = False
        try:
            report = await result_or_stuck(handle, timeout=timeout_s)
            calls = len(report.calls) + report.earlier_calls
            outcome = f"{report.state.value}: {report.reason} ({calls} calls over the chain)"
            finished = True
        except RunStuck as e:
            outcome = f"STUCK: {e}"
        except TimeoutError:
            outcome = f"not finished after {timeout_s:.0f}s"
        except WorkflowFailureError as e:
            outcome = f"failed: {e.cause}"[:400]
            finished = True
        elapsed = time.perf_counter() - started
        runs = await _chain(client, handle.id, first_run_id)
        if not finished:
            await handle.terminate("bench: stuck or out of time")
        return {
            "steps": steps,
            "steps_per_history": steps_per_history,
            "outcome": outcome,
            "finished": finished,
            "seconds": elapsed,
            "runs": runs,
        }
