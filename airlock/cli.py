"""`airlock`: the command line.

    airlock worker                       run a worker against TEMPORAL_ADDRESS
    airlock dev [--no-demo]              local dev server, worker and a demo run to approve
    airlock show RUN_ID | --history F    a run's flight record: timeline, approvals, diffs, undo, cost
    airlock undo RUN_ID [--as PERSON]    run the recorded compensations of a finished run
    airlock replay HISTORY.json ...      check that today's code replays these histories
    airlock replay --policy P [--model M] HISTORY.json
                                         what a new policy or model would have decided differently
    airlock audit export --since T [--workspace W]
                                         one JSON line per audit event, for a SIEM
    airlock workspace pause|resume|safe-mode-on|safe-mode-off NAME --by ADMIN [--reason R]
    airlock workspace status NAME        a workspace's switches and who acknowledged them
    airlock workspace spend NAME [--json]
    airlock workspace limits NAME [--json]  windowed limits and their counters now
                                         model spend by day, agent, requester and run
    airlock inbox --as PERSON [--workspace W]
                                         what PERSON may approve now, across runs, with diffs
    airlock approve RUN_ID APPROVAL_ID --as PERSON [--comment C]
    airlock deny RUN_ID APPROVAL_ID --as PERSON [--reason R]
                                         a vote on the exact call shown, signed with PERSON's key
    airlock keys new --as PERSON         create PERSON's signing key; prints the policy line

Exit status (docs/cli.md; `runtime.exits.ExitStatus`): 0 success; 1 the operation ran and said no
(a refused vote or switch, policy check errors, a history that does not replay); 2 bad usage or
unknown input (a run, workspace, person or file that does not exist); 3 Temporal cannot be reached;
130 interrupted (Ctrl-C). A mistake is said in one line, `airlock: ...`, on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from runtime.exits import ExitError, ExitStatus, exit_process, say
from runtime.settings import Settings, settings_error

OK, REFUSED, USAGE, UNREACHABLE, INTERRUPTED = (
    ExitStatus.OK,
    ExitStatus.REFUSED,
    ExitStatus.USAGE,
    ExitStatus.UNREACHABLE,
    ExitStatus.INTERRUPTED,
)


# How much of a name a person typed an error line quotes.
NAME_SHOWN = 120


# How long `airlock workspace` waits for the control workflow to answer a switch. It answers once
# the switch is committed to the control store, in well under a second when a worker is there.
SWITCH_WAIT_S = 60.0


class CommandError(ExitError):
    """A command's failure, said in one line; REFUSED unless told otherwise."""


async def _client(settings: Settings) -> Any:
    """A Temporal client; `TemporalUnreachable` (exit 3) when no server answers within 5 s."""
    from runtime.connection import connect_client

    return await connect_client(settings)


async def _known_run(client: Any, settings: Settings, run_id: str) -> None:
    """Says in one line when no workflow has this id, before a command acts on it."""
    from temporalio.service import RPCError, RPCStatusCode

    try:
        await client.get_workflow_handle(run_id).describe()
    except RPCError as e:
        if e.status is RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no run named {run_id} in namespace {settings.namespace}", USAGE) from None
        raise


def _policy(settings: Settings) -> Any:
    """This machine's policy (AIRLOCK_POLICY), which names the workspaces and people there are."""
    from policy import PolicyError, load_policy

    try:
        return load_policy(settings.policy_path)
    except PolicyError as e:
        raise CommandError(f"the policy does not load: {str(e).splitlines()[0]}", USAGE) from None


def _shown(value: str) -> str:
    """What a person typed, quoted in an error line and cut short: a name pasted by mistake may
    be megabytes long."""
    from workflows.entry import bounded

    return repr(bounded(value, NAME_SHOWN))


def _known_workspace(settings: Settings, name: str) -> Any:
    """The policy, once it names the workspace."""
    policy = _policy(settings)
    if name not in policy.workspaces:
        known = ", ".join(sorted(policy.workspaces)) or "none"
        raise CommandError(
            f"no workspace named {_shown(name)} in the policy {settings.policy_path} (its workspaces: {known})", USAGE
        )
    return policy


def _known_person(settings: Settings, person: str) -> None:
    if person not in _policy(settings).people:
        raise CommandError(f"no person named {_shown(person)} in the policy {settings.policy_path}", USAGE)


