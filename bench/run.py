"""`make bench`: Airlock's figures, measured side by side in one run on one local dev server.

    python -m bench.run            # full sizes (about 7 to 9 minutes on 2 cores)
    python -m bench.run --quick    # small sizes (about 3 minutes)

It starts a Temporal dev server (in memory) with `WorkflowEnvironment.start_local`, runs every
section against it, prints one table per section and stops everything it started. Nothing here
asserts on time: figures are printed, ratios are measured within this one run. A section that
cannot run prints why and the others go on. Logs (workers, the Temporal core, the peers' child
processes) go to a file named at the end, not to the terminal.

Sections:
  history     history events and bytes per tool call: Airlock, OpenAI Agents SDK, Pydantic AI
  throughput  governed Airlock runs per second against a bare Temporal workflow, and (with
              valgrind) the instructions workflow code spends per run, counted on replay
  policy      time of `policy.engine` on the shipped policy, and its share of a step
  latency     approval round trip: signal sent -> tool execution started
  kill        kill switch: switch -> no tool call can start in any in-flight run
  idle        N runs waiting for approval: worker memory and CPU while idle
  long        a long run through continue-as-new: size of each history of the chain
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from temporalio.client import Client

from bench import results as bench_results
from bench.common import (
    CORE_LOG,
    ROOT,
    HistorySize,
    control_worker,
    fmt,
    section,
    server_address,
    table,
)
from runtime.binaries import binary

if TYPE_CHECKING:
    from temporalio.testing import WorkflowEnvironment

SECTIONS = ("history", "throughput", "policy", "latency", "kill", "idle", "long")
PEERS = {"openai-agents": "bench.peer_openai_agents", "pydantic-ai": "bench.peer_pydantic_ai"}

QUICK = dict(
    n=4, tp_runs=30, tp_steps=10, tp_rounds=2, policy_iterations=10_000, latency_samples=20, kill_runs=50,
    idle_runs=100, idle_caches="10,1000", idle_seconds=3.0, idle_approve=5,
    long_steps=1000, long_timeout=90.0,
)  # fmt: skip
FULL = dict(
    n=10, tp_runs=150, tp_steps=10, tp_rounds=3, policy_iterations=50_000, latency_samples=100, kill_runs=200,
    idle_runs=1000, idle_caches="20,1000", idle_seconds=10.0, idle_approve=20,
    long_steps=5000, long_timeout=420.0,
)  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes, about 3 minutes")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections ({', '.join(SECTIONS)})")
    p.add_argument("--skip-peers", action="store_true", help="history: measure Airlock only")
    p.add_argument("--n", type=int, help="history: calls of each kind per run (runs with 0, N and 2N)")
    p.add_argument("--tp-runs", type=int, help="throughput: runs started at once per batch")
    p.add_argument("--tp-steps", type=int, help="throughput: allowed reads per run")
    p.add_argument("--tp-rounds", type=int, help="throughput: batches of each kind, alternating")
    p.add_argument("--policy-iterations", type=int, help="policy: timed decisions per call kind")
    p.add_argument("--latency-samples", type=int, help="latency: approvals per way (signal, update)")
    p.add_argument("--kill-runs", type=int, help="kill: runs in flight when the kill switch is thrown")
    p.add_argument("--idle-runs", type=int, help="idle: runs left waiting for approval")
    p.add_argument("--idle-caches", help="idle: comma-separated max_cached_workflows values to compare")
    p.add_argument("--idle-seconds", type=float, help="idle: length of the idle interval measured")
    p.add_argument("--idle-approve", type=int, help="idle: waiting runs approved afterwards (latency)")
    p.add_argument("--long-steps", type=int, help="long: steps of the long run")
    p.add_argument("--steps-per-history", type=int, default=200, help="long: the run's steps_per_history")
    p.add_argument("--long-timeout", type=float, help="long: give up after this many seconds")
    p.add_argument("--log", help="log file (default: a new file in the temp directory)")
    p.add_argument("--json", help="also write every figure as JSON to this file")
    p.add_argument(
        "--results",
        default=str(bench_results.DEFAULT_PATH),
        help="the figures file: rewrites the blocks of the sections run, keeps the others ('' for none)",
    )
    a = p.parse_args(argv)
    for key, value in (QUICK if a.quick else FULL).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    return a


# ---- logging: everything to the log file, nothing to the terminal ---------------------------


def setup_logging(path: str) -> TextIO:
    from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

    from runtime.logging import configure_logging

    configure_logging("WARNING")
    logging.captureWarnings(True)  # the SDK's warnings (warnings.warn) go to the log file too
    stream = open(path, "a", buffering=1)  # noqa: SIM115 - kept for the process's life
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)
    core = logging.getLogger("temporalio.core")
    core.addHandler(CORE_LOG)
    Runtime.set_default(
        Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(
                    filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                    forwarding=LogForwardingConfig(logger=core),
                )
            )
        )
    )
    return stream


# ---- machine ----------------------------------------------------------------------------------


def bytecode_note() -> str:
    """Whether the workflow modules have cached bytecode: the workflow sandbox re-imports them for
    every workflow it starts, and without a cache each import compiles them from source again."""
    import importlib.util

    missing = []
    for module in ("workflows.agent_run", "bench.bare"):
        source = ROOT / f"{module.replace('.', '/')}.py"
        cached = Path(importlib.util.cache_from_source(str(source)))
        if not cached.exists() or cached.stat().st_mtime < source.stat().st_mtime:
            missing.append(module)
    if not missing:
        return "cached for the workflow modules (make bench compiles them)"
    return f"NOT cached for {', '.join(missing)}: every run compiles its workflow module (run make bench)"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory() -> str:
    try:
        with open("/proc/meminfo") as f:
            return f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
    except OSError:
        return "?"


def _os_name() -> str:
    """The distribution as well as the kernel: `platform.release()` alone names only the kernel."""
    pretty = ""
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    pretty = line.split("=", 1)[1].strip().strip('"') + "; "
                    break
    except OSError:
        pass
    return f"{pretty}{platform.system()} {platform.release()} {platform.machine()}"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def command_line() -> str:
    return " ".join(shlex.quote(x) for x in [os.path.basename(sys.executable), "-m", "bench.run", *sys.argv[1:]])


def machine_summary() -> str:
    """One line for the results file: what the figures of a section were measured on, with the
    load average as the section started (the machine may be shared)."""
    return (
        f"{_cpu_model()}, {os.cpu_count()} logical cores, {_memory()} RAM; {_os_name()}; "
        f"Python {platform.python_version()}; temporalio {_version('temporalio')}; load average {_load()}"
    )


def machine_info() -> list[tuple[str, str]]:
    try:
        cli = subprocess.run(
            [binary("temporal"), "--version"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
    except Exception as e:
        cli = f"? ({e})"
    return [
        ("command", command_line()),
        ("date (UTC)", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())),
        ("commit", bench_results.git_commit()),
        ("machine", _os_name()),
        ("cpu", f"{_cpu_model()}; {os.cpu_count()} logical cores; load average {_load()}"),
        ("memory", _memory()),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("bytecode", bytecode_note()),
        ("temporal", cli.replace("\n", "; ")),
        (
            "packages",
            ", ".join(
                f"{p} {_version(p)}"
                for p in (
                    "temporalio",
                    "pydantic",
                    "openai",
                    "openai-agents",
                    "temporalio-openai-agents",
                    "pydantic-ai-slim",
                    "psutil",
                )
            ),
        ),
    ]


# ---- figure 1: history per tool call ----------------------------------------------------------

KIND_LABEL = {"read": "allowed read", "write": "approved write", "denied": "denied call"}
MECHANISM = {
    "airlock-scripted": {
        "read": "model, validation and tool as local activities (markers); policy in workflow code",
        "write": "same + preview marker; approval = signal; timer for the approval timeout",
        "denied": "model + preview markers; policy deny in workflow code",
    },
    "airlock-activity": {
        "read": "as above, but the model is a full activity carrying the transcript (real-model path)",
        "write": "as above, model as a full activity",
        "denied": "as above, model as a full activity",
    },
    "openai-agents": {
        "read": "model activity + activity_as_tool activity",
        "write": "needs_approval: run interrupted, signal, RunState.approve, resume; no preview",
        "denied": "tool_input_guardrail reject_content (workflow code); no preview",
    },
    "pydantic-ai": {
        "read": "model activity + tool activity (TemporalDurability)",
        "write": "ApprovalRequired in a hook -> DeferredToolRequests, signal, re-run with results; no preview",
        "denied": "SkipToolExecution in a before_tool_execute hook (workflow code); no preview",
    },
}
SYSTEM_LABEL = {
    "airlock-scripted": "Airlock (scripted model)",
    "airlock-activity": "Airlock (model as activity)",
    "openai-agents": "OpenAI Agents SDK",
    "pydantic-ai": "Pydantic AI",
}


def _composition(diff: HistorySize, n: int) -> str:
    parts = []
    abbrev = {
        "MARKER_RECORDED": "marker",
        "WORKFLOW_TASK_SCHEDULED": "wft-sched",
        "WORKFLOW_TASK_STARTED": "wft-start",
        "WORKFLOW_TASK_COMPLETED": "wft-done",
        "ACTIVITY_TASK_SCHEDULED": "act-sched",
        "ACTIVITY_TASK_STARTED": "act-start",
        "ACTIVITY_TASK_COMPLETED": "act-done",
        "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES": "upsert-SA",
        "WORKFLOW_EXECUTION_SIGNALED": "signal",
        "TIMER_STARTED": "timer",
        "TIMER_CANCELED": "timer-cancel",
        "WORKFLOW_EXECUTION_COMPLETED": "result",
        "WORKFLOW_EXECUTION_STARTED": "input",
    }
    items = [kv for kv in sorted(diff.proto_by_type.items(), key=lambda kv: -abs(kv[1])) if abs(kv[1]) / n >= 50]
    for t, b in items[:4]:
        count = diff.by_type.get(t, 0) / n
        name = abbrev.get(t, t.lower())
        c = f"{count:g}x " if count else "+"
        parts.append(f"{c}{name} {b / n / 1024:.1f}K")
    return ", ".join(parts)


def _size(x: HistorySize | dict[str, Any]) -> HistorySize:
    """Airlock's sizes are measured in this process; a peer's arrive as JSON from its own."""
    return HistorySize.from_dict(x) if isinstance(x, dict) else x


def history_rows(system: str, sizes: dict[str, Any], n: int, detail: dict[str, Any] | None = None) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for kind in ("read", "write", "denied"):
        s = sizes[kind]
        base, first, second = (_size(s[k]) for k in ("base", "n", "2n"))
        d1, d2 = first - base, second - first
        e1, j1, p1 = d1.per(n)
        e2, j2, _ = d2.per(n)
        rows.append([SYSTEM_LABEL[system], KIND_LABEL[kind], e1, j1, p1, e2, j2, _composition(d1, n)])
        if detail is not None:
            detail[f"{system}/{kind}"] = {
                "events_by_type_per_call": {t: c / n for t, c in sorted(d1.by_type.items()) if c},
                "events_by_type_per_call_N_to_2N": {t: c / n for t, c in sorted(d2.by_type.items()) if c},
            }
    size, base = _size(sizes["job"]["size"]), _size(sizes["job"]["base"])
    d = size - base
    rows.append(
        [
            SYSTEM_LABEL[system],
            "3-call job (total - empty run)",
            float(d.events),
            float(d.json_bytes),
            float(d.proto_bytes),
            None,
            None,
            f"whole run: {size.events} events, {size.json_bytes / 1024:.1f} KB JSON",
        ]
    )
    return rows


def run_peer(name: str, module: str, address: str, n: int, log: TextIO) -> dict[str, Any]:
    env = dict(os.environ, OPENAI_AGENTS_DISABLE_TRACING="1", PYTHONUNBUFFERED="1")
    env.pop("OPENAI_API_KEY", None)
    log.write(f"\n---- peer {name} ----\n")
    log.flush()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--address", address, "--n", str(n)],
            stdout=subprocess.PIPE, stderr=log, text=True, timeout=600, cwd=ROOT, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "timed out after 600 s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"exit {proc.returncode}, no result (see the log)"}
    return json.loads(lines[-1])


async def section_history(client: Client, a: argparse.Namespace, log: TextIO, results: dict[str, Any]) -> None:
    from bench import airlock_history

    print(section(f"1. History per tool call (runs with 0, N={a.n} and 2N calls of one kind)"), flush=True)
    measured: dict[str, Any] = {}
    measured["airlock-scripted"] = await airlock_history.measure(client, a.n, activity_model=False)
    measured["airlock-activity"] = await airlock_history.measure(client, a.n, activity_model=True)
    errors: dict[str, str] = {}
    versions: dict[str, Any] = {}
    if not a.skip_peers:
        address = server_address(client)
        for name, module in PEERS.items():
            r = await asyncio.to_thread(run_peer, name, module, address, a.n, log)
            if r.get("ok"):
                # Reads and writes executed in the N, 2N and job runs; denied calls never reach the tool.
                want = {"orders.get_order: executed": 3 * a.n + 1, "payments.create_refund: executed": 3 * a.n + 1}
                got = r.get("tool_outcomes", {})
                if got != want:
                    errors[name] = f"tool calls did not end as planned: expected {want}, got {got}"
                    continue
                measured[name] = r["sizes"]
                versions[name] = r.get("versions")
            else:
                errors[name] = r.get("error", "?")
    rows: list[list[Any]] = []
    detail: dict[str, Any] = {}
    for system in measured:
        rows += history_rows(system, measured[system], a.n, detail)
    headers = [
        "system",
        "call",
        "events/call",
        "JSON B/call",
        "proto B/call",
        "events/call N->2N",
        "JSON B/call N->2N",
        "largest protobuf bytes per call, by event type",
    ]
    print(table(headers, rows))
    print(
        "JSON B: the history as `temporal workflow show --output json` writes it (payloads base64); proto B: protobuf.\n"
        "0->N: (run with N calls - run with none) / N. N->2N: the same from N to 2N calls; more than 0->N means a call\n"
        "costs more the longer the run is (what each model call carries). 'result' is the run's report growing per call."
    )
    for name, err in errors.items():
        print(f"  {SYSTEM_LABEL[name]}: NOT MEASURED: {err}")
    # Ratios: each system against Airlock, per kind, on JSON bytes and events (0 -> N).
    ratio_rows = []
    per = {(r[0], r[1]): r for r in rows}
    for system in measured:
        if system == "airlock-scripted":
            continue
        for kind in ("read", "write", "denied"):
            row = per[(SYSTEM_LABEL[system], KIND_LABEL[kind])]
            s = per[(SYSTEM_LABEL["airlock-scripted"], KIND_LABEL[kind])]
            t = per[(SYSTEM_LABEL["airlock-activity"], KIND_LABEL[kind])]
            ratio_rows.append(
                [SYSTEM_LABEL[system], KIND_LABEL[kind], row[2] / s[2], row[3] / s[3], row[2] / t[2], row[3] / t[3]]
            )
    print("\nRatios (system / Airlock), per call, 0 -> N:")
    print(
        table(
            [
                "system",
                "call",
                "events / scripted",
                "JSON B / scripted",
                "events / activity-model",
                "JSON B / activity-model",
            ],
            ratio_rows,
        )
    )
    print("\nHow each system does each call:")
    for system in measured:
        for kind in ("read", "write", "denied"):
            print(f"  {SYSTEM_LABEL[system]:28s} {KIND_LABEL[kind]:15s} {MECHANISM[system][kind]}")
    if versions:
        print("  peer versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
    results["history"] = {"n": a.n, "rows": rows, "errors": errors, "ratios": ratio_rows, "detail": detail}


# ---- figure 2: throughput ---------------------------------------------------------------------


async def section_throughput(client: Client, a: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench import throughput
    from runtime.settings import TOOL_THREADS, Settings

    print(
        section(
            f"2. Throughput: {a.tp_runs} runs x {a.tp_steps} allowed reads, started at once, median of {a.tp_rounds} rounds"
        ),
        flush=True,
    )
    r = await throughput.measure(client, a.tp_runs, a.tp_steps, a.tp_rounds)
    rows = []
    for kind, label in (("bare", "bare Temporal workflow (bench.bare)"), ("airlock", "Airlock AgentRun (governed)")):
        x = r[kind]
        rows.append(
            [
                label,
                x["runs_per_s"],
                x["runs_per_s"] * a.tp_steps,
                x["worker_cpu_ms_per_run"],
                x["server_cpu_ms_per_run"],
                x["single_run_ms_per_step"],
            ]
        )
    print(
        table(
            [
                "workflow",
                "runs/s",
                "tool calls/s",
                "worker+driver CPU ms/run",
                "server CPU ms/run",
                f"ms/step, 1 run of {r['single_steps']} alone",
            ],
            rows,
        )
    )
    ratios = ", ".join(f"{x:.2f}" for x in r["round_ratios"])
    print(f"\nAirlock / bare runs per second: {r['ratio']:.2f} (target >= 0.90; rounds: {ratios})")
    # Worker, driver and server share the machine's cores, so runs per second follow CPU per run;
    # the CPU figures drift less from round to round than the wall clock does.
    cpu = {k: r[k]["worker_cpu_ms_per_run"] + r[k]["server_cpu_ms_per_run"] for k in ("airlock", "bare")}
    print(
        f"CPU per run, worker+driver+server: Airlock {cpu['airlock']:.0f} ms, bare {cpu['bare']:.0f} ms; "
        f"bare / Airlock {cpu['bare'] / cpu['airlock']:.2f}"
    )
    print(
        "Both: same client, same server, worker options as worker.build_worker "
        f"({TOOL_THREADS} activity threads, {Settings().max_concurrent_workflow_tasks} workflow-task slots, "
        "SDK defaults otherwise),"
    )
    print(
        "the same number of local activities per run; the bare loop's model and tool calls run Airlock's own "
        "model.decide (scripted) and tool.orders.get_order activities."
    )
    results["throughput"] = r

    # The same measurement with Temporal's workflow sandbox off for both workers: what is left is
    # the cost of governance itself; the rest is the sandbox's per-run and per-activation work,
    # which weighs more on a larger workflow module. Airlock ships with the sandbox on.
    u = await throughput.measure(client, a.tp_runs, a.tp_steps, a.tp_rounds, sandboxed=False)
    ratios = ", ".join(f"{x:.2f}" for x in u["round_ratios"])
    print(
        f"Without the workflow sandbox (both workers): Airlock / bare {u['ratio']:.2f} (rounds: {ratios}); "
        f"worker+driver CPU ms/run {u['airlock']['worker_cpu_ms_per_run']:.0f} vs {u['bare']['worker_cpu_ms_per_run']:.0f}"
    )
    results["throughput_unsandboxed"] = u

    await _counted_workflow_code(client, a, results)


async def _counted_workflow_code(client: Client, a: argparse.Namespace, results: dict[str, Any]) -> None:
    """Figure 2 without the machine's noise: instructions of workflow code per run, on replay."""
    from bench import workflow_instructions as counted

    if counted.valgrind() is None:
        print("Workflow code per run, counted: skipped (valgrind is not installed; apt install valgrind)")
        return
    c = await counted.measure(client, a.tp_steps)
    air, bare = c["airlock"], c["bare"]
    print(
        f"Workflow code per run, counted (instructions replaying recorded histories under valgrind): "
        f"Airlock {air['per_run']:.0f} M, bare {bare['per_run']:.0f} M; bare / Airlock {c['ratio']:.2f}"
    )
    print(
        f"  once per run (sandbox, start, report) {air['once_per_run']:.0f} M vs {bare['once_per_run']:.0f} M; "
        f"each step {air['per_step']:.1f} M vs {bare['per_step']:.1f} M (from runs of {c['short']} and {c['steps']} steps)"
    )
    print(
        f"  of the once-per-run part, the sandbox importing the workflow module: {air['module_import']:.1f} M vs "
        f"{bare['module_import']:.1f} M (the same replays with that module passed through)"
    )
    results["throughput_instructions"] = c


