"""`GovernedRun`: one governed agent run, its state and its steps; `AgentRun` is its face to Temporal.

The loop: the model proposes → the arguments are validated against the tool's schema → the policy
decides (allow, needs approval, deny) with the rule that decided → for writes, a preview computes
the diff and the facts the policy needs → approvals are awaited where needed (no answer in time is
a deny) → the call executes under an idempotency key → everything is recorded. Budgets are checked
before every model call and every tool call; exhausting one ends the run with a report.

Deterministic by construction: the policy and tool catalogue are pinned into the history when the
run starts, decisions are pure functions of them, and time comes only from `workflow.now()`.

History economy: tool calls (validation, previews, reads and writes) and the scripted model run
as local activities: one marker event each, inside the current workflow task. Writes stay
exactly-once because they commit together with their idempotency key in the back-office
database, so a local activity re-executed after a crash finds its first result there. Only real
model calls are full activities: slow, rate-limited, and worth the server's own retry backoff.

The worker passes this module through its workflow sandbox (`worker.SANDBOX`), so it is imported
once per process rather than once per run; it keeps no state outside the `GovernedRun` of each
run. The replay tests and the flight recorder replay under Temporal's default sandbox, which
imports it afresh inside the sandbox's restrictions: a clock, random number or I/O call slipped
into this module fails the replay tests on any committed history that reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

# Pure modules (pydantic models and the policy's decision functions): passing them through the
# sandbox is safe because they do no I/O and hold no state that changes while a run is live.
with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    import workflows.telemetry as telemetry
    from contracts import errors, names
    from contracts.activity_io import (
        AlreadyExecuted,
        Executed,
        ExecuteOutcome,
        Held,
        Prepared,
        PrepareOutcome,
        Rejected,
        RunContext,
        Started,
        ToolCallInput,
    )
    from contracts.audit import RunFacts, events_for
    from contracts.catalog import CatalogEntry
    from contracts.hashing import call_hash, canonical_json
    from contracts.model_io import ModelDecision, ModelRequest, ProposedCall, TranscriptItem
    from contracts.models import (
        FINAL_STATES,
        CallRecord,
        CallStatus,
        DecideResult,
        Decision,
        Effect,
        Hold,
        Outcome,
        PauseSignal,
        PendingApproval,
        RefusedVote,
        RunInput,
        RunReport,
        RunState,
        Status,
        StepCost,
        TimelineEntry,
        TimelineKind,
        summarize,
    )
    from contracts.names import execute_activity_name, prepare_activity_name
    from contracts.policy import WindowLimit
    from contracts.policy_limits import LimitsHeld, ReserveLimits, SettleLimits
    from contracts.signing import resume_message, verifies
    from contracts.undo_io import UNDO_AGENT, compensation_run_id
    from contracts.validation import describe_validation_error
    from contracts.workspace_io import (
        Ack,
        Admission,
        Leave,
        RegisterRequest,
        ReserveRequest,
        ReserveResult,
        Settle,
        SpendHold,
        Switches,
        control_workflow_id,
        parse_signal,
    )
    from policy.engine import CallContext, decide, effective_mode, may_start
    from policy.limits import charges, counter_text, limits_for, seen, verdict
    from policy.switches import held_by
    from workflows import budget, holds
    from workflows.approvals import ApprovalDesk, RunBinding, VoteResult, approval_terms, parse_vote
    from workflows.budget import remaining
    from workflows.current_details import render_details
    from workflows.ending import RunEnded
    from workflows.entry import NAME_CHARS, Refusal, bounded, decode, shown_args, single, tally
    from workflows.eras import (
        BOUNDED_STEP,
        FRESH_FACTS,
        MODEL_RETRIES_SEEN,
        PAUSED_WINS,
        WINDOWED_LIMITS,
        Join,
        Publishing,
        start_era,
    )
    from workflows.memory import RunMemory, RunSnapshot
    from workflows.search_attributes import COST, PENDING, STATE, WORKSPACE
    from workflows.sizes import fit_checkpoint, fit_report, fit_timeline


class ActivityOptions(TypedDict):
    """The timeout and retries a local activity is started with (`**` into the SDK's call)."""

    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy


LOCAL = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=10)),
)
# Joining the workspace: a run may have to wait for a control workflow that is starting.
JOIN = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10), maximum_attempts=10),
)
MODEL_TIMEOUT = timedelta(minutes=2)
MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=60), maximum_attempts=6
)
# Each attempt of a model call the run retries itself (MODEL_RETRIES_SEEN), on MODEL_RETRY's terms.
ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
# Writes are local activities too: the database's idempotency ledger, not the activity's
# bookkeeping, is what makes a re-execution (after a crash, or a retry) harmless, and a local
# activity costs one history event instead of six.
WRITE = ActivityOptions(
    start_to_close_timeout=timedelta(minutes=1),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=4
    ),
)
# Arguments larger than this are refused before anything else looks at them.
MAX_ARGS_BYTES = 32_768
# A run whose state grew past this many bytes continues as new at the next step.
SEGMENT_BYTES = 512 * 1024
# Proposal arguments larger than this are kept in the timeline by hash, not in full.
TIMELINE_ARGS_BYTES = 1024
# A flood of refused messages (votes, pauses, switches, unknown signals) is counted, not kept whole:
# the first REFUSED_KEPT refused votes are kept in full (bounded), and the first REFUSALS_RECORDED
# refusals of any kind appear in the timeline; every one is counted by its kind of reason.
REFUSED_KEPT = 100
REFUSALS_RECORDED = 100
# A timeline message (derived from what a model, a tool or a sender wrote) is cut to this length.
MESSAGE_CHARS = 4000
# What the report, a query answer and a checkpoint may weigh: under Temporal's 2 MB per payload,
# with room for the envelope.
REPORT_BYTES = 1_500_000
QUERY_BYTES = 1_500_000
CHECKPOINT_BYTES = 1_500_000
# The rule a call's record names when its write was found in the idempotency ledger.
LEDGER_RULE = "ledger.already_executed"
# How a call's failure begins when its activity gave up: the write may have committed.
UNAVAILABLE = "tool unavailable after retries"
# After this many consecutive failures of a tool's activity the run stops calling it for a while.
BREAKER_FAILURES = 3
BREAKER_COOLDOWN = timedelta(minutes=5)
# Who may lift a pause besides its sender and anyone who may approve calls.
ADMIN_ROLE = "admin"
# A run held by the workspace's switches reads the control store again at least this often.
HOLD_POLL = timedelta(minutes=1)
# A call held because the control store could not be read is tried again after this long.
HOLD_RETRY = timedelta(seconds=5)
# A run that has gone on this long (by its model calls' clock) without waiting publishes its
# state, so that lists of runs show it; a shorter one publishes once, as it ends.
PUBLISH_AFTER = timedelta(seconds=2)


MAX_CALLS_PER_STEP = 32
# How many times one call may be approved and then find its facts changed before it runs.
MAX_APPROVAL_ROUNDS = 3
MAX_TIMELINE = 2000
# A model's final answer, kept in the report and the timeline, is cut to this many characters.
ANSWER_CHARS = 64_000


def _parse_pause(payload: Any) -> PauseSignal | Refusal:
    try:
        return PauseSignal.model_validate(payload)
    except ValidationError as e:
        return Refusal("malformed payload: " + describe_validation_error(e))


def approval_id_for(step: int, index: int, tool: str, args: dict[str, Any]) -> str:
    """Names the exact call: a vote for these arguments cannot be applied to others."""
    return f"apr-{step}-{index}-{call_hash(tool, args)[:10]}"


def _shown_fact(value: Any) -> str:
    return "(none)" if value is None else bounded(value if isinstance(value, str) else canonical_json(value), 80)


def _tighter(known: Switches, claim: Switches) -> Switches:
    """What a run obeys when told `claim`: anything stricter at once, nothing looser."""
    paused, safe = known.paused or claim.paused, known.safe_mode or claim.safe_mode
    if (paused, safe) == (known.paused, known.safe_mode):
        return known
    return known.model_copy(update={"paused": paused, "safe_mode": safe, "by": claim.by, "reason": claim.reason})


