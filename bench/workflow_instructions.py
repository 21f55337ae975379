"""Figure 2, counted: the CPU instructions workflow code spends per run, Airlock against the bare
baseline, by replaying recorded histories under valgrind (cachegrind without its cache model).

Runs per second move by a tenth from one round to the next on a busy 2-core machine; an
instruction count hardly moves, so it shows what governance costs in workflow code alone, apart
from the server, the activities and the machine's noise. Each history is replayed `REPLAYS` and
`REPLAYS + EXTRA` times in separate processes: the difference, divided by `EXTRA`, is one run's
replay without the process's start. Runs of 2 and of N steps tell apart what a run costs once
(sandbox, start, report) from what each step costs. Airlock replays under the worker's own
sandbox (`worker.SANDBOX`), the bare baseline under the SDK's default one, as their workers run.
Both are counted once more with their workflow module passed through the sandbox: the difference
is what the sandbox's import of that module costs every run.

    python -m bench.workflow_instructions HISTORY.json airlock|bare COUNT [passthrough]   # one replay
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHistory

from bench.common import ROOT

REPLAYS = 2
EXTRA = 10
CRASH_ATTEMPTS = 3
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def valgrind() -> str | None:
    return shutil.which("valgrind")


async def record(client: Client, steps: list[int], folder: Path) -> dict[tuple[str, int], Path]:
    """One Airlock run of allowed reads and one bare run for each length in `steps`, started and
    served as the throughput section starts and serves them, their histories written to `folder`."""
    from bench.throughput import starts, workers

    paths: dict[tuple[str, int], Path] = {}
    async with workers(client, str(folder)) as queues:
        for n in steps:
            for kind in ("airlock", "bare"):
                [handle] = await asyncio.gather(*starts(client, kind, queues[kind], n, "count", 1))
                await handle.result()
                paths[(kind, n)] = folder / f"{kind}-{n}.json"
                paths[(kind, n)].write_text((await handle.fetch_history()).to_json())
    return paths


async def _instructions(history: Path, kind: str, count: int, passthrough: bool) -> int:
    # The count is the same on every attempt, so a process killed by a signal (valgrind's
    # emulation of the SDK's threads very rarely crashes) is run again; a replay that fails is not.
    for attempt in range(1, CRASH_ATTEMPTS + 1):  # noqa: B007 - named in the error after the loop
        returncode, text = await _replay_under_valgrind(history, kind, count, passthrough)
        found = _REFS.search(text)
        if returncode == 0 and found is not None:
            return int(found.group(1).replace(",", ""))
        if returncode >= 0:
            break
    raise RuntimeError(
        f"replaying {history.name} under valgrind failed (exit {returncode}, attempt {attempt}): {text[-600:]}"
    )


async def _replay_under_valgrind(history: Path, kind: str, count: int, passthrough: bool) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        valgrind() or "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.workflow_instructions",
        str(history),
        kind,
        str(count),
        *(["passthrough"] if passthrough else []),
        cwd=ROOT,
        # A fixed hash seed: set and dict orders, and so the count, are the same from one run to the next.
        env={**os.environ, "PYTHONHASHSEED": "0"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    return proc.returncode if proc.returncode is not None else -1, err.decode(errors="replace")


async def per_run(history: Path, kind: str, passthrough: bool = False) -> float:
    """Instructions of one run's replay, in millions (two replay processes side by side)."""
    few, more = await asyncio.gather(
        _instructions(history, kind, REPLAYS, passthrough), _instructions(history, kind, REPLAYS + EXTRA, passthrough)
    )
    return (more - few) / EXTRA / 1e6


async def measure(client: Client, steps: int, short: int = 2) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="airlock-bench-count-") as tmp:
        paths = await record(client, [short, steps], Path(tmp))
        counts = {f"{kind}-{n}": await per_run(path, kind) for (kind, n), path in paths.items()}
        passed_through = {
            kind: await per_run(paths[(kind, steps)], kind, passthrough=True) for kind in ("airlock", "bare")
        }
    out: dict[str, Any] = {"steps": steps, "short": short, "millions_per_run": counts}
    for kind in ("airlock", "bare"):
        long_run, short_run = counts[f"{kind}-{steps}"], counts[f"{kind}-{short}"]
        per_step = (long_run - short_run) / (steps - short)
        out[kind] = {
            "per_run": long_run,
            "per_step": per_step,
            "once_per_run": short_run - short * per_step,
            "module_import": long_run - passed_through[kind],
        }
    out["ratio"] = out["bare"]["per_run"] / out["airlock"]["per_run"]
    return out


async def _replay(history: Path, kind: str, count: int, passthrough: bool) -> None:
    from temporalio.worker import Replayer
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from bench.bare import BareRun
    from runtime.converter import data_converter
    from worker import SANDBOX
    from workflows.agent_run import AgentRun

    events = WorkflowHistory.from_json("count", history.read_text()).events
    workflow, runner = (AgentRun, SANDBOX) if kind == "airlock" else (BareRun, SandboxedWorkflowRunner())
    if passthrough:
        restrictions: SandboxRestrictions = runner.restrictions.with_passthrough_modules(workflow.__module__)
        runner = SandboxedWorkflowRunner(restrictions=restrictions)
    replayer = Replayer(workflows=[workflow], data_converter=data_converter, workflow_runner=runner)

    async def histories() -> Any:
        for i in range(count):
            yield WorkflowHistory(f"count-{i}", events)

    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            if result.replay_failure is not None:
                raise result.replay_failure


if __name__ == "__main__":
    from runtime.logging import configure_logging

    configure_logging("WARNING")
    asyncio.run(_replay(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:] == ["passthrough"]))