def _history_files(paths: list[Path]) -> None:
    for path in paths:
        if not path.is_file():
            hint = f" (a run id? `airlock show {path}` reads a run from Temporal)" if not path.suffix else ""
            raise CommandError(f"no history file {path}{hint}", USAGE)


# ---- show -----------------------------------------------------------------------------------


async def show(args: argparse.Namespace, out: TextIO) -> int:
    from airlock.show import flight_record, render
    from recorder.flight_recorder import ReplayFailed, load_history, merge, reconstruct, record_of

    try:
        if args.history:
            _history_files(args.history)
            rec = merge([await reconstruct(load_history(path)) for path in args.history])
        else:
            settings = Settings()
            client = await _client(settings)
            await _known_run(client, settings, args.run_id)
            rec = await record_of(client, args.run_id)
    except ReplayFailed as e:
        raise CommandError(str(e)) from None
    _resolve(rec)
    record = flight_record(rec)
    print(record.model_dump_json(indent=2) if args.json else render(record), file=out)
    return OK


def _resolve(rec: Any) -> None:
    """Large results live in the back-office database; show them whole when it is reachable."""
    from recorder.flight_recorder import resolve_blobs
    from tools.backoffice.db import connect

    with contextlib.suppress(Exception):
        resolve_blobs(rec, connect(Settings().db))


# ---- replay ---------------------------------------------------------------------------------


async def replay(args: argparse.Namespace, out: TextIO) -> int:
    from recorder.flight_recorder import ReplayFailed, load_history
    from recorder.flight_recorder import replay as replay_history

    _history_files(args.histories)
    if args.policy or args.model:
        return await counterfactual(args, out)
    failures = 0
    for path in args.histories:
        try:
            await replay_history(load_history(path))
            print(f"deterministic      {path}", file=out)
        except ReplayFailed as e:
            failures += 1
            print(f"NOT deterministic  {path}\n  {e}", file=out)
    print(f"{len(args.histories) - failures} of {len(args.histories)} histories replay", file=out)
    return REFUSED if failures else OK


async def counterfactual(args: argparse.Namespace, out: TextIO) -> int:
    from airlock import counterfactual as cf
    from policy import PolicyError, load_policy
    from recorder.flight_recorder import ReplayFailed, load_history, merge, reconstruct

    try:
        # Several files are the runs of one continue-as-new chain, oldest first.
        rec = merge([await reconstruct(load_history(path)) for path in args.histories])
        policy = load_policy(args.policy) if args.policy else rec.memory.context.policy
    except PolicyError as e:
        raise CommandError(f"the new policy has errors:\n{e}", USAGE) from None
    except ReplayFailed as e:
        raise CommandError(str(e)) from None
    _resolve(rec)
    if args.model:
        provider_name, _, model_name = args.model.partition(":")
        result = await cf.under_model(rec, policy, _provider(provider_name), provider_name, model_name or None)
    else:
        result = cf.under_policy(rec, policy)
    print(result.model_dump_json(indent=2) if args.json else cf.render(result), file=out)
    return OK


def _provider(name: str) -> Any:
    if name != "openai":
        raise CommandError(f"--model: unknown provider {_shown(name)}; counterfactual models: openai", USAGE)
    from activities.openai_provider import OpenAIProvider
    from tools.registry import load_registry

    settings = Settings()
    return OpenAIProvider.from_settings(settings, load_registry(settings.tool_module_list))


# ---- undo -----------------------------------------------------------------------------------