class GovernedRun:
    """One governed agent run: its state and its steps. `AgentRun` is its face to Temporal."""

    def __init__(self) -> None:
        self._m: RunMemory | None = None
        self._state = RunState.RUNNING
        self._desk: ApprovalDesk | None = None
        self._published: tuple[Any, ...] | None = None
        # The history length a run under PUBLISH_WHEN_SEEN saw in its first workflow task: a
        # longer one means that task has ended.
        self._first_task_length = 0
        # Votes refused before the run had started: the first REFUSED_KEPT, and counts by reason.
        self._early_refusals: list[RefusedVote] = []
        self._early_refused_by_reason: dict[str, int] = {}
        self._catalog_cache: dict[str, CatalogEntry] | None = None
        # Workspace switches (kill switch, safe mode) as last told, and the acks still in flight.
        self._switches = Switches()
        self._acks: list[asyncio.Task[None]] = []
        # Runs gated on the control store: a message said the switches changed, and the run has
        # not read the store since. Loosening waits for that reading; tightening does not.
        self._verify_pending = False
        # Why the run is held while the control store cannot be read, since when, and when it
        # tries again.
        self._held: str | None = None
        self._held_since: datetime | None = None
        self._held_retry_at: datetime | None = None
        # Since when the workspace's kill switch has held the run, and the approved write safe
        # mode holds (its tool, and since when); a failing model being retried.
        self._kill_since: datetime | None = None
        self._safe_hold: tuple[str, datetime] | None = None
        self._model_hold: Hold | None = None
        self._end_reason: str | None = None
        # The workspace a starting run is joining, and since when: what `status` says meanwhile.
        self._joining: str | None = None
        self._joining_since: datetime | None = None
        # A pause or resume that arrived before the run had started (e.g. sent with the start).
        self._early_pause: PauseSignal | None = None
        self._early_pauses: list[tuple[PauseSignal, bool]] = []
        self._early_pausing = False

    # ---- the run ---------------------------------------------------------------------------

    async def run(self, raw: Any, carried: RunMemory | None = None) -> RunReport:
        # `raw` is loosely typed on purpose: input that does not fit RunInput must fail the run
        # with a message naming the field, not fail decoding (a workflow task retried forever).
        # The era is decided before the first await, so the patch marker is among the first
        # workflow task's commands however that task is split (a query can complete it early).
        if carried is not None and workflow.info().continued_run_id is None:
            # Carried state (budgets used, decided approvals, the pinned policy) is accepted only
            # from this workflow continuing as new; anyone can start a run with a second argument.
            raise ApplicationError(
                "carried run state is accepted only from the run that continued as new; "
                "start a run with one argument, its input",
                type=errors.FORGED_CARRIED_STATE,
                non_retryable=True,
            )
        join, publishing = start_era() if carried is None else (None, "at-start")
        m = carried or await self._start(raw, join, publishing)
        self._m = m
        self._desk = ApprovalDesk(
            m.context.policy,
            m.input.requested_by,
            m.decided_approvals,
            RunBinding(workflow_id=self._workflow_id, run_id=self._chain_run_id),
        )
        self._adopt_early_refusals(m)
        if m.context.control_store:
            # What arrived before the start is a claim: it may tighten what the run read from
            # the control store, never loosen it, and it is verified at the first step.
            claim, self._switches = self._switches, m.switches
            if claim != Switches():
                self._take_claim(claim)
        elif self._switches.generation > m.switches.generation:
            m.switches = self._switches
        if not m.context.control_store:
            self._switches = m.switches
        if m.context.control_store:
            # Each in the order it came, under the same rules as once the run has started.
            for early, pausing in self._early_pauses:
                self._apply_pause(early, pausing)
        elif self._early_pause is not None:
            m.paused_by = self._early_pause.by if self._early_pausing else None
            kind: TimelineKind = "paused" if self._early_pausing else "resumed"
            self._record(kind, actor=self._early_pause.by, message=self._early_pause.reason)
        self._state = RunState.PAUSED if m.paused_by else RunState.RUNNING
        self._note_switch_times()
        if m.publish_when_seen:
            # A continued run starts with the search attributes of the run before it, which
            # published them as it continued.
            if not m.publish_by_clock:
                self._first_task_length = workflow.info().get_current_history_length()
        else:
            self._publish()
        steps_here = 0
        try:
            if m.refused_admission is not None:
                raise budget.refused_by_workspace(m.refused_admission)
            while True:
                await self._wait_while_paused()
                if self._unpublished and not m.publish_by_clock and self._history_grew():
                    self._publish()
                self._check_budget("model_call")
                if (
                    steps_here >= m.input.steps_per_history
                    or m.segment_bytes > SEGMENT_BYTES
                    or workflow.info().is_continue_as_new_suggested()
                    or (len(m.timeline) > MAX_TIMELINE and workflow.patched(BOUNDED_STEP))
                ):
                    await self._continue_as_new()
                steps_here += 1
                m.used.steps += 1
                decision = await self._ask_model()
                if self._unpublished and m.publish_by_clock and self._gone_on_since_start(decision):
                    self._publish()
                if not decision.calls:
                    raise RunEnded(RunState.COMPLETED, "the agent finished", decision.answer)
                for index, call in enumerate(decision.calls):
                    self._check_budget("tool_call")
                    await self._govern(call, index)
        except RunEnded as end:
            return await self._finish(end.state, end.reason, end.answer)
        except asyncio.CancelledError:
            if workflow.cancellation_reason() is None and workflow.unsafe.is_replaying():
                # Evicted from the worker's cache, or at the end of a replayed history of a run
                # that is still open (the flight recorder): nobody stopped it, so nothing is
                # recorded, and the state read afterwards is the one the history ends in.
                raise
            return await self._finish(RunState.STOPPED, "stopped: the workflow was cancelled")
        except ActivityError as e:
            cause = e.cause if e.cause is not None else e
            return await self._finish(RunState.FAILED, f"{e.activity_type} failed: {cause}")
        except FailureError as e:
            # The model's local activity gave up (its last failure surfaces as is).
            return await self._finish(RunState.FAILED, f"model.decide failed: {e}")

    def _history_grew(self) -> bool:
        """Before PUBLISH_BY_CLOCK: whether the history is longer than at the run's start, past
        its first workflow task. A replay may read it at another moment than the run did, when a
        local activity's result reached the workflow a task later (see `eras.PUBLISH_BY_CLOCK`)."""
        return workflow.info().get_current_history_length() != self._first_task_length

    @staticmethod
    def _gone_on_since_start(decision: ModelDecision) -> bool:
        """Since PUBLISH_BY_CLOCK: whether the model answered PUBLISH_AFTER or more after the run
        started, by the time its recorded result holds, which every replay reads the same."""
        decided_at = decision.decided_at
        return decided_at is not None and decided_at - workflow.info().workflow_start_time >= PUBLISH_AFTER

    async def _start(self, raw: Any, join: Join, publishing: Publishing) -> RunMemory:
        try:
            run_input = RunInput.model_validate(raw)
        except ValidationError as e:
            raise ApplicationError(
                "invalid run input: " + describe_validation_error(e),
                type=errors.INVALID_RUN_INPUT,
                non_retryable=True,
            ) from None
        # Joining the workspace's control plane: learn the switches in force, and be told of
        # every later change (kill switch, safe mode).
        registration = RegisterRequest(
            workspace=run_input.workspace,
            run_id=self._workflow_id,
            chain_run_id=self._chain_run_id,
            agent=run_input.agent,
            requested_by=run_input.requested_by,
        )
        admission: Admission | None = None
        self._joining, self._joining_since = run_input.workspace, workflow.now()
        if join == "in-start":
            started: Started = await workflow.execute_local_activity(
                names.RUN_START,
                registration,
                result_type=Started,
                summary=f"pin policy and tools, join workspace {run_input.workspace}",
                **JOIN,
            )
            context, admission = started.context, started.admission
        else:
            context = await workflow.execute_local_activity(
                names.RUN_PIN_CONTEXT, result_type=RunContext, summary="pin policy and tools", **LOCAL
            )
        refusal = may_start(
            context.policy, run_input.workspace, run_input.agent, run_input.requested_by, run_input.capabilities
        )
        if refusal:
            raise ApplicationError(
                f"run refused by policy {context.policy_hash}: {refusal}",
                type=errors.RUN_NOT_ALLOWED,
                non_retryable=True,
            )
        info = workflow.info()
        if (
            context.control_store
            and run_input.agent == UNDO_AGENT
            and (info.parent is None or info.workflow_id != compensation_run_id(info.parent.workflow_id))
        ):
            raise ApplicationError(
                f"run refused: the {UNDO_AGENT} agent runs only the compensations an UndoRun plans (`airlock undo`)",
                type=errors.RUN_NOT_ALLOWED,
                non_retryable=True,
            )
        m = RunMemory(
            input=run_input,
            context=context,
            mode=effective_mode(context.policy, run_input.workspace, run_input.mode, run_input.requested_by),
            started_at=workflow.now(),
            publish_when_seen=publishing != "at-start",
            publish_by_clock=publishing == "by-clock",
        )
        if join is not None and admission is None:  # not joined in `run.start`
            request = registration.model_copy(
                update={
                    "max_concurrent_runs": context.policy.workspaces[run_input.workspace].limits.max_concurrent_runs
                }
            )
            options: Any = dict(result_type=Admission, summary=f"join workspace {run_input.workspace}", **JOIN)
            if join == "local" or (join == "capped-by-activity" and request.max_concurrent_runs is None):
                # One marker event and no task of its own: the join only sends the registration.
                admission = await workflow.execute_local_activity(names.WORKSPACE_JOIN, request, **options)
            else:
                admission = await workflow.execute_activity(names.WORKSPACE_REGISTER, request, **options)
        if admission is not None:
            m.switches = Switches.model_validate(admission.model_dump(include=set(Switches.model_fields)))
            m.registered = True
            m.signs_off = admission.signs_off
            m.refused_admission = None if admission.admitted else admission.refusal
        self._m = m
        self._record(
            "run_started",
            actor=run_input.requested_by,
            message=f"goal: {run_input.goal}",
            data={
                "mode_requested": run_input.mode.value,
                "mode": m.mode.value,
                "policy_hash": context.policy_hash,
                "model": self._model_name(),
                **({"capabilities": run_input.capabilities} if run_input.capabilities is not None else {}),
                **({"rules": [r.id for r in run_input.rules]} if run_input.rules else {}),
            },
        )
        return m

    async def _continue_as_new(self) -> None:
        m = self._memory
        self._record("continued_as_new", message=f"history checkpoint after step {m.used.steps}")
        self._publish_before_waiting()
        await self._settle_acks()
        await workflow.wait_condition(workflow.all_handlers_finished)
        # The input travels inside the checkpoint; sending it twice could pass the 2 MB cap.
        checkpoint = fit_checkpoint(m.checkpoint(), CHECKPOINT_BYTES)
        if checkpoint is None:
            # A checkpoint over Temporal's payload limit would fail the workflow task forever.
            raise budget.state_too_large(CHECKPOINT_BYTES)
        workflow.continue_as_new(args=[None, checkpoint])

    async def _finish(self, state: RunState, reason: str, answer: str | None = None) -> RunReport:
        m = self._memory
        self._state, self._end_reason = state, reason
        self._tick()
        for approval_id in list(self._desk_.pending):
            self._desk_.close(approval_id, state.value)
        for call in m.calls:
            if call.status is CallStatus.AWAITING_APPROVAL:
                call.status, call.error = CallStatus.STOPPED, reason
        if any(c.limits_open for c in m.calls):
            # A call the run's end interrupted (waiting for votes, say) did not run.
            await self._settle_limits([c for c in m.calls if c.limits_open])
        self._record("run_finished", outcome=state.value, message=reason)
        await self._settle_acks()
        if m.signs_off:
            # Frees this run's slot under the workspace's concurrency cap.
            await self._tell_control(names.ControlMessages.LEAVE, Leave(run_id=self._workflow_id))
        await workflow.wait_condition(workflow.all_handlers_finished)
        executed_writes = m.executed_writes()
        report = RunReport(
            workflow_id=self._workflow_id,
            state=state,
            reason=reason,
            answer=answer,
            workspace=m.input.workspace,
            agent=m.input.agent,
            requested_by=m.input.requested_by,
            mode=m.mode,
            model=self._model_name(),
            policy_hash=m.context.policy_hash,
            started_at=m.started_at,
            finished_at=workflow.now(),
            calls=m.calls,
            changes=executed_writes,
            undo=[c.compensation for c in reversed(executed_writes) if c.compensation],
            cost_by_step=m.cost_by_step,
            used=m.used,
            limits=m.input.budget,
            refused_votes=m.refused_votes,
            refused_messages=m.refused_messages,
            refused_by_reason=m.refused_by_reason,
            runs_in_chain=m.runs_in_chain,
            earlier_calls=m.earlier_calls,
        )
        # Over Temporal's payload limit the report would fail the workflow task forever, and the
        # run would never end.
        return fit_report(report, REPORT_BYTES)

    # ---- one step ---------------------------------------------------------------------------

    async def _ask_model(self) -> ModelDecision:
        m = self._memory
        spec = m.input.model
        scripted = spec.provider == "scripted"
        request = ModelRequest(
            workflow_id=self._workflow_id,
            workspace=m.input.workspace,
            step=m.used.steps,
            provider=spec.provider,
            model_name=spec.name,
            temperature=spec.temperature,
            goal=m.input.goal,
            tool_names=[] if scripted else self._capabilities(),
            transcript=[] if scripted else m.transcript,
            scripted=spec.script[m.script_position] if scripted and m.script_position < len(spec.script) else None,
        )
        if scripted:
            decision = await workflow.execute_local_activity(
                names.MODEL_DECIDE,
                request,
                result_type=ModelDecision,
                **LOCAL,
            )
            m.script_position += 1
        elif m.context.control_store:
            self._publish_before_waiting()
            request.spend = self._spend_hold(request.step)
            decision = await self._call_model(request)
            if decision.spend_refusal is not None:
                raise budget.refused_by_workspace(decision.spend_refusal)
            m.dearest_model_call_usd = max(m.dearest_model_call_usd, decision.cost_usd)
        else:
            self._publish_before_waiting()
            reservation = await self._reserve_spend(request.step)
            cost = 0.0
            try:
                decision = await self._call_model(request)
                cost = decision.cost_usd
            finally:
                if reservation is not None:
                    await self._tell_control(names.ControlMessages.SETTLE, Settle(reservation_id=reservation, usd=cost))
            m.dearest_model_call_usd = max(m.dearest_model_call_usd, cost)
        decision, dropped = self._bounded_decision(decision)
        m.used.tokens += decision.prompt_tokens + decision.completion_tokens
        m.used.cost_usd = round(m.used.cost_usd + decision.cost_usd, 6)
        m.cost_by_step.append(
            StepCost(
                step=request.step,
                model=decision.model,
                prompt_tokens=decision.prompt_tokens,
                completion_tokens=decision.completion_tokens,
                cost_usd=decision.cost_usd,
            )
        )
        self._record(
            "model_call",
            message=decision.answer,
            data={
                "model": decision.model,
                "tokens": decision.prompt_tokens + decision.completion_tokens,
                "cost_usd": decision.cost_usd,
                "proposals": len(decision.calls),
                **({"proposals_refused": dropped} if dropped else {}),
            },
        )
        if not scripted:
            for call in decision.calls:
                m.transcript.append(
                    TranscriptItem(role="assistant", call_id=call.call_id, tool=call.tool, args=call.args)
                )
            if decision.answer and not decision.calls:
                m.transcript.append(TranscriptItem(role="assistant", content=decision.answer))
            if dropped:
                m.transcript.append(
                    TranscriptItem(
                        role="airlock",
                        content=f"{dropped} further calls of your last turn were not considered: at most {MAX_CALLS_PER_STEP} a turn",
                    )
                )
        return decision

    async def _call_model(self, request: ModelRequest) -> ModelDecision:
        """A paid model's call. Since MODEL_RETRIES_SEEN the run retries a failed attempt itself
        (the server's retry policy, attempt by attempt), so that each failure is recorded and the
        run says it is retrying instead of looking busy."""
        summary = f"step {request.step}: ask {self._model_name()}"
        if not workflow.patched(MODEL_RETRIES_SEEN):
            served: ModelDecision = await workflow.execute_activity(
                names.MODEL_DECIDE,
                request,
                result_type=ModelDecision,
                start_to_close_timeout=MODEL_TIMEOUT,
                retry_policy=MODEL_RETRY,
                summary=f"step {request.step}: {request.model_name}",
            )
            return served
        attempts = MODEL_RETRY.maximum_attempts
        delay = MODEL_RETRY.initial_interval
        since: datetime | None = None
        attempt = 1
        while True:
            try:
                decision: ModelDecision = await workflow.execute_activity(
                    names.MODEL_DECIDE,
                    request,
                    result_type=ModelDecision,
                    start_to_close_timeout=MODEL_TIMEOUT,
                    retry_policy=ONE_ATTEMPT,
                    summary=summary if attempt == 1 else f"{summary} (attempt {attempt} of {attempts})",
                )
            except ActivityError as e:
                cause = e.cause if e.cause is not None else e
                final = isinstance(cause, ApplicationError) and cause.non_retryable
                # A run retrying a broken model still ends when its wall-clock budget does.
                out_of_time = (
                    remaining(self._memory.input.budget, self._used_now()).wall_clock_s <= delay.total_seconds()
                )
                if final or attempt >= attempts or out_of_time:
                    self._model_hold = None
                    raise
                error = bounded(str(cause), 300)
                now = workflow.now()
                since = since or now
                next_at = now + delay
                self._memory.last_error = f"model {self._model_name()}: attempt {attempt} of {attempts} failed: {error}"
                self._model_hold = holds.model_retry(self._model_name(), attempt, attempts, error, since, next_at)
                self._record(
                    "model_retry",
                    outcome="retrying",
                    message=f"attempt {attempt} of {attempts} failed: {error}; next attempt at {holds.at(next_at)}",
                    data={"attempt": attempt, "attempts": attempts, "next_attempt_at": next_at.isoformat()},
                )
                self._publish_before_waiting()
                await workflow.sleep(delay, summary=f"model failed; attempt {attempt + 1} of {attempts} next")
                delay = min(delay * MODEL_RETRY.backoff_coefficient, MODEL_RETRY.maximum_interval or delay)
                attempt += 1
                continue
            self._model_hold = None
            return decision

    def _bounded_decision(self, decision: ModelDecision) -> tuple[ModelDecision, int]:
        """The decision as the run considers it: at most MAX_CALLS_PER_STEP calls (and how many
        more were refused), tool names and the answer cut to their limits. A tool name cut short
        names no tool, so that call is refused as invalid."""
        calls, dropped = decision.calls, 0
        if len(calls) > MAX_CALLS_PER_STEP and workflow.patched(BOUNDED_STEP):
            calls, dropped = calls[:MAX_CALLS_PER_STEP], len(calls) - MAX_CALLS_PER_STEP
        if dropped or any(len(c.tool) > NAME_CHARS for c in calls):
            calls = [
                c
                if len(c.tool) <= NAME_CHARS
                else c.model_copy(
                    update={
                        "tool": bounded(c.tool, NAME_CHARS),
                        "args": {},
                        "args_error": f"the tool name has {len(c.tool)} characters; the limit is {NAME_CHARS}",
                    }
                )
                for c in calls
            ]
            decision = decision.model_copy(update={"calls": calls})
        if decision.answer is not None and len(decision.answer) > ANSWER_CHARS:
            decision = decision.model_copy(update={"answer": bounded(decision.answer, ANSWER_CHARS)})
        return decision, dropped

    async def _tell_control(self, signal: str, payload: Ack | Leave | Settle) -> None:
        """A message to the workspace's control workflow whose loss must not fail the run: if the
        control workflow is gone, its replacement starts without this run's slot, reservation or
        acknowledgement."""
        handle = workflow.get_external_workflow_handle(control_workflow_id(self._memory.input.workspace))
        try:
            await handle.signal(signal, payload)
        except FailureError as e:
            workflow.logger.warning("workspace control did not take %s: %s", signal, e)

    def _spend_hold(self, step: int) -> SpendHold | None:
        """What the next paid model call holds against the workspace's daily cap (the model
        call's activity holds and settles it in the control store), or None without a cap."""
        m = self._memory
        limits = m.context.policy.workspaces[m.input.workspace].limits
        if limits.daily_spend_usd is None:
            return None
        return SpendHold(
            workspace=m.input.workspace,
            reservation_id=f"{self._workflow_id}/{self._chain_run_id}/step-{step}",
            day=workflow.now().date().isoformat(),
            run_id=self._workflow_id,
            agent=m.input.agent,
            requested_by=m.input.requested_by,
            usd=max(limits.model_call_estimate_usd, m.dearest_model_call_usd),
            cap_usd=limits.daily_spend_usd,
        )

    async def _reserve_spend(self, step: int) -> str | None:
        """Holds the next paid model call's estimated cost against the workspace's daily cap;
        ends the run `budget_exhausted` when the cap would be passed. Returns the reservation
        to settle, or None when the workspace has no spend cap."""
        m = self._memory
        limits = m.context.policy.workspaces[m.input.workspace].limits
        if limits.daily_spend_usd is None or not m.registered:
            return None
        reservation_id = f"{self._workflow_id}/{self._chain_run_id}/step-{step}"
        result: ReserveResult = await workflow.execute_activity(
            names.WORKSPACE_RESERVE,
            ReserveRequest(
                workspace=m.input.workspace,
                run_id=self._workflow_id,
                reservation_id=reservation_id,
                agent=m.input.agent,
                requested_by=m.input.requested_by,
                usd=max(limits.model_call_estimate_usd, m.dearest_model_call_usd),
                cap_usd=limits.daily_spend_usd,
            ),
            result_type=ReserveResult,
            summary=f"reserve spend for step {step}",
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5), maximum_attempts=20),
        )
        if not result.granted:
            raise budget.refused_by_workspace(result.reason)
        return reservation_id

    async def _govern(self, call: ProposedCall, index: int) -> None:
        m = self._memory
        before = len(m.calls)
        await self._govern_call(call, index)
        # The call ran, or will not: its windowed limits' charges are committed or released.
        await self._settle_limits([r for r in m.calls[before:] if r.limits_open])

    async def _govern_call(self, call: ProposedCall, index: int) -> None:
        m = self._memory
        await self._wait_while_paused()
        step = m.used.steps
        m.used.tool_calls += 1
        size = len(canonical_json(call.args).encode())
        if size > MAX_ARGS_BYTES:
            call = call.model_copy(
                update={"args": {}, "args_error": f"{size} bytes of arguments; the limit is {MAX_ARGS_BYTES}"}
            )
            size = 2
        m.segment_bytes += size
        record = CallRecord(step=step, index=index, tool=call.tool, args=call.args, status=CallStatus.INVALID)
        m.calls.append(record)
        shown = call.args if size <= TIMELINE_ARGS_BYTES else {"args_sha256": call_hash(call.tool, call.args)}
        self._record("proposal", tool=call.tool, index=index, data=shown)
        try:
            self._count_proposal(call)
        except budget.OutOfBudget as loop:
            self._reject_invalid(record, call, loop.reason)
            raise

        entry = self._catalog.get(call.tool)
        if call.args_error:
            return self._reject_invalid(record, call, f"arguments: {call.args_error}")
        if entry is None:
            known = ", ".join(self._capabilities())
            return self._reject_invalid(record, call, f"unknown tool {call.tool!r}; available: {known}")
        record.effect = entry.effect

        context = m.call_context(entry, call.args)
        if call.tool not in self._capabilities():
            # Least privilege: a tool outside the agent's capabilities is not even previewed.
            return self._refuse(record, call, decide(m.context.policy, context, safe_mode=self._switches.safe_mode))

        if (until := m.open_circuits.get(call.tool)) is not None:
            if workflow.now() < until:
                return self._fail(
                    record,
                    call,
                    f"circuit open: {call.tool} failed {BREAKER_FAILURES} times in a row; not called again before {until.isoformat()}",
                )
            del m.open_circuits[call.tool]
        key = self._idempotency_key(step, index) if entry.effect is not Effect.READ else None
        # Whether this run keeps windowed limits is asked before the preview, for the reason
        # given at FRESH_FACTS below (the SDK remembers the answer for the rest of the run).
        self._tool_has_limits(call.tool)
        try:
            prepared = await self._prepare(call, index, step, key)
        except FailureError as e:
            return self._tool_unavailable(record, call, e)
        if isinstance(prepared, Rejected):
            return self._reject_invalid(record, call, prepared.error)
        if isinstance(prepared, AlreadyExecuted):
            # Its charges may be held from the attempt that committed it (a worker killed before
            # its report): committed now, under the same key.
            record.limits_open = self._tool_has_limits(call.tool)
            return self._record_from_ledger(record, call, entry, prepared, key)
        record.args, record.diff, record.facts = prepared.args, prepared.diff, prepared.facts
        decided_on = context.model_copy(update={"args": prepared.args, "facts": prepared.facts})
        decision = decide(m.context.policy, decided_on, safe_mode=self._switches.safe_mode)
        if decision.outcome is Outcome.DENY:
            return self._refuse(record, call, decision)
        limited = self._limits(decided_on)
        if limited:
            checked = await self._hold_limits(record, call, decided_on, limited, decision)
            if checked is None:
                return None
            decision = checked
            if decision.outcome is Outcome.DENY:
                return self._refuse(record, call, decision)
        record.decision = decision
        self._record_decision(record, decision)
        rounds = 0
        while decision.outcome is Outcome.APPROVE:
            rounds += 1
            approved = await self._await_approval(record, call, decision, rounds)
            if not approved:
                return
            # Asked in the task the vote came in, before the wait reads the control store: on
            # replay a patch's answer depends on the workflow task it is asked in, and a local
            # activity's result can reach the code one task later than it was recorded in.
            fresh_facts = workflow.patched(FRESH_FACTS)
            await self._wait_while_paused()
            self._check_budget("tool_call", counting_this_call=True)
            if not fresh_facts:
                break
            fresh = await self._decide_again(record, call, entry, context, key, decision, rounds)
            if fresh is None:
                return
            if fresh is decision:  # the facts held: the approval stands
                break
            # Decided again on changed facts: allowed now, or another round of approval.
            decision = fresh
        if rounds:
            # Approved by a person: the limits' charges are held whatever the counters say now,
            # at the amounts the call runs with, so the counters reflect it.
            approved_on = context.model_copy(update={"args": record.args, "facts": record.facts})
            limited = self._limits(approved_on)
            if limited and await self._hold_limits(record, call, approved_on, limited, decision, force=True) is None:
                return
        await self._execute(record, call, entry)

    # ---- windowed limits ------------------------------------------------------------------------

    def _tool_has_limits(self, tool: str) -> bool:
        m = self._memory
        tool_policy = m.context.policy.tools.get(tool)
        return bool(
            m.context.control_store and tool_policy and tool_policy.limits and workflow.patched(WINDOWED_LIMITS)
        )

    def _limits(self, call: CallContext) -> list[WindowLimit]:
        """The windowed limits that count this call (docs/policy.md). They live in the control
        store; runs pinned before it had none."""
        m = self._memory
        if not m.context.control_store:
            return []
        limits = limits_for(m.context.policy, call)
        return limits if limits and workflow.patched(WINDOWED_LIMITS) else []

    async def _hold_limits(
        self,
        record: CallRecord,
        call: ProposedCall,
        context: CallContext,
        limits: list[WindowLimit],
        decision: Decision,
        force: bool = False,
    ) -> Decision | None:
        """Holds what the call adds to each limit's counter, checked against the limit's max in one
        transaction of the control store (all or none). Returns the decision with the counters
        taken into account, or None when the store could not be reached (the call fails: no call
        passes a limit unchecked)."""
        m = self._memory
        to_hold = charges(limits, context)
        held: LimitsHeld | None = None
        if to_hold:
            request = ReserveLimits(
                workspace=m.input.workspace,
                call_key=self._idempotency_key(record.step, record.index),
                run_id=self._workflow_id,
                tool=call.tool,
                charges=to_hold,
                force=force,
            )
            try:
                held = await workflow.execute_local_activity(
                    names.LIMITS_RESERVE,
                    request,
                    result_type=LimitsHeld,
                    summary=f"{'hold (approved)' if force else 'check and hold'} limits "
                    f"{', '.join(c.limit for c in to_hold)}",
                    **LOCAL,
                )
            except FailureError as e:
                self._fail(record, call, f"the control store could not hold the call's windowed limits: {e}")
                return None
            record.limits_open = record.limits_open or held.held
        record.limits = seen(limits, context, held)
        return decision if force else verdict(m.context.policy, decision, limits, record.limits)

    async def _settle_limits(self, records: list[CallRecord]) -> None:
        """Commits the charges of calls that ran, releases those of calls that did not. A call
        whose activity gave up may have committed: its charges stay held and count until their
        window has passed (fail closed)."""
        executed: list[str] = []
        released: list[str] = []
        for record in records:
            record.limits_open = False
            key = self._idempotency_key(record.step, record.index)
            if record.status is CallStatus.EXECUTED:
                executed.append(key)
            elif not (
                record.status is CallStatus.FAILED
                and record.idempotency_key is not None
                and (record.error or "").startswith(UNAVAILABLE)
            ):
                released.append(key)
                record.limits = [c.model_copy(update={"held": False}) for c in record.limits]
        for keys, ran in ((executed, True), (released, False)):
            if not keys:
                continue
            try:
                await workflow.execute_local_activity(
                    names.LIMITS_SETTLE,
                    SettleLimits(workspace=self._memory.input.workspace, call_keys=keys, executed=ran),
                    result_type=int,
                    summary=f"{'commit' if ran else 'release'} windowed limits of {len(keys)} call(s)",
                    **LOCAL,
                )
            except FailureError as e:
                # Left held: they count until their window has passed.
                workflow.logger.warning("windowed limits not settled: %s", e)

    async def _decide_again(
        self,
        record: CallRecord,
        call: ProposedCall,
        entry: CatalogEntry,
        context: CallContext,
        key: str | None,
        approved: Decision,
        rounds: int,
    ) -> Decision | None:
        """A call approved after a wait is previewed again just before it runs. If the facts its
        decision used have changed (a balance, what is left refundable, a recipient), it is decided
        again on the fresh ones, and an approval given for the old facts does not carry over: a call
        that still needs approval waits for a new one. Returns the decision to act on (`approved`
        itself when nothing changed), or None when the call will not run (recorded)."""
        try:
            prepared = await self._prepare(call, record.index, record.step, key)
        except FailureError as e:
            self._tool_unavailable(record, call, e)
            return None
        if isinstance(prepared, Rejected):
            self._reject_invalid(record, call, prepared.error)
            return None
        if isinstance(prepared, AlreadyExecuted):
            self._record_from_ledger(record, call, entry, prepared, key)
            return None
        if prepared.facts == record.facts:
            return approved
        changed = ", ".join(
            f"{name}: {_shown_fact(record.facts.get(name))} → {_shown_fact(prepared.facts.get(name))}"
            for name in sorted(set(record.facts) | set(prepared.facts))
            if record.facts.get(name) != prepared.facts.get(name)
        )
        record.args, record.diff, record.facts = prepared.args, prepared.diff, prepared.facts
        decision = decide(
            self._memory.context.policy,
            context.model_copy(update={"args": prepared.args, "facts": prepared.facts}),
            safe_mode=self._switches.safe_mode,
        )
        if decision.outcome is Outcome.APPROVE and rounds >= MAX_APPROVAL_ROUNDS:
            decision = decision.model_copy(
                update={
                    "outcome": Outcome.DENY,
                    "rule": "facts.unsettled",
                    "reason": f"the facts changed after each of {rounds} approvals; the call is not run",
                }
            )
        self._record(
            "decision",
            tool=record.tool,
            index=record.index,
            rule=decision.rule,
            outcome=decision.outcome.value,
            message=bounded(
                f"decided again before running: the facts changed since the approval ({changed})"
                + ("; the approval given does not carry over" if decision.outcome is Outcome.APPROVE else ""),
                MESSAGE_CHARS,
            ),
        )
        if decision.outcome is Outcome.DENY:
            record.decision, record.status, record.error = decision, CallStatus.DENIED, decision.reason
            self._tell_agent(call, f"the policy refused the call (rule {decision.rule}): {decision.reason}")
            return None
        record.decision = decision
        return decision

    async def _prepare(
        self, call: ProposedCall, index: int, step: int, key: str | None
    ) -> Prepared | Rejected | AlreadyExecuted:
        # The key goes with the preparation so that it consults the ledger first: a write that
        # committed in a workflow task lost to a crash is found, not previewed and decided again.
        # The result type is a discriminated union, which the converter decodes but the SDK's
        # signature types as `type`.
        outcome: Prepared | Rejected | AlreadyExecuted = await workflow.execute_local_activity(  # type: ignore[call-overload]
            prepare_activity_name(call.tool),
            self._call_input(call, index, step, key=key),
            result_type=PrepareOutcome,
            # A write's preview (its key names it), or a read's check of its arguments.
            summary=f"{'preview' if key else 'check'} {call.tool}({summarize(call.args)})",
            **LOCAL,
        )
        return outcome

    async def _execute(self, record: CallRecord, call: ProposedCall, entry: CatalogEntry) -> None:
        gated = self._memory.context.control_store
        while True:
            # The last gate: a switch may have been thrown while the call was being checked.
            await self._wait_while_paused()
            if held_by(paused=False, safe_mode=self._switches.safe_mode, effect=entry.effect) == "safe_mode":
                if not record.votes:
                    decision = decide(
                        self._memory.context.policy, self._memory.call_context(entry, record.args), safe_mode=True
                    )
                    return self._refuse(record, call, decision)
                # A call people already approved is held, not dropped, until safe mode ends.
                self._safe_hold = (record.tool, workflow.now())
                self._publish_before_waiting()
                if gated:
                    await self._hold_until(lambda: not self._switches.safe_mode)
                else:
                    await workflow.wait_condition(lambda: not self._switches.safe_mode)
                self._safe_hold = None
                await self._wait_while_paused()
            outcome = await self._start_call(record, call, entry, gated)
            if outcome is None:
                return
            if not isinstance(outcome, Held):
                break
            # The worker read the control store as the call was about to start, and it forbids
            # the call (or cannot be read): the run obeys that, and tries again once released.
            await self._held_by_store(outcome)
        self._memory.tool_failures.pop(call.tool, None)
        self._apply_outcome(record, call, outcome)

    async def _held_by_store(self, held: Held) -> None:
        m = self._memory
        if held.switches is not None:
            self._adopt(held.switches)
            return
        self._held = f"the control store cannot be read ({bounded(held.error, 200)}); the call waits for it"
        self._held_since = self._held_since or workflow.now()
        self._held_retry_at = workflow.now() + HOLD_RETRY
        m.last_error = self._held
        self._record("workspace_switch", outcome="control_unreachable", message=self._held)
        self._publish_before_waiting()
        await workflow.sleep(HOLD_RETRY, summary="control store unreadable: try again")
        self._held = self._held_since = self._held_retry_at = None

    async def _start_call(
        self, record: CallRecord, call: ProposedCall, entry: CatalogEntry, gated: bool
    ) -> Executed | Rejected | Held | None:
        """Runs the call's activity; None when it gave up after its retries (recorded)."""
        key = self._idempotency_key(record.step, record.index)
        if entry.effect is not Effect.READ:
            record.idempotency_key = key
        call_input = self._call_input(call, record.index, record.step, args=record.args, key=key)
        if gated:
            call_input.gate = True
        handle = workflow.start_local_activity(  # type: ignore[call-overload]  # a union result type, as above
            execute_activity_name(call.tool),
            call_input,
            result_type=ExecuteOutcome,
            summary=f"read {call.tool}({summarize(record.args)})"
            if entry.effect is Effect.READ
            else f"{call.tool}({summarize(record.args)})",
            **(LOCAL if entry.effect is Effect.READ else WRITE),
        )
        try:
            # A call already on its way is let finish and recorded, even when the run is being
            # stopped: otherwise the report would miss a change that did happen.
            outcome: Executed | Rejected | Held = await asyncio.shield(handle)
        except asyncio.CancelledError:
            with contextlib.suppress(FailureError):
                finished = await handle
                if not isinstance(finished, Held):
                    self._apply_outcome(record, call, finished)
            raise
        except FailureError as e:
            # A local activity that gave up surfaces as its last failure, not as ActivityError.
            self._tool_unavailable(record, call, e)
            return None
        return outcome

    def _idempotency_key(self, step: int, index: int) -> str:
        return f"{self._workflow_id}/{self._chain_run_id}/s{step}/c{index}"

    def _record_from_ledger(
        self, record: CallRecord, call: ProposedCall, entry: CatalogEntry, done: AlreadyExecuted, key: str | None
    ) -> None:
        """The call's write committed before a crash lost the task that made it: it is recorded as
        executed with the ledger's result, diff and facts (those of the write, not of the state it
        produced), without a new decision, approval or execution."""
        record.args, record.idempotency_key = done.args, key
        record.facts = done.executed.facts or {}
        decision = Decision(
            outcome=Outcome.ALLOW,
            rule=LEDGER_RULE,
            reason="the ledger holds this call's committed write; recorded, not decided again",
            tier=entry.tier,
        )
        record.decision = decision
        self._record_decision(record, decision)
        self._apply_outcome(record, call, done.executed.model_copy(update={"facts": None}))

    def _tool_unavailable(self, record: CallRecord, call: ProposedCall, error: FailureError) -> None:
        """The tool's activity gave up after its retries: a failed call, not a failed run. After
        repeated failures the breaker opens, so a broken tool does not burn the run's budget."""
        m = self._memory
        cause = error.cause if isinstance(error, ActivityError) and error.cause is not None else error
        failures = m.tool_failures.get(call.tool, 0) + 1
        m.tool_failures[call.tool] = failures
        note = ""
        if record.idempotency_key:
            note = f"; if it committed, the ledger holds its result under {record.idempotency_key}"
        self._fail(record, call, f"{UNAVAILABLE}: {cause}{note}")
        if failures >= BREAKER_FAILURES:
            until = workflow.now() + BREAKER_COOLDOWN
            m.open_circuits[call.tool] = until
            m.tool_failures[call.tool] = 0
            self._record(
                "circuit_open",
                tool=call.tool,
                message=f"{failures} consecutive failures; paused until {until.isoformat()}",
            )

    def _fail(self, record: CallRecord, call: ProposedCall, error: str) -> None:
        record.status, record.error = CallStatus.FAILED, error
        self._memory.last_error = f"{call.tool}: {error}"
        self._record("tool_error", tool=call.tool, index=record.index, outcome="unavailable", message=error)
        self._tell_agent(call, f"the call failed: {error}")

    def _count_proposal(self, call: ProposedCall) -> None:
        """Counts this proposal; the same call proposed too often is a loop (OutOfBudget)."""
        m = self._memory
        key = call_hash(call.tool, call.args)[:16]  # a short hash: this map rides along in checkpoints
        seen = m.proposals_seen.get(key, 0) + 1
        m.proposals_seen[key] = seen
        budget.repeated_call(m.input.budget, call.tool, seen)

    def _apply_outcome(self, record: CallRecord, call: ProposedCall, outcome: Executed | Rejected) -> None:
        if isinstance(outcome, Rejected):
            record.status, record.error = CallStatus.FAILED, outcome.error
            self._memory.last_error = f"{call.tool}: {outcome.error}"
            self._record(
                "tool_error", tool=call.tool, index=record.index, outcome=outcome.reason, message=outcome.error
            )
            self._tell_agent(call, f"the tool refused the call: {outcome.error}")
            return
        record.status, record.result, record.compensation = CallStatus.EXECUTED, outcome.result, outcome.compensation
        if outcome.diff is not None:
            record.diff = outcome.diff
        self._memory.segment_bytes += len(canonical_json(outcome.result).encode())
        self._record(
            "tool_result",
            tool=call.tool,
            index=record.index,
            outcome="deduplicated" if outcome.deduplicated else "executed",
            data=outcome.result,
        )
        self._tell_agent(call, outcome.result, role="tool_result")

    # ---- approvals --------------------------------------------------------------------------

    async def _await_approval(
        self, record: CallRecord, call: ProposedCall, decision: Decision, rounds: int = 1
    ) -> bool:
        m = self._memory
        approval_id = approval_id_for(record.step, record.index, call.tool, record.args)
        if rounds > 1:
            # A new approval for the same call, decided again on changed facts: votes for the
            # earlier one (and signatures over its id) do not count here.
            approval_id += f"-r{rounds}"
        record.approval_id, record.status = approval_id, CallStatus.AWAITING_APPROVAL
        wall_left = remaining(m.input.budget, m.used).wall_clock_s
        wait_s = min(decision.timeout_s, wall_left)
        pending = approval_terms(
            m.context.policy,
            decision,
            record,
            approval_id=approval_id,
            workspace=m.input.workspace,
            requested_at=workflow.now(),
            wait_s=wait_s,
        )
        tier = m.context.policy.tiers[decision.tier]
        escalate_s = tier.escalate_after_s if pending.escalates_at is not None else None
        # The call's record shares the vote list, so votes counted before a stop are reported.
        record.votes = pending.votes
        desk = self._desk_
        desk.open(pending)
        self._record(
            "approval_requested",
            tool=call.tool,
            index=record.index,
            approval_id=approval_id,
            rule=decision.rule,
            message=self._approval_terms(decision, pending, wait_s),
            data={"diff": [c.model_dump(mode="json") for c in record.diff]},
        )
        self._set_state(
            RunState.PAUSED if self._paused_now() and workflow.patched(PAUSED_WINS) else RunState.AWAITING_APPROVAL
        )
        try:
            if escalate_s is None:
                await workflow.wait_condition(
                    lambda: approval_id in desk.resolutions,
                    timeout=timedelta(seconds=wait_s),
                    timeout_summary=f"{approval_id}: no decision by now counts as denied",
                )
            else:
                await self._wait_with_escalation(pending, escalate_s, wait_s, tier.escalate_to or "")
        except TimeoutError:
            desk.resolutions[approval_id] = ("denied", "")
            if wait_s < decision.timeout_s:
                desk.close(approval_id, "expired")
                record.votes = pending.votes
                raise budget.wall_clock_ran_out_awaiting(approval_id) from None
            outcome, reason = "denied", f"no approval within {decision.timeout_s}s: the call counts as denied"
        else:
            outcome, reason = desk.resolutions[approval_id]
        desk.close(approval_id, outcome)
        record.votes = pending.votes
        self._set_state(RunState.PAUSED if m.paused_by else RunState.RUNNING)
        self._record(
            "approval_resolved",
            tool=call.tool,
            index=record.index,
            approval_id=approval_id,
            outcome=outcome,
            message=reason,
            data={"waited_s": (workflow.now() - pending.requested_at).total_seconds()},
        )
        if outcome == "approved":
            return True
        record.status = CallStatus.REJECTED
        record.error = reason
        self._tell_agent(call, f"the call was not approved: {reason}")
        return False

    async def _wait_with_escalation(self, pending: PendingApproval, escalate_s: int, wait_s: float, role: str) -> None:
        """Waits for the votes; past `escalate_s` holders of `role` may decide too (recorded).
        Raises TimeoutError at `wait_s`, like the plain wait."""
        desk = self._desk_
        approval_id = pending.approval_id
        try:
            await workflow.wait_condition(
                lambda: approval_id in desk.resolutions,
                timeout=timedelta(seconds=escalate_s),
                timeout_summary=f"{approval_id}: escalate to {role}",
            )
            return
        except TimeoutError:
            pass
        desk.escalate(approval_id, role)
        self._record(
            "approval_escalated",
            tool=pending.tool,
            index=pending.index,
            approval_id=approval_id,
            message=f"no decision within {escalate_s}s: holders of role {role} may now decide "
            f"(roles: {', '.join(pending.approver_roles)}); denied at {pending.deadline.isoformat()}",
        )
        await workflow.wait_condition(
            lambda: approval_id in desk.resolutions,
            timeout=timedelta(seconds=wait_s - escalate_s),
            timeout_summary=f"{approval_id}: no decision by now counts as denied",
        )

    def decide_update(self, args: Sequence[Any]) -> DecideResult:
        result = self.take_vote(args, None, via="update")
        return DecideResult(
            accepted=result.accepted,
            reason=result.reason,
            approval_id=result.approval_id,
            approvals_still_needed=result.still_needed,
        )

    def take_vote(self, args: Sequence[Any], decision: Literal["approve", "deny"] | None, via: str) -> VoteResult:
        """A vote as sent: `args` are the message's arguments, exactly one expected."""
        payload = single(args)
        parsed = payload.reason if isinstance(payload, Refusal) else parse_vote(payload, decision)
        if isinstance(parsed, str):
            result = VoteResult(False, bounded(parsed), None, None)
        elif self._desk is None or self._state in FINAL_STATES:
            result = VoteResult(
                False, f"unknown approval id {parsed.approval_id!r}", parsed.approval_id, parsed.approver
            )
        else:
            result = self._desk.vote(parsed, workflow.now())
        if result.accepted and not isinstance(parsed, str):
            how = f"via {via}" + (", signed" if result.signed else "")
            if result.still_needed:
                how += f"; {result.still_needed} more needed"
            self._record(
                "approval_vote",
                approval_id=result.approval_id,
                actor=result.approver,
                outcome=parsed.decision,
                # The approver's words belong to the record as much as the vote: show, audit.
                message=f"{how}; {'comment' if parsed.decision == 'approve' else 'reason'}: {parsed.comment}"
                if parsed.comment
                else how,
                data={"comment": parsed.comment} if parsed.comment else None,
            )
        else:
            self._refuse_vote(result.approval_id, result.approver, result.reason or "refused", shown_args(args), via)
        return result

    def unknown_signal(self, name: str, args: Sequence[Any]) -> None:
        """A signal of a name this run does not know: nothing changes, and it is recorded as a
        refused vote with its name, so that an approver who misspelled `approve` sees that
        nothing counted (status, timeline, report)."""
        payload = decode(args[0]) if len(args) == 1 else None
        fields = payload if isinstance(payload, dict) else {}
        approval_id, approver = (fields.get(k) for k in ("approval_id", "approver"))
        reason = (
            f"unknown signal {bounded(name, NAME_CHARS)!r}: nothing was counted; "
            "this run takes the signals approve, deny, pause, resume, workspace_switch"
        )
        self._refuse_vote(
            bounded(approval_id, NAME_CHARS) if isinstance(approval_id, str) else None,
            bounded(approver, NAME_CHARS) if isinstance(approver, str) else None,
            reason,
            shown_args(args),
            "signal",
        )
        if self._m is not None:
            self._m.last_error = reason

    def message_refused(self, name: str, reason: str) -> None:
        """A control message whose arguments could not be read: nothing changes; it is recorded
        (while the record of refusals is not full) and counted."""
        if self._m is None:
            return
        text = bounded(f"{name} ignored: {reason}")
        self._m.last_error = text
        self._note_refusal(text, "workspace_switch", outcome="refused", message=text)

    def _refuse_vote(self, approval_id: str | None, approver: str | None, reason: str, shown: str, via: str) -> None:
        refused = RefusedVote(
            at=workflow.now(),
            approval_id=approval_id,
            approver=approver,
            reason=bounded(reason),
            # Kept as bounded text: a refused payload is evidence, not a way to bloat the run.
            payload=shown,
        )
        workflow.logger.warning("vote refused: %s", refused.reason)
        if self._m is None:
            tally(self._early_refused_by_reason, refused.reason)
            if len(self._early_refusals) < REFUSED_KEPT:
                self._early_refusals.append(refused)
            return
        m = self._m
        if len(m.refused_votes) < REFUSED_KEPT:
            m.refused_votes.append(refused)
            m.segment_bytes += len(refused.payload or "") + 200
        self._note_refusal(
            refused.reason,
            "approval_refused",
            approval_id=approval_id,
            actor=approver,
            message=f"via {via}: {refused.reason}",
        )

    def _note_refusal(self, reason: str, kind: TimelineKind, **entry: Any) -> None:
        """Counts a refused message by its kind of reason; the first REFUSALS_RECORDED of a run's
        history are also recorded in its timeline, and the next one says that the rest are only
        counted."""
        m = self._memory
        m.refused_messages += 1
        tally(m.refused_by_reason, reason)
        if m.refused_messages <= REFUSALS_RECORDED:
            self._record(kind, **entry)
        elif m.refused_messages == REFUSALS_RECORDED + 1:
            self._record(
                kind,
                outcome="summarised",
                message=f"more than {REFUSALS_RECORDED} refused messages: the rest are counted by reason "
                "(status and report: refused_by_reason), not recorded one by one",
            )

    def _adopt_early_refusals(self, m: RunMemory) -> None:
        """Votes refused before the run had started join its record, bounded like the rest."""
        m.refused_votes.extend(self._early_refusals[: max(0, REFUSED_KEPT - len(m.refused_votes))])
        for reason, count in self._early_refused_by_reason.items():
            m.refused_messages += count
            tally(m.refused_by_reason, reason, count)
        self._early_refusals, self._early_refused_by_reason = [], {}

    # ---- pause, resume ----------------------------------------------------------------------

    def pause_signal(self, payload: Any, pausing: bool) -> None:
        signal = payload if isinstance(payload, Refusal) else _parse_pause(payload)
        if isinstance(signal, Refusal):
            if self._m is not None:
                self._m.last_error = bounded(f"{'pause' if pausing else 'resume'} ignored: {signal.reason}")
                self._note_refusal(
                    self._m.last_error,
                    "paused" if pausing else "resumed",
                    outcome="refused",
                    message=self._m.last_error,
                )
            return
        if self._m is None:
            self._early_pause, self._early_pausing = signal, pausing
            self._early_pauses.append((signal, pausing))
            return
        self._apply_pause(signal, pausing)

    def _apply_pause(self, signal: PauseSignal, pausing: bool) -> None:
        if self._state in FINAL_STATES:
            return
        m = self._memory
        if m.context.control_store:
            if pausing and m.paused_by is not None:
                # Already paused: the pause stays its first sender's, so that pausing again
                # under another name cannot make that name the one allowed to resume.
                self._record("paused", actor=signal.by, outcome="already_paused", message=signal.reason)
                return
            if not pausing and (refusal := self._resume_refusal(signal)) is not None:
                m.last_error = f"resume by {signal.by} refused: {refusal}"
                self._record("resumed", actor=signal.by, outcome="refused", message=refusal)
                return
            if pausing:
                m.pauses += 1
        m.paused_by = signal.by if pausing else None
        m.paused_at, m.pause_reason = (workflow.now(), bounded(signal.reason, 200)) if pausing else (None, "")
        self._record("paused" if pausing else "resumed", actor=signal.by, message=signal.reason)
        if self._state in (RunState.RUNNING, RunState.PAUSED) and not workflow.patched(PAUSED_WINS):
            self._set_state(RunState.PAUSED if pausing else RunState.RUNNING)
        else:
            self._publish_pause_state()

    def _resume_refusal(self, signal: PauseSignal) -> str | None:
        """Why this person may not lift the run's pause, or None. Resuming loosens the run: the
        person who paused it, an admin or anyone who may approve calls may do it, and where the
        workspace requires signed approvals only with their signature over this pause."""
        m = self._memory
        if m.paused_by is None:
            return None
        policy = m.context.policy
        may = {ADMIN_ROLE, *(role for tier in policy.tiers.values() for role in tier.roles)}
        if signal.by != m.paused_by and not (policy.roles_of(signal.by) & may):
            return f"the run was paused by {m.paused_by}; only they, an admin or an approver may resume it"
        if not policy.workspaces[m.input.workspace].signed_approvals:
            return None
        if signal.signature is None:
            return f"workspace {m.input.workspace} requires a resume signed by its sender's key"
        message = resume_message(workflow_id=self._workflow_id, run_id=self._chain_run_id, by=signal.by, pause=m.pauses)
        person = policy.people.get(signal.by)
        if person is None or not verifies(person.keys, message, signal.signature):
            return f"the signature is not {signal.by}'s over resuming pause {m.pauses} of this run"
        return None

    async def _wait_while_paused(self) -> None:
        m = self._memory
        if m.context.control_store:
            await self._verify_switches()
        if m.paused_by is None and not self._switches.paused:
            return
        self._set_state(RunState.PAUSED)
        if m.context.control_store:
            self._publish_before_waiting()
            await self._hold_until(lambda: m.paused_by is None and not self._switches.paused)
        else:
            await workflow.wait_condition(lambda: m.paused_by is None and not self._switches.paused)
        self._set_state(RunState.RUNNING)

    # ---- the workspace control plane --------------------------------------------------------

    def workspace_switch(self, payload: Any) -> None:
        if (switches := parse_signal(Switches, payload)) is None:
            return
        if self._m is not None and not self._m.context.control_store:
            return self._trust_switches(switches)
        # Anyone can send this signal. A run gated on the control store takes it as a claim: it
        # obeys at once what it tightens, and reads the store before it obeys anything looser.
        if self._m is None:
            self._switches = _tighter(self._switches, switches)
        else:
            self._take_claim(switches)
        self._acks.append(asyncio.create_task(self._ack(switches.generation)))

    def _take_claim(self, claim: Switches) -> None:
        self._verify_pending = True
        tighter = _tighter(self._switches, claim)
        if tighter == self._switches:
            return
        self._switches = tighter
        self._record(
            "workspace_switch",
            actor=claim.by,
            outcome=f"paused={tighter.paused} safe_mode={tighter.safe_mode}",
            message=f"obeyed at once, to be confirmed by the control store: {claim.reason}",
        )
        self._publish_pause_state()

    async def _verify_switches(self) -> None:
        """Reads the switches in force from the control store, if a message said they changed:
        only this reading may lift a kill switch or end safe mode in the run. While the store
        cannot be read the run keeps the stricter of what it knows, and says why it is held."""
        m = self._memory
        if not m.context.control_store or not self._verify_pending:
            return
        self._verify_pending = False
        try:
            truth: Switches = await workflow.execute_local_activity(
                names.WORKSPACE_SWITCHES, m.input.workspace, result_type=Switches, summary="switches in force", **LOCAL
            )
        except FailureError as e:
            self._held = f"the control store cannot be read ({bounded(str(e), 200)}); the run waits for it"
            self._held_since = self._held_since or workflow.now()
            m.last_error = self._held
            self._verify_pending = True
            return
        self._held = self._held_since = None
        self._adopt(truth)

    def _adopt(self, truth: Switches) -> None:
        """The switches as the control store holds them: what the run obeys from now on."""
        m = self._memory
        if truth == self._switches and truth == m.switches:
            return
        changed = (truth.paused, truth.safe_mode) != (self._switches.paused, self._switches.safe_mode)
        self._switches = m.switches = truth
        if changed:
            self._record(
                "workspace_switch",
                actor=truth.by,
                outcome=f"paused={truth.paused} safe_mode={truth.safe_mode}",
                message=f"confirmed by the control store (generation {truth.generation}): {truth.reason}",
            )
        self._publish_pause_state()

    async def _hold_until(self, released: Callable[[], bool]) -> None:
        """Waits until `released()`, reading the control store whenever a message says the
        switches changed, and every HOLD_POLL in any case: a run whose control workflow was lost
        may never be told that a switch was lifted."""
        while not released():
            try:
                await workflow.wait_condition(
                    lambda: released() or self._verify_pending,
                    timeout=HOLD_POLL,
                    timeout_summary="read the control store again",
                )
            except TimeoutError:
                self._verify_pending = True
            await self._verify_switches()

    def _trust_switches(self, switches: Switches) -> None:
        """Runs pinned before the control store obeyed the newest generation they were sent."""
        if switches.generation < self._switches.generation:
            return
        if switches.generation > self._switches.generation:
            self._switches = switches
            if self._m is not None:
                self._m.switches = switches
                self._record(
                    "workspace_switch",
                    actor=switches.by,
                    outcome=f"paused={switches.paused} safe_mode={switches.safe_mode}",
                    message=switches.reason,
                )
                self._publish_pause_state()
        # Acknowledged from here on: every tool call checks these switches before it starts. A
        # generation already read at registration is acknowledged too: the control workflow may
        # have counted the registration before the switch.
        self._acks.append(asyncio.create_task(self._ack(switches.generation)))

    def _publish_pause_state(self) -> None:
        self._note_switch_times()
        paused = self._paused_now()
        if self._desk_.pending and self._state in (RunState.AWAITING_APPROVAL, RunState.PAUSED):
            if self._state is RunState.AWAITING_APPROVAL and paused and workflow.patched(PAUSED_WINS):
                # A paused run is reported paused, also while it waits for votes (which count).
                self._set_state(RunState.PAUSED)
            elif self._state is RunState.PAUSED and not paused:
                self._set_state(RunState.AWAITING_APPROVAL)
        elif self._state in (RunState.RUNNING, RunState.PAUSED):
            self._set_state(RunState.PAUSED if paused else RunState.RUNNING)

    def _paused_now(self) -> bool:
        return self._memory.paused_by is not None or self._switches.paused

    def _note_switch_times(self) -> None:
        """Since when the kill switch has held this run, for the `held` answer."""
        if not self._switches.paused:
            self._kill_since = None
        elif self._kill_since is None:
            self._kill_since = workflow.now()

    async def _ack(self, generation: int) -> None:
        # A switch can arrive before the run has started; the ack waits for it.
        await workflow.wait_condition(lambda: self._m is not None)
        await self._tell_control(names.ControlMessages.ACK, Ack(run_id=self._workflow_id, generation=generation))

    async def _settle_acks(self) -> None:
        """Acknowledgements still in flight are sent before the run ends or continues as new."""
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)

    # ---- queries ----------------------------------------------------------------------------

    def status(self) -> Status:
        m = self._memory
        used = self._used_now()
        return Status(
            workflow_id=self._workflow_id,
            state=self._state,
            step=m.used.steps,
            mode=m.mode,
            used=used,
            left=remaining(m.input.budget, used),
            limits=m.input.budget,
            pending_approvals=[
                p.model_copy(update={"may_approve": self._desk_.may_approve(p)}) for p in self._desk_.pending.values()
            ],
            paused_by=m.paused_by
            or (f"{self._switches.by} (workspace kill switch)" if self._switches.paused else None),
            last_error=bounded(m.last_error) if m.last_error else m.last_error,
            policy_hash=m.context.policy_hash,
            open_circuits={t: u for t, u in m.open_circuits.items() if u > workflow.now()},
            chain_run_id=self._chain_run_id,
            requested_by=m.input.requested_by,
            refused_messages=m.refused_messages,
            refused_by_reason=m.refused_by_reason,
            held=self.hold(),
        )

    def hold(self) -> Hold | None:
        """What holds the run now, if anything (see `workflows.holds`)."""
        if self._m is None or self._desk is None or self._state in FINAL_STATES:
            return None
        # No clock here: the flight recorder reads this outside any workflow, after a replay.
        m, now = self._m, self._m.started_at
        found: list[Hold] = []
        if self._switches.paused:
            found.append(
                holds.kill_switch(m.input.workspace, self._switches.by, self._kill_since or now, self._switches.reason)
            )
        if m.paused_by is not None:
            found.append(holds.paused(m.paused_by, m.paused_at or m.started_at, m.pause_reason))
        if self._held is not None:
            found.append(holds.control_store(self._held, self._held_since or now, self._held_retry_at))
        if self._safe_hold is not None:
            found.append(holds.safe_mode(m.input.workspace, *self._safe_hold))
        found += [holds.approval(p, self._desk.may_approve(p), self._workflow_id) for p in self._desk.pending.values()]
        if self._model_hold is not None:
            found.append(self._model_hold)
        return holds.first(found)

    def current_details(self) -> str:
        """The Temporal Web UI's "current details" of this run, rendered when someone looks."""
        if self._m is None:
            return "**starting**: pinning the policy and joining the workspace's control plane"
        return render_details(
            state=self._state,
            workspace=self._m.input.workspace,
            goal=self._m.input.goal,
            hold=self.hold(),
            pending=list(self._desk.pending.values()) if self._desk else [],
            last_error=self._m.last_error,
            end_reason=self._end_reason,
        )

    def timeline(self) -> list[TimelineEntry]:
        return fit_timeline(self._memory.timeline, QUERY_BYTES)

    # ---- helpers ----------------------------------------------------------------------------

    def _starting_message(self) -> str:
        """What a run that has not started yet says it is doing, and what may hold it."""
        if self._joining is None:
            return "the run is starting; ask again in a moment"
        return (
            f"the run is starting: it pins its policy and joins workspace {self._joining}'s control plane "
            f"(since {holds.at(self._joining_since or workflow.now())}); if it stays so, the worker cannot reach "
            "the control store or the control workflow, and its log says which"
        )

    @property
    def _memory(self) -> RunMemory:
        if self._m is None:
            raise ApplicationError(self._starting_message(), type=errors.NOT_STARTED)
        return self._m

    @property
    def _desk_(self) -> ApprovalDesk:
        if self._desk is None:
            raise ApplicationError(self._starting_message(), type=errors.NOT_STARTED)
        return self._desk

    @property
    def _chain_run_id(self) -> str:
        info = workflow.info()
        return info.first_execution_run_id or info.run_id

    @property
    def _workflow_id(self) -> str:
        pinned = self._m.context.workflow_id if self._m is not None else ""
        return pinned or workflow.info().workflow_id

    @property
    def _catalog(self) -> dict[str, CatalogEntry]:
        if self._catalog_cache is None:
            self._catalog_cache = {e.name: e for e in self._memory.context.catalog}
        return self._catalog_cache

    def _capabilities(self) -> list[str]:
        m = self._memory
        agent = m.context.policy.agents.get(m.input.agent)
        scope = m.input.capabilities
        # What the model is offered: the agent's capabilities, narrowed to the run's scope.
        return [
            t for t in (agent.capabilities if agent else []) if t in self._catalog and (scope is None or t in scope)
        ]

    def _tags(self) -> dict[str, str]:
        m = self._memory
        return {
            "workflow_id": self._workflow_id,
            "workspace": m.input.workspace,
            "agent": m.input.agent,
        }

    def _model_name(self) -> str:
        spec = self._memory.input.model
        return spec.provider if not spec.name else f"{spec.provider}:{spec.name}"

    def _call_input(
        self, call: ProposedCall, index: int, step: int, args: dict[str, Any] | None = None, key: str | None = None
    ) -> ToolCallInput:
        return ToolCallInput(
            workflow_id=self._workflow_id,
            workspace=self._memory.input.workspace,
            step=step,
            index=index,
            tool=call.tool,
            args=call.args if args is None else args,
            idempotency_key=key,
            requested_by=self._memory.input.requested_by,
            agent=self._memory.input.agent,
        )

    def _used_now(self) -> Any:
        m = self._memory
        elapsed = (workflow.now() - m.started_at).total_seconds()
        return m.used.model_copy(update={"wall_clock_s": elapsed})

    def _tick(self) -> None:
        m = self._memory
        m.used.wall_clock_s = (workflow.now() - m.started_at).total_seconds()

    def _check_budget(self, before: Literal["model_call", "tool_call"], counting_this_call: bool = False) -> None:
        m = self._memory
        self._tick()
        used = m.used
        if counting_this_call:
            # The call was counted when proposed; it is the one about to run, so do not let it
            # exhaust the budget it is already inside.
            used = used.model_copy(update={"tool_calls": used.tool_calls - 1})
        budget.check(m.input.budget, used, before=before, model_spends=m.input.model.provider != "scripted")

    def _reject_invalid(self, record: CallRecord, call: ProposedCall, error: str) -> None:
        record.status, record.error = CallStatus.INVALID, error
        self._memory.last_error = f"{call.tool}: {error}"
        self._record("invalid_call", tool=call.tool, index=record.index, message=error)
        self._tell_agent(call, f"the call was not run: {error}")

    def _refuse(self, record: CallRecord, call: ProposedCall, decision: Decision) -> None:
        record.decision = decision
        record.status = CallStatus.SUGGESTED if decision.rule == "mode.suggest" else CallStatus.DENIED
        record.error = decision.reason
        self._record_decision(record, decision)
        self._tell_agent(call, f"the policy refused the call (rule {decision.rule}): {decision.reason}")

    def _record_decision(self, record: CallRecord, decision: Decision) -> None:
        self._record(
            "decision",
            tool=record.tool,
            index=record.index,
            rule=decision.rule,
            outcome=decision.outcome.value,
            message=decision.reason,
            data=self._counters_seen(record) if record.limits else None,
        )

    def _counters_seen(self, record: CallRecord) -> dict[str, Any]:
        """The windowed limits' counters as the call found them, for the timeline."""
        return {"limits": [counter_text(c) + ("" if c.held else " (not held)") for c in record.limits]}

    def _tell_agent(
        self, call: ProposedCall, content: Any, role: Literal["airlock", "tool_result"] = "airlock"
    ) -> None:
        m = self._memory
        if m.input.model.provider == "scripted":
            return
        text = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
        m.transcript.append(TranscriptItem(role=role, call_id=call.call_id, tool=call.tool, content=text))

    def _record(
        self,
        kind: TimelineKind,
        *,
        tool: str | None = None,
        index: int | None = None,
        approval_id: str | None = None,
        actor: str | None = None,
        rule: str | None = None,
        outcome: str | None = None,
        message: str | None = None,
        data: Any = None,
    ) -> None:
        m = self._memory
        entry = TimelineEntry(
            at=workflow.now(),
            step=m.used.steps,
            kind=kind,
            tool=tool if tool is None or len(tool) <= NAME_CHARS else bounded(tool, NAME_CHARS),
            call_index=index,
            approval_id=approval_id,
            actor=actor,
            rule=rule,
            outcome=outcome,
            # What a model, a tool or a sender wrote is cut here, once for every kind of entry.
            message=message if message is None or len(message) <= MESSAGE_CHARS else bounded(message, MESSAGE_CHARS),
            data=data,
        )
        m.timeline.append(entry)
        # One event, every channel: the timeline (and the report and audit export built from it),
        # OpenTelemetry, the run's search attributes once it ends, and the worker's log stream.
        telemetry.observe(entry, m.used, **self._tags())
        if kind == "run_finished":
            self._publish()
        # The worker's log stream carries the same audit events an export rebuilds later. They
        # are built only when someone will read them: not on replay, not below INFO.
        if not workflow.logger.isEnabledFor(logging.INFO):
            return
        seq = m.timeline_offset + len(m.timeline) - 1
        for event in events_for(seq, entry, self._run_facts(), m.calls):
            workflow.logger.info(event.type, extra={"airlock": event.model_dump(mode="json", exclude_none=True)})

    def snapshot(self) -> RunSnapshot:
        """The run's state, a copy, for readers outside the workflow (the flight recorder)."""
        return RunSnapshot(
            state=self._state,
            memory=None if self._m is None else self._m.model_copy(deep=True),
            pending_approvals=list(self._desk.pending.values()) if self._desk else [],
            held=self.hold(),
        )

    def _approval_terms(self, decision: Decision, pending: PendingApproval, wait_s: float) -> str:
        """The approval's terms with its real deadline: the tier's timeout, or the end of the run's
        wall-clock budget when that comes first (then the run ends at that instant)."""
        terms = (
            f"{decision.approvals_required} approval(s) of {', '.join(decision.approver_roles)} "
            f"by {holds.at(pending.deadline)}"
        )
        if wait_s < decision.timeout_s:
            return terms + (
                f": the run's wall-clock budget ends then, before the tier's {decision.timeout_s}s, "
                "and the run ends with it"
            )
        return terms + f" (the tier's {decision.timeout_s}s); no decision by then counts as denied"

    def _run_facts(self) -> RunFacts:
        m = self._memory
        return RunFacts(
            run_id=self._workflow_id,
            workspace=m.input.workspace,
            agent=m.input.agent,
            requested_by=m.input.requested_by,
            policy_hash=m.context.policy_hash,
        )

    def _set_state(self, state: RunState) -> None:
        if self._state is not state or self._unpublished:
            self._state = state
            self._publish()

    @property
    def _unpublished(self) -> bool:
        """A started run has not published its state yet: only a run under PUBLISH_WHEN_SEEN, until
        it can be seen."""
        return self._published is None

    def _publish_before_waiting(self) -> None:
        """The run is about to wait beyond its workflow task: what it has not published yet, it
        publishes now, so that lists of runs by state and workspace show it while it waits."""
        if self._unpublished:
            self._publish()

    def _publish(self) -> None:
        """Keeps the search attributes in step with the run; only changes cost a history event."""
        m = self._memory
        values = (m.input.workspace, self._state.value, len(self._desk_.pending), round(m.used.cost_usd, 6))
        if values == self._published:
            return
        self._published = values
        workflow.upsert_search_attributes(
            [
                WORKSPACE.value_set(values[0]),
                STATE.value_set(values[1]),
                PENDING.value_set(values[2]),
                COST.value_set(values[3]),
            ]
        )