# ---- figure 3: policy decision time -----------------------------------------------------------


def _share(part: float, whole: float | None) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "n/a"


def section_policy(a: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench import policy_timing

    print(
        section(
            f"3. Policy decision time: policy.engine on policy/example.yaml, {a.policy_iterations:,} timed calls each"
        ),
        flush=True,
    )
    r = policy_timing.measure(a.policy_iterations)
    # The shares need section 2's figures, absent when it was left out or could not run.
    tp = results.get("throughput", {})
    air = tp.get("airlock")
    step_ms = air["single_run_ms_per_step"] if air else None
    cpu_step_ms = air["worker_cpu_ms_per_run"] / tp["steps"] if air else None
    rows: list[list[Any]] = []
    for kind, x in r["kinds"].items():
        in_step_ms = x["in_step_us"][0] / 1000
        rows.append([KIND_LABEL[kind], x["outcome"], x["decide_us"][0], x["decide_us"][1], x["in_step_us"][0], x["in_step_us"][1],
                     _share(in_step_ms, step_ms), _share(in_step_ms, cpu_step_ms)])  # fmt: skip
    print(
        table(
            [
                "call",
                "decision (rule)",
                "decide p50 us",
                "p99 us",
                "as in a step p50 us",
                "p99 us",
                "share of step latency",
                "share of step CPU",
            ],
            rows,
        )
    )
    if step_ms:
        print(
            f"\nStep: {step_ms:.2f} ms wall per step of a single run alone; {cpu_step_ms:.2f} ms of worker CPU per step under load (section 2)."
        )
    print(f"perf_counter_ns itself: {r['clock_overhead_ns_p50']} ns (p50), included in every figure above.")
    # The example policies, on calls that reach every family of operator (facts, all/any,
    # regex, presence, URL and e-mail domains, links in a long text).
    examples = policy_timing.measure_examples(a.policy_iterations)
    rows = [
        row
        for name, cases in examples["policies"].items()
        for row in [
            *([name, label, x["outcome"], x["decide_us"][0], x["decide_us"][1]] for label, x in cases.items()),
            [name, "all of the above, pooled", "", *examples["pooled"][name]],
        ]
    ]
    print()
    print(table(["policy", "call", "decision (rule)", "decide p50 us", "p99 us"], rows))
    print("\n" + policy_timing.target_line(r, examples))
    r["examples"] = examples
    results["policy"] = r


# ---- figure 4: approval round trip ------------------------------------------------------------


async def section_latency(client: Client, a: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench import approval_latency

    print(
        section(f"4. Approval round trip: vote sent -> tool activity started, {a.latency_samples} approvals each"),
        flush=True,
    )
    r = await approval_latency.measure(client, a.latency_samples)
    rows = [
        ["signal approve", r["signal"]["p50_ms"], r["signal"]["p99_ms"], r["signal"]["max_ms"]],
        ["update decide (waits for its answer)", r["update"]["p50_ms"], r["update"]["p99_ms"], r["update"]["max_ms"]],
    ]
    print(table(["vote", "p50 ms", "p99 ms", "max ms"], rows))
    print(
        "Start = when the worker begins executing tool.payments.create_refund (activity interceptor, same process clock)."
    )
    results["latency"] = r


async def section_kill(client: Client, a: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench import kill_switch

    print(section(f"4b. Kill switch: switch -> no tool call can start, with {a.kill_runs} runs in flight"), flush=True)
    r = await kill_switch.measure(client, a.kill_runs)
    print(table(
        ["runs in flight", "switch update ms (no write starts after)", "writes approved after it", "started while on",
         "all acknowledged s (driver)", "last ack after s (control clock)", "ran once off (s)", "not ended on cancel"],
        [[r["runs"], r["switch_update_ms"], r["approved_after_switch"], r["calls_started_while_on"],
          r["all_acknowledged_wall_s"], r["last_ack_after_s_control_clock"],
          f"{r['ran_after_switch_off']} ({r['ran_after_switch_off_s']:.1f})", r["not_ended_on_cancel"]]],
    ))  # fmt: skip
    print("The update answers once the switch is committed to the control store, which every tool call reads as it")
    print("starts; acknowledged = the run was told, so that its status shows it (that broadcast follows the answer).")
    print("Once off: the writes approved while it held, run (the approvals stood). Runs left are cancelled; any that")
    print("has not ended 60 s later is terminated and counted (should be 0).")
    results["kill"] = r


# ---- figure 5: runs waiting for approval ------------------------------------------------------


async def section_idle(client: Client, a: argparse.Namespace, log: TextIO, results: dict[str, Any]) -> None:
    from bench import idle_runs

    caches = [int(x) for x in a.idle_caches.split(",") if x.strip()]
    print(
        section(f"5. {a.idle_runs:,} runs waiting for approval: a worker process alone, cache sizes {caches}"),
        flush=True,
    )
    r = await idle_runs.measure(client, a.idle_runs, caches, a.idle_seconds, a.idle_approve, log)
    rows = []
    for x in r:
        rows.append([
            x["cache"], x["runs"], x["reach_waiting_s"], x["rss_before_mb"], x["rss_waiting_mb"], x["rss_per_waiting_run_kb"],
            x["worker_cpu_idle_empty_s"], x["worker_cpu_idle_waiting_s"], x["server_cpu_idle_waiting_s"],
            f"{fmt(x['approve_p50_ms'])} / {fmt(x['approve_p99_ms'])} ({x['approvals']})",
        ])  # fmt: skip
    print(table([
        "max_cached_workflows", "runs waiting", "s until all wait", "RSS before MB", "RSS all waiting MB", "RSS KB/run",
        f"worker CPU s, {a.idle_seconds:g}s idle, no runs", f"worker CPU s, {a.idle_seconds:g}s idle, all waiting",
        "server CPU s, same interval", "approve p50/p99 ms (n)",
    ], rows))  # fmt: skip
    for x in r:
        if x.get("stalled"):
            print(f"  cache {x['cache']}: STALLED: {x['stalled']}")
    print(
        "RSS is the process's resident set: Python keeps memory it has used, so with a small cache it shows the high-water"
    )
    print("mark of processing, not what the waiting runs hold. CPU seconds have the OS's tick resolution (10 ms).")
    print(
        "'approve' = signal sent -> refund activity started in the worker process (wall clock); evicted runs are replayed first."
    )
    results["idle"] = r


# ---- figure 6: long run through continue-as-new -----------------------------------------------


async def section_long(client: Client, a: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench import long_run

    print(
        section(
            f"6. A {a.long_steps:,}-step run (scripted reads: distinct kb.search calls), continue-as-new every {a.steps_per_history} steps"
        ),
        flush=True,
    )
    r = await long_run.measure(client, a.long_steps, a.steps_per_history, a.long_timeout)
    runs = r["runs"]
    idx = list(range(len(runs)))
    if len(runs) > 9:
        mid = len(runs) // 2
        idx = [0, 1, mid, len(runs) - 2, len(runs) - 1]
    rows = [[f"#{i + 1}" + (" first" if i == 0 else " last" if i == len(runs) - 1 else " middle" if i == len(runs) // 2 else ""),
             runs[i]["events"], runs[i]["markers"], runs[i]["json_bytes"], runs[i]["proto_bytes"], runs[i]["carried_in_bytes"], runs[i]["last_event"]]
            for i in idx]  # fmt: skip
    print(
        table(
            ["history run", "events", "markers", "JSON bytes", "proto bytes", "carried in (input) bytes", "last event"],
            rows,
        )
    )
    print(f"\n{len(runs)} history runs; {r['seconds']:.1f} s; outcome: {r['outcome']}")
    for line in long_run_verdict(runs, a.steps_per_history):
        print(line)
    results["long"] = r


def long_run_verdict(runs: list[dict[str, Any]], steps_per_history: int) -> list[str]:
    """Whether the histories of the chain grow, and what the carried state is. A chain whose
    carried state shrinks (a scripted run's input holds the proposals still to come) has smaller
    histories as it goes: that is not growth, and is said apart from it."""
    complete = [(i, x) for i, x in enumerate(runs) if x["last_event"] == "workflow_execution_continued_as_new"]
    lines: list[str] = []
    if len(complete) < 3:
        return ["Too few full history runs to judge flatness; raise --long-steps."]
    (i_mid, mid), (i_last, last) = complete[len(complete) // 2], complete[-1]
    growth = (last["json_bytes"] - mid["json_bytes"]) / max(1, i_last - i_mid)
    carried = (last["carried_in_bytes"] - mid["carried_in_bytes"]) / max(1, i_last - i_mid)
    first = complete[0][1]
    if abs(growth) < 0.01 * last["json_bytes"] and abs(carried) < 1024:
        settled = next(
            i
            for i, x in complete
            if abs(x["carried_in_bytes"] - last["carried_in_bytes"]) <= 0.01 * last["carried_in_bytes"]
        )
        verdict = f"FLAT, from history run #{settled + 1} on"
    elif growth < 0 and carried < 0:
        verdict = "SHRINKING with the state carried in, not growing"
    else:
        verdict = "GROWING"
    lines.append(
        f"From the middle to the last full history: {growth / 1024:+,.1f} KB JSON and {carried / 1024:+,.1f} KB carried per history run "
        f"({carried / steps_per_history:+,.0f} B/step): {verdict}"
        + f". First full history {first['json_bytes'] / 1024:,.0f} KB JSON, last {last['json_bytes'] / 1024:,.0f} KB."
    )
    payloads = last.get("carried_payload_bytes") or []
    if len(payloads) >= 2:
        fields = ", ".join(f"{k} {v / 1024:,.1f} KB" for k, v in last.get("carried_memory_fields", {}).items())
        lines.append(
            f"What each later history carries in (and out again at continue-as-new): run input {payloads[0] / 1024:,.1f} KB "
            f"+ run memory {payloads[1] / 1024:,.1f} KB; largest memory fields: {fields}."
        )
        if last["carried_in_bytes"] > 0:
            share = 2 * last["carried_in_bytes"] / last["proto_bytes"]
            lines.append(f"Carried state in + out is {100 * share:.0f}% of each full history's protobuf bytes.")
    return lines


# ---- main -------------------------------------------------------------------------------------


async def start_server_quietly(log: TextIO) -> WorkflowEnvironment:
    """The dev server writes its banner to the stdout it inherits: that goes to the log."""
    from worker import start_local_server

    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(log.fileno(), 1)
    try:
        return await start_local_server()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


# The sizes each section reads, for the results file: a section's figures are read with them.
SECTION_SIZES = {
    "history": ("n",),
    "throughput": ("tp_runs", "tp_steps", "tp_rounds"),
    "policy": ("policy_iterations",),
    "latency": ("latency_samples",),
    "kill": ("kill_runs",),
    "idle": ("idle_runs", "idle_caches", "idle_seconds", "idle_approve"),
    "long": ("long_steps", "steps_per_history", "long_timeout"),
}


async def _measure(name: str, client: Client, a: argparse.Namespace, log: TextIO, results: dict[str, Any]) -> None:
    if name == "history":
        await section_history(client, a, log, results)
    elif name == "throughput":
        await section_throughput(client, a, results)
    elif name == "policy":
        section_policy(a, results)
    elif name == "latency":
        await section_latency(client, a, results)
    elif name == "kill":
        await section_kill(client, a, results)
    elif name == "idle":
        await section_idle(client, a, log, results)
    elif name == "long":
        await section_long(client, a, results)


async def run_section(
    name: str, client: Client, a: argparse.Namespace, log: TextIO, results: dict[str, Any]
) -> bench_results.SectionRun:
    """Runs one section and prints how long it took. What it printed comes back for the results
    file; `ok` is False if it could not run (it says why there, and the other sections go on)."""
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    machine = machine_summary()
    t0 = time.perf_counter()
    ok, error = True, ""
    with bench_results.captured(sys.stdout) as printed:
        try:
            await _measure(name, client, a, log, results)
        except Exception as e:
            ok, error = False, f"{type(e).__name__}: {e}"
            print(f"  SECTION {name} COULD NOT RUN: {error}"[:1200])
            log.write(f"\n---- section {name} failed ----\n{traceback.format_exc()}\n")
            results[name] = {"error": error}
        print(f"  ({name}: {time.perf_counter() - t0:.1f} s)", flush=True)
    return bench_results.SectionRun(
        name=name, ok=ok, output=printed.getvalue(), date=date, commit=a.commit, command=command_line(),
        machine=machine, sizes=", ".join(f"{k}={getattr(a, k)}" for k in SECTION_SIZES[name]), error=error,
    )  # fmt: skip


async def main(a: argparse.Namespace, log: TextIO, log_path: str) -> int:
    wanted = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        print(f"unknown sections: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    print("Airlock bench: figures measured in this one run, on one local Temporal dev server (in memory).")
    info = machine_info()
    a.commit = dict(info)["commit"]
    width = max(len(k) for k, _ in info)
    for key, value in info:
        print(f"{key.ljust(width)}  {value}")
    sizes = {k: getattr(a, k) for k in (QUICK if a.quick else FULL)}
    print("sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items()) + f", steps_per_history={a.steps_per_history}")
    results: dict[str, Any] = {"argv": sys.argv, "machine": dict(info), "sizes": sizes}
    results_path = Path(a.results) if a.results else None
    started = time.perf_counter()
    env = await start_server_quietly(log)
    failures = 0
    async with env, control_worker(env.client):
        print(f"dev server: {server_address(env.client)}")
        for name in SECTIONS:
            if name not in wanted:
                continue
            run = await run_section(name, env.client, a, log, results)
            failures += not run.ok
            # Written after each section, so that figures measured survive a later section's crash.
            if results_path is not None:
                bench_results.update(results_path, [run], SECTIONS)
    print(f"\nTotal {time.perf_counter() - started:.0f} s. Logs: {log_path}")
    if results_path is not None:
        print(f"Figures: {results_path}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(f"JSON: {a.json}")
    return 1 if failures else 0


def cli(argv: list[str] | None = None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if a.log:
        log_path = a.log
    else:
        with tempfile.NamedTemporaryFile(prefix="airlock-bench-", suffix=".log", delete=False) as f:
            log_path = f.name
    log = setup_logging(log_path)
    return asyncio.run(main(a, log, log_path))


if __name__ == "__main__":
    sys.exit(cli())