async def undo(args: argparse.Namespace, out: TextIO) -> int:
    from temporalio.client import WorkflowFailureError
    from temporalio.common import WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from contracts.undo_io import UndoReport

    settings = Settings()
    client = await _client(settings)
    # An undo of a run that does not exist would start, and fail, an UndoRun of its own.
    await _known_run(client, settings, args.run_id)
    undo_id = f"undo-{args.run_id}"
    existing = client.get_workflow_handle(undo_id, result_type=UndoReport)
    with contextlib.suppress(Exception):
        described = await existing.describe()
        if described.status is not None and described.status.name == "COMPLETED":
            report = await existing.result()
            if report.state == "completed":
                print(f"{args.run_id} is already undone by {undo_id}; nothing more to do.", file=out)
                _print_undo(report, out)
                return OK
    payload: dict[str, Any] = {"run_id": args.run_id, "mode": args.mode}
    if args.as_person:
        payload["requested_by"] = args.as_person
    try:
        handle = await client.start_workflow(
            "UndoRun",
            payload,
            id=undo_id,
            task_queue=settings.task_queue,
            result_type=UndoReport,
            static_summary=f"Undo of {args.run_id}, asked by {args.as_person or 'its requester'}",
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        raise CommandError(f"an undo of {args.run_id} is already running: {undo_id}") from None
    print(f"started {undo_id}; compensations run as {undo_id}.compensations", file=out)
    print(
        "approvals it needs show in the inbox: temporal workflow list --query "
        f'\'AirlockUndoOf="{args.run_id}" AND AirlockState="awaiting_approval"\'',
        file=out,
    )
    if not args.wait:
        return OK
    try:
        report = await handle.result()
    except WorkflowFailureError as e:
        raise CommandError(f"{undo_id} failed: {e.cause}") from None
    _print_undo(report, out)
    return OK if report.state == "completed" else REFUSED


def _print_undo(report: Any, out: TextIO) -> None:
    print(f"undo of {report.undo_of}: {report.state}", file=out)
    for s in report.undone:
        print(f"  undone step {s.step} {s.tool} with {s.compensation.tool} {s.compensation.args}", file=out)
    for n in report.not_undone:
        print(f"  NOT undone step {n.step} {n.tool}: {n.reason}", file=out)


# ---- workspace -----------------------------------------------------------------------------


async def workspace(args: argparse.Namespace, out: TextIO) -> int:
    from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
    from temporalio.common import WorkflowIDConflictPolicy

    from airlock.queue_check import queue_of, served
    from contracts.signing import sign, switch_message
    from contracts.workspace_io import SwitchResult, WorkspaceView, control_workflow_id

    settings = Settings()
    # Before anything is started: a control workflow for a workspace its policy does not know
    # would start, fail on its first task and stay behind as a failed workflow.
    policy = _known_workspace(settings, args.name)
    # Spend and the limits' counters live in the control store, where the model calls' and the
    # runs' own activities hold and settle them: Temporal is not asked. (The control workflow's
    # own spend ledger serves runs pinned before the store.)
    if args.workspace_command == "spend":
        from activities.control_store import ControlStore, SpendLedger

        ledger = SpendLedger(ControlStore.open(_existing_control_store(settings)).engine)
        _print_spend(await asyncio.to_thread(ledger.view, args.name), out, as_json=args.json)
        return OK
    if args.workspace_command == "limits":
        usage = await asyncio.to_thread(_limit_usage, policy, _existing_control_store(settings), args.name)
        _print_limits(usage, out, as_json=args.json)
        return OK
    client = await _client(settings)
    control_id = control_workflow_id(args.name)
    switching = args.workspace_command != "status"
    found = await queue_of(client, control_id)
    # A switch goes to the running workflow, or starts one on this machine's control queue; the
    # status is asked of the workflow wherever it ran (with none, `ask` says there is none).
    target: tuple[str, str] | None = None
    if switching and (found is None or not found[1]):
        target = (settings.control_task_queue or settings.task_queue, "would start")
    elif found is not None:
        target = (found[0], "runs" if found[1] else "ran")
    queue, where = target or ("", "")
    if target is not None and not await served(client, queue):
        raise CommandError(
            f"no worker serves task queue {_shown(queue)}, where {control_id} {where}: "
            f"{'the switch was not thrown' if switching else 'nothing can answer'}; start `airlock worker` with "
            f"AIRLOCK_TASK_QUEUE={_shown(queue)}, or point AIRLOCK_TASK_QUEUE and AIRLOCK_CONTROL_TASK_QUEUE here "
            "at the queues your workers serve (docs/deployment.md)",
            UNREACHABLE,
        )

    async def ask(query: str, result_type: type[Any]) -> Any:
        from temporalio.service import RPCError, RPCStatusCode

        try:
            return await client.get_workflow_handle(control_id).query(query, result_type=result_type)
        except RPCError as e:
            if e.status is RPCStatusCode.NOT_FOUND:
                raise CommandError(
                    f"workspace {_shown(args.name)} has no control workflow yet: no run has joined it and no switch "
                    "was thrown (its switches are off)"
                ) from None
            raise CommandError(f"{control_id} does not answer `{query}`: {e}") from None

    if args.workspace_command == "status":
        print((await ask("state", WorkspaceView)).model_dump_json(indent=2), file=out)
        return OK
    switch, on = {
        "pause": ("kill_switch", True),
        "resume": ("kill_switch", False),
        "safe-mode-on": ("safe_mode", True),
        "safe-mode-off": ("safe_mode", False),
    }[args.workspace_command]
    body: dict[str, Any] = {"switch": switch, "on": on, "by": args.by, "reason": args.reason}
    # Started if it is not running (on the queue checked above), then updated with a deadline: an
    # update that waits for a worker is bounded by SWITCH_WAIT_S, never left to wait for ever.
    handle = await client.start_workflow(
        "WorkspaceControl",
        args.name,
        id=control_id,
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    key = _switch_key(settings, args.by)
    if key is not None:
        # Signed over the generation the change creates, which the control workflow reports.
        view: WorkspaceView = await _asked(client, control_id, "state", WorkspaceView)
        message = switch_message(
            workspace=args.name, switch=switch, on=on, by=args.by, generation=view.switches.generation + 1
        )
        body["signature"] = sign(key, message)
    try:
        result: SwitchResult = await handle.execute_update(
            "switch", body, result_type=SwitchResult, rpc_timeout=timedelta(seconds=SWITCH_WAIT_S)
        )
    except WorkflowUpdateFailedError as e:
        raise CommandError(f"{control_id} failed the switch: {e.cause or e}") from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        # A worker polls the queue (or did a moment ago: the server remembers pollers for
        # minutes), but nothing took the update: it may have just died, or lack the workflow.
        raise CommandError(
            f"{control_id} did not answer the switch within {SWITCH_WAIT_S:.0f} s: no worker may serve task queue "
            f"{_shown(queue)} any more. The switch may still take effect once one does; "
            f"`airlock workspace status {_shown(args.name)}` shows the switches in force",
            UNREACHABLE,
        ) from None
    if not result.accepted:
        raise CommandError(f"refused: {result.reason}")
    print(
        f"{args.name}: {switch} {'on' if on else 'off'} (generation {result.generation}); "
        f"{result.runs_notified} runs notified; `airlock workspace status {args.name}` shows their acknowledgements",
        file=out,
    )
    return OK


def _switch_key(settings: Settings, person: str) -> Any:
    """The person's signing key, if this machine has one: switch changes are then signed."""
    from contracts.signing import key_path, load_key

    try:
        if not key_path(settings.keys_dir, person).exists():
            return None
        return load_key(settings.keys_dir, person)
    except ValueError as e:
        raise CommandError(str(e)) from None


async def _asked(client: Any, workflow_id: str, query: str, result_type: type[Any]) -> Any:
    """A query answered by a workflow that may still be on its first task."""
    for attempt in range(40):
        try:
            return await client.get_workflow_handle(workflow_id).query(query, result_type=result_type)
        except Exception as e:
            if attempt == 39:
                raise CommandError(f"{workflow_id} does not answer `{query}`: {e}") from None
            await asyncio.sleep(0.25)


def _existing_control_store(settings: Settings) -> str:
    """The control store setting, once a SQLite one is known to exist: reading a store that is not
    there would create an empty one and report that nothing was spent or counted."""
    setting = settings.control_db
    if "://" not in setting and not Path(setting).expanduser().exists():
        raise CommandError(
            f"no control store at {setting} (AIRLOCK_CONTROL_DB): no worker here has used it; "
            "point AIRLOCK_CONTROL_DB at the store the workers share",
            USAGE,
        )
    return setting


def _limit_usage(policy: Any, control_db: str, workspace: str) -> list[Any]:
    """The windowed limits of this machine's policy that count in `workspace`, each with its
    counters from the control store."""
    from decimal import Decimal

    from activities.limit_ledger import LimitLedger
    from contracts.policy_limits import LimitUsage, SubjectUsage

    ledger = LimitLedger.open(control_db)
    usage = []
    for tool, tool_policy in sorted(policy.tools.items()):
        for limit in tool_policy.limits:
            if limit.workspaces is not None and workspace not in limit.workspaces:
                continue
            measure = (
                f"sum of {limit.sum}" if limit.sum else f"sum of fact {limit.sum_fact}" if limit.sum_fact else "calls"
            )
            counters = [
                # Plain decimals (80, not 8E+1), as the policy writes them.
                SubjectUsage(subject=subject, committed=Decimal(f"{committed:f}"), reserved=Decimal(f"{reserved:f}"))
                for subject, committed, reserved in ledger.usage(workspace, limit.id, limit.seconds)
            ]
            usage.append(
                LimitUsage(
                    limit=limit.id,
                    tool=tool,
                    measure=measure,
                    per=limit.per,
                    window=limit.window,
                    max=limit.max,
                    unit=limit.shown_unit,
                    effect=limit.effect,
                    counters=counters,
                )
            )
    return usage


def _print_limits(usage: list[Any], out: TextIO, *, as_json: bool) -> None:
    from policy.limits import number

    if as_json:
        print(json.dumps([u.model_dump(mode="json") for u in usage], indent=2), file=out)
        return
    if not usage:
        print("no windowed limits count in this workspace (policy `limits:`)", file=out)
    for u in usage:
        unit = f" {u.unit}" if u.unit else ""
        print(
            f"{u.limit} ({u.tool}): {u.measure} per {u.per} over {u.window}, max {u.max}{unit}, then {u.effect}",
            file=out,
        )
        if not u.counters:
            print("  nothing counted in the window", file=out)
        for c in u.counters:
            used = c.committed + c.reserved
            shown = (
                f"{number(used)} of {number(u.max)}{unit} ({number(c.committed)} settled, {number(c.reserved)} held)"
            )
            print(f"  {c.subject}: {shown}", file=out)


def _print_spend(spend: Any, out: TextIO, *, as_json: bool) -> None:
    if as_json:
        print(spend.model_dump_json(indent=2), file=out)
        return
    print(f"workspace {spend.workspace}: {spend.reserved_usd:.6f} USD reserved for model calls in flight", file=out)
    if not spend.days:
        print("no model spend recorded", file=out)
    for day in spend.days:
        cap = f" of {day.cap_usd:.6f} cap" if day.cap_usd is not None else ""
        print(f"{day.day}: {day.spent_usd:.6f} USD{cap}; {day.refused} model call(s) refused", file=out)
        for title, ledger in (("agent", day.by_agent), ("requester", day.by_requester), ("run", day.by_run)):
            for name, usd in sorted(ledger.items(), key=lambda kv: -kv[1])[:20]:
                print(f"  {title:<9} {name:<40} {usd:.6f}", file=out)


# ---- votes ---------------------------------------------------------------------------------


async def approve(args: argparse.Namespace, out: TextIO) -> int:
    return await _vote(args, "approve", out)


async def deny(args: argparse.Namespace, out: TextIO) -> int:
    return await _vote(args, "deny", out)


async def _vote(args: argparse.Namespace, decision: Any, out: TextIO) -> int:
    from airlock.votes import VoteError, vote

    settings = Settings()
    client = await _client(settings)
    await _known_run(client, settings, args.run_id)
    try:
        return await vote(client, settings, args, decision, out)
    except VoteError as e:
        raise CommandError(str(e)) from None


async def keys(args: argparse.Namespace, out: TextIO) -> int:
    from airlock.votes import VoteError, keys_new

    try:
        return keys_new(Settings(), args, out)
    except VoteError as e:
        raise CommandError(str(e)) from None


# ---- inbox ---------------------------------------------------------------------------------


async def inbox(args: argparse.Namespace, out: TextIO) -> int:
    """What this person may approve now, across runs, each with its diff."""
    from contracts.models import Status
    from workflows.holds import at

    settings = Settings()
    _known_person(settings, args.as_person)
    if args.workspace:
        _known_workspace(settings, args.workspace)
    client = await _client(settings)

    # Pending approvals, not the state: a paused run's votes still count, and it says paused.
    query = 'WorkflowType="AgentRun" AND ExecutionStatus="Running" AND AirlockPendingApprovals > 0'
    if args.workspace:
        query += f' AND AirlockWorkspace="{args.workspace}"'
    shown = 0
    async for wf in client.list_workflows(query):
        try:
            # A run whose worker is gone cannot answer; the inbox moves on rather than wait. The
            # run itself says who may approve, by the policy pinned in it.
            status = await client.get_workflow_handle(wf.id).query(
                "status", result_type=Status, rpc_timeout=timedelta(seconds=2)
            )
        except Exception:  # the run moved on between the list and the query
            continue
        for p in status.pending_approvals:
            if args.as_person not in p.may_approve:
                continue
            shown += 1
            print(
                f"{wf.id}  {p.approval_id}  {p.tool}  tier {p.tier.value}, {p.approvals_still_needed} more needed, "
                f"requested by {status.requested_by}, until {at(p.deadline)}",
                file=out,
            )
            if status.held is not None and status.held.kind != "approval":
                print(f"  the run is {status.state.value}: {status.held.waiting_for}; votes still count", file=out)
            if p.reason:
                # Why it needs approval: the rule, tier or windowed limit (with its counter).
                print(f"  why: {p.reason}", file=out)
            print(f"  args: {json.dumps(p.args)}", file=out)
            for d in p.diff:
                print(f"  {d}", file=out)
            for v in p.votes:
                print(
                    f"  voted: {v.approver} {v.decision}" + (f": {json.dumps(v.comment)}" if v.comment else ""),
                    file=out,
                )
            if p.escalated_to:
                print(f"  escalated to {p.escalated_to}", file=out)
            signed = " (signed votes required)" if p.signed_votes_required else ""
            print(f"  airlock approve {wf.id} {p.approval_id} --as {args.as_person}{signed}", file=out)
    print(f"{shown} approval(s) {args.as_person} may give", file=out)
    return OK


# ---- audit export ---------------------------------------------------------------------------


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"not an ISO 8601 time: {_shown(text)} (e.g. 2026-11-01 or 2026-11-01T08:00:00Z)", USAGE
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def audit_export(args: argparse.Namespace, out: TextIO) -> int:
    from contracts.audit import RunFacts, events_for
    from recorder.flight_recorder import ReplayFailed, record_of

    since = _parse_time(args.since)
    until = _parse_time(args.until) if args.until else None
    query = ['WorkflowType="AgentRun"', f'StartTime >= "{since.isoformat()}"']
    settings = Settings()
    if args.workspace:
        _known_workspace(settings, args.workspace)
        query.append(f'AirlockWorkspace="{args.workspace}"')
    client = await _client(settings)
    target = open(args.output, "w", encoding="utf-8") if args.output else out  # noqa: SIM115
    count = 0
    try:
        async for wf in client.list_workflows(" AND ".join(query)):
            try:
                rec = await record_of(client, wf.id, undo_links=False)
            except ReplayFailed as e:
                print(f"airlock: skipping {wf.id}: {e}", file=sys.stderr)
                continue
            m = rec.memory
            facts = RunFacts(
                run_id=wf.id,
                workspace=m.input.workspace,
                agent=m.input.agent,
                requested_by=m.input.requested_by,
                policy_hash=m.context.policy_hash,
            )
            for seq, entry in enumerate(m.timeline):
                if entry.at < since or (until and entry.at >= until):
                    continue
                for event in events_for(seq, entry, facts, m.calls):
                    target.write(event.model_dump_json(exclude_none=True) + "\n")
                    count += 1
    finally:
        if target is not out:
            target.close()
    print(f"{count} audit events", file=sys.stderr)
    return OK


# ---- secrets --------------------------------------------------------------------------------

# A secret field holds a password or a token, not a document.
MAX_SECRET_CHARS = 4096


async def policy_command(args: argparse.Namespace, out: TextIO) -> int:
    """`airlock policy check FILE`: one line per finding, then a summary line."""
    from policy import PolicyError, load_policy
    from policy.check import check
    from tools.registry import load_registry

    if not args.file.is_file():
        raise CommandError(f"policy check: no policy file {args.file}", USAGE)
    try:
        policy = load_policy(args.file)
    except PolicyError as e:
        raise CommandError(f"policy check: {e}") from None
    modules = args.tools if args.tools is not None else Settings().tool_modules
    try:
        registry = load_registry([m.strip() for m in modules.split(",") if m.strip()])
    except (ImportError, ValueError) as e:
        raise CommandError(f"policy check: the tool modules do not load ({modules}): {e}") from None
    catalog = registry.catalog()
    findings = check(policy, catalog)
    for finding in findings:
        print(f"{args.file}: {finding.level}: {finding.message}", file=out)
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    print(
        f"{args.file}: {'ok' if not errors else 'FAILED'}: {errors} error(s), {warnings} warning(s); "
        f"{len(policy.agents)} agent(s), {len(catalog)} tool(s) in the catalogue",
        file=out,
    )
    return REFUSED if errors else OK


async def secrets_command(args: argparse.Namespace, out: TextIO) -> int:
    """`new-key`: a key for AIRLOCK_SECRETS_KEY. `seal`: a value read from stdin or a file, sealed
    with this machine's worker key, for a `scripted` run whose start input must not hold it."""
    from runtime.sealing import Keyring, new_key, sealing

    if args.secrets_command == "new-key":
        print(new_key(), file=out)
        return OK
    settings = Settings()
    try:
        inline = settings.secrets_key.get_secret_value() if settings.secrets_key else None
        keyring = Keyring.load(inline, settings.secrets_key_file)
    except ValueError as e:
        raise CommandError(f"AIRLOCK_SECRETS_KEY: {e}", USAGE) from None
    # Never from the command line: arguments end up in shell histories and process lists.
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    value = text.removesuffix("\n")
    if not value or len(value) > MAX_SECRET_CHARS:
        raise CommandError(f"the value to seal must be 1 to {MAX_SECRET_CHARS} characters", USAGE)
    with sealing(keyring, args.workspace) as sealer:
        print(json.dumps(sealer.seal(value)), file=out)
    return OK


# ---- entry point ----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="airlock", description="Governed AI agent runs on Temporal")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a worker against TEMPORAL_ADDRESS")
    dev = sub.add_parser("dev", help="local dev server, worker and a demo run")
    dev.add_argument("--no-demo", action="store_true", help="start no demo run")

    s = sub.add_parser("show", help="a run's flight record")
    s.add_argument("run_id", nargs="?", help="workflow id of the run")
    s.add_argument(
        "--history",
        type=Path,
        action="append",
        help="a history file (temporal workflow show --output json); repeat for each run of a "
        "continue-as-new chain, oldest first",
    )
    s.add_argument("--json", action="store_true", help="JSON for machines")

    u = sub.add_parser("undo", help="run the compensations of a finished run")
    u.add_argument("run_id")
    u.add_argument("--as", dest="as_person", help="who asks for the undo (default: the run's requester)")
    u.add_argument("--mode", choices=["approve", "auto"], default="auto")
    u.add_argument("--wait", action="store_true", help="wait for the undo to finish and print it")

    r = sub.add_parser("replay", help="replay histories against today's code")
    r.add_argument("histories", nargs="+", type=Path)
    r.add_argument("--policy", type=Path, help="counterfactual: decide again under this policy")
    r.add_argument("--model", help="counterfactual: propose again with PROVIDER[:NAME]")
    r.add_argument("--json", action="store_true")

    w = sub.add_parser("workspace", help="a workspace's switches: kill switch and safe mode")
    wsub = w.add_subparsers(dest="workspace_command", required=True)
    for name, text in [
        ("status", "switches, registered runs and acknowledgements"),
        ("spend", "model spend by day, agent, requester and run, against the daily cap"),
        ("limits", "windowed limits of the policy and their counters in the window, by subject"),
        ("pause", "kill switch: no new tool call starts in any run of the workspace"),
        ("resume", "lift the kill switch"),
        ("safe-mode-on", "read-only: every write and external call is refused with reason safe_mode"),
        ("safe-mode-off", "lift safe mode"),
    ]:
        cmd = wsub.add_parser(name, help=text)
        cmd.add_argument("name", help="workspace name, e.g. acme")
        if name in ("spend", "limits"):
            cmd.add_argument("--json", action="store_true")
        elif name not in ("status", "limits"):
            cmd.add_argument("--by", required=True, help="who throws the switch (needs the admin role)")
            cmd.add_argument("--reason", default="")

    i = sub.add_parser("inbox", help="what a person may approve now, across runs, with diffs")
    i.add_argument("--as", dest="as_person", required=True, help="the approver, e.g. u_bob")
    i.add_argument("--workspace")

    for name, text, note in [
        ("approve", "approve a pending call, signed with your key", ("--comment", "comment")),
        ("deny", "deny a pending call, signed with your key", ("--reason", "comment")),
    ]:
        v = sub.add_parser(name, help=text)
        v.add_argument("run_id", help="workflow id of the run")
        v.add_argument("approval_id", help="e.g. apr-2-0-3f9c1a2b7d (from `airlock inbox`)")
        v.add_argument("--as", dest="as_person", required=True, help="the approver, e.g. u_bob")
        v.add_argument(note[0], dest=note[1], default="")

    k = sub.add_parser("keys", help="approvers' signing keys")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kn = ksub.add_parser("new", help="create a signing key; prints the public key for the policy")
    kn.add_argument("--as", dest="as_person", required=True)

    a = sub.add_parser("audit", help="audit events")
    asub = a.add_subparsers(dest="audit_command", required=True)
    e = asub.add_parser("export", help="one JSON line per event")
    e.add_argument("--since", required=True, help="ISO 8601 time or date")
    e.add_argument("--until", help="ISO 8601 time or date (exclusive)")
    e.add_argument("--workspace")
    e.add_argument("--output", "-o", type=Path, help="write here instead of stdout")

    pol = sub.add_parser("policy", help="policy files")
    polsub = pol.add_subparsers(dest="policy_command", required=True)
    pc = polsub.add_parser(
        "check",
        help="read a policy against the tool catalogue; exit 1 on errors",
        description="Loads FILE and reads it against the tools of AIRLOCK_TOOL_MODULES (or --tools): "
        "tools nobody defined, tiers nobody can approve, tools nobody can call. Prints one line per "
        "finding; exits 0 when there is no error, 1 otherwise.",
    )
    pc.add_argument("file", type=Path)
    pc.add_argument("--tools", help="comma-separated tool modules (default: AIRLOCK_TOOL_MODULES)")

    x = sub.add_parser("secrets", help="keys and tokens for secret tool fields (docs/secrets.md)")
    xsub = x.add_subparsers(dest="secrets_command", required=True)
    xsub.add_parser("new-key", help="print a new key for AIRLOCK_SECRETS_KEY")
    xs = xsub.add_parser("seal", help="seal a value (read from stdin) into a token a script may carry")
    xs.add_argument("--workspace", required=True, help="the workspace of the run that will use it")
    xs.add_argument("--file", default="-", help="read the value from this file instead of stdin")
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]]] = {
    "show": show,
    "undo": undo,
    "replay": replay,
    "audit": audit_export,
    "workspace": workspace,
    "inbox": inbox,
    "approve": approve,
    "deny": deny,
    "keys": keys,
    "secrets": secrets_command,
    "policy": policy_command,
}


def run(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Runs one command and returns its exit status; a mistake is one line on stderr, never a
    traceback (docs/cli.md)."""
    args = parser().parse_args(argv)
    if args.command == "worker":
        from worker import serve

        return serve()
    if args.command == "show" and not (args.run_id or args.history):
        return say(CommandError("show: give a RUN_ID or --history FILE", USAGE))
    try:
        if args.command == "dev":
            from airlock.dev import dev

            # Ctrl-C once it runs stops the worker and the server: its normal end, status 0.
            asyncio.run(dev(Settings(), with_demo=not args.no_demo))
            return OK
        return asyncio.run(COMMANDS[args.command](args, out))
    except ExitError as e:
        return say(e)
    except KeyboardInterrupt:
        print("airlock: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as e:
        from pydantic import ValidationError
        from temporalio.service import RPCError, RPCStatusCode

        if isinstance(e, ValidationError) and (bad := settings_error(e)) is not None:
            return say(bad)
        if not isinstance(e, RPCError):
            raise
        address = Settings().temporal_address
        if e.status is RPCStatusCode.UNAVAILABLE:
            return say(CommandError(f"lost Temporal at {address}: {e}", UNREACHABLE))
        # Temporal said no to a request the command made; its message is the one line to read.
        return say(CommandError(f"Temporal at {address} refused the request: {e}"))


def main() -> None:
    exit_process(run())


if __name__ == "__main__":
    main()
