"""`WorkspaceControl`: one long-lived workflow per workspace (id `workspace:NAME`) that holds its
switches and tells every live run of the workspace when they change.

Runs register when they start (a signal-with-start, which also starts this workflow on first use).
A switch change is an update: only a person with the admin role may make it; refusals are
answered and recorded. The switches are published in this workflow's memo, and every registered
run is signalled and acknowledges; from the acknowledgement on, that run starts no new tool call
(kill switch) or refuses every write and external call with reason `safe_mode` (safe mode).

A starting run reads the memo before it registers and says which generation it read. Registrations
and switches are handled one at a time, so a run whose registration comes after a switch it did
not read is told of it here, and a run registered before a switch is among those signalled.

Caps. Under a concurrency cap, registration admits a run or refuses it; an admitted run signs off
when it ends. Under a daily spend cap, a run reserves the estimated cost of each paid model call
(the `reserve` update) and settles the real cost after it. Both decisions are made in this one
workflow, one message at a time, so two runs racing for the last slot or the last dollars never
both get them.

Every entry point takes its arguments raw (`*args: RawValue`, or a dynamic handler) and decodes
them with `workflows.entry`, so that nothing anyone with access to the namespace sends can fail a
workflow task. A signal that cannot be used (no argument or several, an unreadable encoding, a
malformed or oversized payload, an unknown name) changes nothing and is recorded as refused, counted
by reason, in the `state` query. A malformed update, or one of an unknown name, is rejected by its
validator, before it reaches the history; a query that cannot be answered says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from contracts import errors, names
    from contracts.activity_io import RunContext
    from contracts.signing import switch_message, verifies
    from contracts.workspace_io import (
        SWITCHES_MEMO,
        Ack,
        Admission,
        DaySpend,
        Leave,
        RefusedMessages,
        RegisterBatch,
        RegisterRequest,
        ReserveRequest,
        ReserveResult,
        Settle,
        SpendView,
        StoredSwitches,
        StoreSwitches,
        Switches,
        SwitchRequest,
        SwitchResult,
        WorkspaceView,
        control_workflow_id,
        registered_run_id,
        registration_key,
    )
    from workflows.control_state import OTHER_RUNS, ControlState, Reservation, fit_checkpoint, json_bytes
    from workflows.entry import NAME_CHARS, Refusal, bounded, message, reason_key, shown_args, start_args, tally

ADMIN_ROLE = "admin"
RECENT = timedelta(minutes=10)
# A workspace's name, as the control workflow's start takes it (its id is `workspace:<name>`).
WORKSPACE_CHARS = 200
REFUSALS_KEPT = 50
REFUSED_RUNS_KEPT = 500
DAYS_KEPT = 7
# Past this many runs in a day, smaller spenders are summed under one line: the ledger is
# carried across continue-as-new and must stay small.
RUNS_PER_DAY_KEPT = 2_000
# The same for agents and requesters: a policy names a few, and a reservation may name any.
NAMES_PER_DAY_KEPT = 200
# What one message may weigh: every control message is a few hundred bytes, a batch of 1000
# registrations a few hundred kilobytes. What is kept of a message must stay small: the state is
# carried across continue-as-new, under Temporal's 2 MB per payload.
MESSAGE_BYTES = 64_000
BATCH_BYTES = 1_000_000
# A registration key (`run id@first run id`): two workflow ids at most, as Temporal bounds them.
KEY_CHARS = 2_100
# Refused messages kept in full (each at most REFUSAL_CHARS); the rest are only counted.
REFUSED_MESSAGES_KEPT = 20
REFUSAL_CHARS = 500
# What the control workflow keeps of registered runs is carried across continue-as-new, under
# Temporal's 2 MB per payload. Anyone who can signal it could register made-up run ids until its
# checkpoint no longer fits, and the kill switch with it: past these, runs that the server no
# longer lists as running (and that hold no concurrency slot) are forgotten, however recent, and
# a registration that still finds no room is refused (the run still reads the switches from the
# control store before every call). Bytes as the checkpoint's JSON weighs them; with the
# reservations' bounds and the policy the whole stays under CHECKPOINT_BYTES.
RUNS_TRACKED = 5_000
RUN_ID_BYTES_TRACKED = 250_000
# Since this patch a registration for another workspace, one whose ids hold characters that are
# not printable, and one that finds no room under RUNS_TRACKED and RUN_ID_BYTES_TRACKED are refused.
VERIFIED_REGISTRATIONS = "verified-registrations"
# Temporal lets a workflow have 2,000 signals to other workflows in flight; a switch told to every
# run at once past that failed its workflow task, again and again. Since this patch at most
# SIGNALS_IN_FLIGHT are sent at a time, the rest as those come back: well under the server's
# limit, and few enough commands that one workflow task completes in time on a loaded worker.
BOUNDED_BROADCASTS = "bounded-broadcasts"
SIGNALS_IN_FLIGHT = 500
# Open spend reservations are carried across continue-as-new too: one per model call in flight is
# what runs hold. Since this patch a reservation is refused past RESERVATIONS_OPEN (or
# RESERVATION_BYTES_OPEN of ids and names), for another workspace, or with ids or names that are
# not printable.
BOUNDED_RESERVATIONS = "bounded-reservations"
RESERVATIONS_OPEN = 2_000
RESERVATION_BYTES_OPEN = 150_000
# A flood of registrations asks the server which runs are live once a minute at most, not once
# per registration.
SWEEP_EVERY = timedelta(minutes=1)
SIGNALS = "ack, leave, register, register_batch, settle"
UPDATES = "reserve, switch"
QUERIES = "admission, spend, state, switches"

Message = TypeVar("Message", bound=BaseModel)


@workflow.defn(name="WorkspaceControl")
class WorkspaceControl:
    def __init__(self) -> None:
        self._s: ControlState | None = None
        self._started = asyncio.Event()
        # Admissions under a cap may wait on visibility; they are decided one at a time.
        self._admitting = asyncio.Lock()
        # Switch changes commit to the control store one at a time, each one generation past
        # the one before.
        self._switching = asyncio.Lock()
        # Runs being told of a change; the update that made it has already answered.
        self._broadcasts: list[asyncio.Task[int]] = []
        # Signals refused before the state was ready, folded into it once it is.
        self._early_refusals = RefusedMessages()
        # When registrations that found no room last had live runs sorted from finished ones.
        self._swept_at: datetime | None = None
        self._signal_slots = asyncio.Semaphore(SIGNALS_IN_FLIGHT)

    @workflow.run
    async def run(self, *args: RawValue) -> None:
        # Decoded here, not by Temporal: a wrong number of arguments or an unreadable one fails the
        # workflow at once, naming the problem, instead of retrying its first task forever.
        raw, carried = start_args(args, "WorkspaceControl", ControlState)
        if not isinstance(raw, str) or not raw or len(raw) > WORKSPACE_CHARS:
            raise ApplicationError(
                f"invalid start: WorkspaceControl takes the workspace's name (a string of 1 to "
                f"{WORKSPACE_CHARS} characters), got {bounded(repr(raw), 200)}",
                type=errors.INVALID_RUN_INPUT,
                non_retryable=True,
            )
        workspace: str = raw
        info = workflow.info()
        if info.workflow_id != control_workflow_id(workspace):
            raise ApplicationError(
                f"a control workflow for {workspace!r} runs only as {control_workflow_id(workspace)!r}",
                type=errors.NOT_THE_CONTROL_WORKFLOW,
                non_retryable=True,
            )
        if carried is not None and info.continued_run_id is None:
            # State is carried only by this workflow continuing as new; offered by anyone else
            # (switches off, spend forgotten), it is refused.
            raise ApplicationError(
                "carried control state is accepted only from the run that continued as new",
                type=errors.FORGED_CARRIED_STATE,
                non_retryable=True,
            )
        if carried is None:
            context: RunContext = await workflow.execute_local_activity(
                "run.pin_context",
                result_type=RunContext,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5),
            )
            if workspace not in context.policy.workspaces:
                raise ApplicationError(
                    f"workspace {workspace!r} is not in the policy", type=errors.UNKNOWN_WORKSPACE, non_retryable=True
                )
            carried = ControlState(workspace=workspace, context=context)
            if context.control_events_per_history is not None:
                carried.events_per_history = context.control_events_per_history
            if context.control_store:
                await self._recover(carried)
        self._s = carried
        _fold(carried.refused_messages, self._early_refusals)
        if carried.switches.generation:
            self._publish(carried.switches)
        self._started.set()
        await workflow.wait_condition(
            lambda: (
                workflow.info().get_current_history_length() > carried.events_per_history
                or workflow.info().is_continue_as_new_suggested()
            )
        )
        await self._forget_finished_runs()
        # Messages keep arriving while the checkpoint is prepared: it is taken only once no handler
        # is running and no broadcast is in flight, in one activation, so none is cut short.
        while True:
            await self._settle_broadcasts()
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not self._broadcasts:
                break
        checkpoint, left_out = fit_checkpoint(self._s)
        if left_out:
            workflow.logger.warning("workspace control: checkpoint cut to fit: left out %s", ", ".join(left_out))
            _note(
                checkpoint.refused_messages,
                "checkpoint cut to fit",
                bounded(
                    f"{workflow.now().isoformat()} checkpoint cut to fit: left out {', '.join(left_out)}", REFUSAL_CHARS
                ),
            )
        workflow.continue_as_new(args=[workspace, checkpoint])

    async def _recover(self, s: ControlState) -> None:
        """A control workflow that starts afresh (its first start, or after it was terminated or
        lost) takes the switches from the control store, waiting for as long as the store cannot
        be read, and the workspace's live runs from visibility, so that it tells them of changes
        and counts them against a concurrency cap."""
        s.switches = await workflow.execute_local_activity(
            "workspace.switches",
            s.workspace,
            result_type=Switches,
            summary="switches in force, from the control store",
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        )
        try:
            live: list[str] = await workflow.execute_activity(
                "workspace.live_runs",
                s.workspace,
                result_type=list[str],
                summary="live runs of the workspace",
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError:
            # Without visibility the runs are not told of changes (every call still checks the
            # store before it starts, and a held run reads it again on its own).
            live = []
        for run_id in live:
            # Unknown: whether they read the switches now in force. Telling them again is harmless.
            self._admit(s, run_id, acknowledged=-1)
            s.signing_off.add(run_id)

    async def _settle_broadcasts(self) -> None:
        if self._broadcasts:
            await asyncio.gather(*self._broadcasts, return_exceptions=True)
            self._broadcasts = []

    async def _forget_finished_runs(self, *, recent_too: bool = False) -> None:
        """Runs sign off only under a concurrency cap (it costs each run two events and this
        workflow a task). So before a checkpoint, and before refusing a run under the cap, runs
        that visibility no longer lists as running are forgotten. Recent registrations are kept
        whatever visibility says (it lags behind), unless `recent_too`: when what is tracked
        fills its bounds, a run that just started may be forgotten rather than the state grow."""
        s = self._s
        if s is None:
            return
        try:
            live: list[str] = await workflow.execute_activity(
                "workspace.live_runs",
                s.workspace,
                result_type=list[str],
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError:
            # Without visibility nothing is forgotten: a slot stays taken rather than freed on a guess.
            return
        keep = set(live)
        recent = workflow.now() - RECENT
        for run_id in list(s.runs):
            # A run under a cap signs off as it ends: a recent one is kept whatever visibility says,
            # or its slot would be handed to another run while it still runs.
            forgettable = recent_too and run_id not in s.signing_off
            if run_id not in keep and (forgettable or s.registered_at.get(run_id, recent) < recent):
                self._forget(s, run_id)

    async def _state(self) -> ControlState:
        await self._started.wait()
        return self._ready

    @property
    def _ready(self) -> ControlState:
        """The state, for queries: they cannot wait for the first task to pin the policy."""
        if self._s is None:
            raise ApplicationError("the workspace control is starting; ask again in a moment", type=errors.NOT_STARTED)
        return self._s

    # ---- what arrives ------------------------------------------------------------------------

    def _signalled(
        self, name: str, args: Sequence[Any], model: type[Message], max_bytes: int = MESSAGE_BYTES
    ) -> Message | None:
        """The signal's one argument as `model`; or None, the refusal recorded: a signal has no
        sender to answer."""
        decoded = message(args, model, max_bytes)
        if not isinstance(decoded, Refusal):
            return decoded  # type: ignore[no-any-return]
        self._note_refusal(
            f"{reason_key(decoded.reason)} in {name}",
            f"signal {name} refused: {decoded.reason}; sent {shown_args(args, 200)}",
        )
        return None

    def _note_refusal(self, kind: str, text: str) -> None:
        """Counted by kind, and kept in full among the last few."""
        refused = self._early_refusals if self._s is None else self._s.refused_messages
        _note(refused, kind, bounded(f"{workflow.now().isoformat()} {text}", REFUSAL_CHARS))
        workflow.logger.warning("workspace control: %s", bounded(text, 300))

    @workflow.signal(dynamic=True)
    def unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        # Without this handler Temporal drops a signal of an unknown name in silence: a
        # misspelled `leave` would hold a concurrency slot with nobody the wiser.
        self._note_refusal(
            "unknown signal",
            f"unknown signal {bounded(name, NAME_CHARS)!r} refused: the control workflow takes the signals "
            f"{SIGNALS}; sent {shown_args(args, 200)}",
        )

    @workflow.update(dynamic=True)
    def unknown_update(self, name: str, args: Sequence[RawValue]) -> None:
        raise ApplicationError(f"unknown update {bounded(name, NAME_CHARS)!r}", type=errors.UNKNOWN_UPDATE)

    @unknown_update.validator
    def reject_unknown_update(self, name: str, args: Sequence[RawValue]) -> None:
        # Rejected before it is accepted, so it leaves no event in the history.
        raise ApplicationError(
            f"unknown update {bounded(name, NAME_CHARS)!r}; the control workflow takes the updates {UPDATES}",
            type=errors.UNKNOWN_UPDATE,
        )

    @workflow.query(dynamic=True)
    def unknown_query(self, name: str, args: Sequence[RawValue]) -> None:
        raise ApplicationError(
            f"unknown query {bounded(name, NAME_CHARS)!r}; the control workflow answers {QUERIES}",
            type=errors.UNKNOWN_QUERY,
        )

    @workflow.signal(name=names.ControlMessages.REGISTER)
    async def register(self, *args: RawValue) -> None:
        # A signal, not an update: a burst of run starts must never hit the server's cap on
        # concurrent in-flight updates. Under a cap the run reads its admission with the
        # `admission` query; otherwise it has read the switches from the memo.
        if (request := self._signalled("register", args, RegisterRequest)) is None:
            return
        s = await self._state()
        if not self._for_this_workspace(s, "register", request):
            return
        cap = request.max_concurrent_runs
        s.max_concurrent_runs = cap
        if cap is None:
            await self._join_uncapped(s, [request])
            return
        async with self._admitting:
            key = registration_key(request.run_id, request.chain_run_id)
            if request.run_id in s.runs or key in s.refused_runs:
                return  # a retried registration: the first answer stands
            if len(s.runs) >= cap:
                # Runs that ended without signing off (terminated, or started before the cap)
                # hold no slot; visibility says which.
                await self._forget_finished_runs()
            if len(s.runs) >= cap:
                reason = (
                    f"workspace {s.workspace}: {len(s.runs)} of {cap} concurrent runs are running "
                    "(max_concurrent_runs); start it again when one ends"
                )
                s.refused_runs = _bounded({**s.refused_runs, key: reason}, REFUSED_RUNS_KEPT)
                return
            if not await self._room_for(s, [request.run_id]):
                reason = f"workspace {s.workspace}: {_no_room(s)}; start it again when runs end"
                s.refused_runs = _bounded({**s.refused_runs, key: reason}, REFUSED_RUNS_KEPT)
                return
            self._admit(s, request.run_id)
            s.signing_off.add(request.run_id)

    @workflow.signal(name=names.ControlMessages.REGISTER_BATCH)
    async def register_batch(self, *args: RawValue) -> None:
        """Runs of a workspace with no concurrency cap, joining together."""
        if (batch := self._signalled("register_batch", args, RegisterBatch, BATCH_BYTES)) is None:
            return
        s = await self._state()
        s.max_concurrent_runs = None
        await self._join_uncapped(s, batch.registrations)

    async def _join_uncapped(self, s: ControlState, requests: list[RegisterRequest]) -> None:
        requests = [r for r in requests if self._for_this_workspace(s, "register", r)]
        if requests and not await self._room_for(s, [r.run_id for r in requests]):
            self._note_refusal(
                "no room in register",
                f"registration of {len(requests)} run(s) refused ({', '.join(bounded(r.run_id, 80) for r in requests[:3])}"
                f"{', ...' if len(requests) > 3 else ''}): {_no_room(s)}",
            )
            return
        behind = []
        for request in requests:
            self._admit(s, request.run_id, acknowledged=request.read_generation)
            if request.read_generation is not None and request.read_generation < s.switches.generation:
                # A switch came between the run's read of the memo and this registration.
                behind.append(request.run_id)
        if behind:
            await self._signal_runs(s, behind)

    def _for_this_workspace(self, s: ControlState, name: str, request: RegisterRequest) -> bool:
        """A registration names the workspace its run is of; one for another workspace is a
        mistake or a forgery, and ids with characters that are not printable (a real run's are)
        would weigh up to six times their length in the checkpoint: both are refused (since
        VERIFIED_REGISTRATIONS) and recorded."""
        printable = request.run_id.isprintable() and request.chain_run_id.isprintable()
        if (request.workspace == s.workspace and printable) or not workflow.patched(VERIFIED_REGISTRATIONS):
            return True
        if not printable:
            self._note_refusal(
                f"unprintable id in {name}",
                f"signal {name} refused: run id {bounded(repr(request.run_id), 80)} holds characters that are not printable",
            )
            return False
        self._note_refusal(
            f"other workspace in {name}",
            f"signal {name} refused: run {bounded(request.run_id, 80)!r} is of workspace "
            f"{bounded(request.workspace, 80)!r}, and this is the control workflow of {s.workspace!r}",
        )
        return False

    async def _room_for(self, s: ControlState, run_ids: list[str]) -> bool:
        """Whether the runs not tracked yet among `run_ids` fit under RUNS_TRACKED and
        RUN_ID_BYTES_TRACKED; if not, runs the server no longer lists as running are forgotten
        first, however recent (at most once every SWEEP_EVERY)."""
        new = {r for r in run_ids if r not in s.runs}
        if _fits(s, new) or not workflow.patched(VERIFIED_REGISTRATIONS):
            return True
        if self._swept_at is None or workflow.now() - self._swept_at >= SWEEP_EVERY:
            self._swept_at = workflow.now()
            await self._forget_finished_runs(recent_too=True)
        return _fits(s, {r for r in new if r not in s.runs})

    def _admit(self, s: ControlState, run_id: str, acknowledged: int | None = None) -> None:
        """`acknowledged`: the generation the run read from the memo. None: the run reads the
        switches with the `admission` query after this, so joining is its acknowledgement."""
        s.runs[run_id] = s.switches.generation if acknowledged is None else acknowledged
        s.registered_at[run_id] = workflow.now()

    @workflow.query(name=names.ControlMessages.ADMISSION)
    def admission(self, *args: RawValue) -> Admission:
        """One argument: `registration_key(run id, first run of its chain)`."""
        key = message(args, str, KEY_CHARS + 2)
        if isinstance(key, Refusal):
            raise ApplicationError(
                f"query admission: {key.reason}; it takes one argument, a registration key (run id@first run id)",
                type=errors.MALFORMED_QUERY,
            )
        s = self._ready
        switches = s.switches.model_dump()
        run_id = registered_run_id(key)
        if key in s.refused_runs:
            return Admission(**switches, admitted=False, refusal=s.refused_runs[key])
        if run_id in s.runs:
            return Admission(**switches, signs_off=run_id in s.signing_off)
        raise ApplicationError(
            f"run {run_id} has not registered yet; ask again in a moment", type=errors.NOT_REGISTERED
        )

    @workflow.signal(name=names.ControlMessages.LEAVE)
    async def leave(self, *args: RawValue) -> None:
        if (leave := self._signalled("leave", args, Leave)) is None or self._s is None:
            return
        s = self._s
        if not s.context.control_store:
            self._forget(s, leave.run_id)
            return
        if leave.run_id not in s.runs or leave.run_id in s.leaving:
            return
        # Anyone can send `leave` in a run's name; the slot is freed once the server says the run
        # has ended. A run sends it as it finishes, so the wait is short; a false claim is dropped.
        s.leaving.add(leave.run_id)
        try:
            closed: list[str] = await workflow.execute_activity(
                "workspace.closed_runs",
                [leave.run_id],
                result_type=list[str],
                summary=f"has {leave.run_id} ended?",
                start_to_close_timeout=timedelta(seconds=90),
                heartbeat_timeout=timedelta(seconds=20),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError:
            closed = []
        finally:
            s.leaving.discard(leave.run_id)
        for run_id in closed:
            self._forget(s, run_id)

    def _forget(self, s: ControlState, run_id: str) -> None:
        s.runs.pop(run_id, None)
        s.registered_at.pop(run_id, None)
        s.signing_off.discard(run_id)
        s.reservations = {rid: r for rid, r in s.reservations.items() if r.run_id != run_id}

    # ---- spend ------------------------------------------------------------------------------

    @workflow.update(name=names.ControlMessages.RESERVE)
    async def reserve(self, *args: RawValue) -> ReserveResult:
        request = message(args, ReserveRequest, MESSAGE_BYTES)
        s = await self._state()
        if isinstance(request, Refusal):
            # Rejected by the validator; this is only for an update accepted without it.
            return ReserveResult(granted=False, reason=request.reason)
        today = self._today(s)
        reserved = sum(r.usd for r in s.reservations.values() if r.day == today.day)
        if request.reservation_id in s.reservations:
            # The reserving activity was retried: granted again, held once.
            return ReserveResult(granted=True, spent_usd=today.spent_usd, reserved_usd=reserved)
        if (refusal := _reservation_refusal(s, request)) is not None and workflow.patched(BOUNDED_RESERVATIONS):
            return ReserveResult(granted=False, reason=refusal, spent_usd=today.spent_usd, reserved_usd=reserved)
        today.cap_usd = request.cap_usd
        # Checked and held with no await in between: no other message can run meanwhile.
        if today.spent_usd + reserved + request.usd > request.cap_usd + 1e-12:
            today.refused += 1
            return ReserveResult(
                granted=False,
                reason=(
                    f"workspace {s.workspace} daily spend cap: {today.spent_usd:.6f} USD spent and "
                    f"{reserved:.6f} reserved today; the next model call's estimated "
                    f"{request.usd:.6f} would pass the cap of {request.cap_usd:.6f} USD"
                ),
                spent_usd=today.spent_usd,
                reserved_usd=reserved,
            )
        s.reservations[request.reservation_id] = Reservation(
            run_id=request.run_id,
            agent=request.agent,
            requested_by=request.requested_by,
            usd=request.usd,
            day=today.day,
        )
        return ReserveResult(granted=True, spent_usd=today.spent_usd, reserved_usd=reserved + request.usd)

    @reserve.validator
    def validate_reserve(self, *args: RawValue) -> None:
        _valid_update("reserve", args, ReserveRequest)

    @workflow.signal(name=names.ControlMessages.SETTLE)
    def settle(self, *args: RawValue) -> None:
        settle = self._signalled("settle", args, Settle)
        s = self._s
        if s is None or settle is None:
            return
        if (held := s.reservations.pop(settle.reservation_id, None)) is None:
            return
        day = next((d for d in s.days if d.day == held.day), None) or self._today(s)
        usd = settle.usd
        day.spent_usd = round(day.spent_usd + usd, 9)
        for ledger, key, kept in (
            (day.by_agent, held.agent, NAMES_PER_DAY_KEPT),
            (day.by_requester, held.requested_by, NAMES_PER_DAY_KEPT),
            (day.by_run, held.run_id, RUNS_PER_DAY_KEPT),
        ):
            ledger[key] = round(ledger.get(key, 0.0) + usd, 9)
            if len(ledger) > kept:
                smallest = min((k for k in ledger if k != OTHER_RUNS), key=lambda k: ledger[k])
                ledger[OTHER_RUNS] = round(ledger.get(OTHER_RUNS, 0.0) + ledger.pop(smallest), 9)

    def _today(self, s: ControlState) -> DaySpend:
        day = workflow.now().date().isoformat()
        if not s.days or s.days[-1].day != day:
            s.days = [*s.days[-(DAYS_KEPT - 1) :], DaySpend(day=day, cap_usd=s.days[-1].cap_usd if s.days else None)]
            # Reservations from an earlier day no longer hold today's money. Yesterday's are kept
            # for a call still running across midnight, which settles to the day it reserved on.
            kept = {day, s.days[-2].day} if len(s.days) > 1 else {day}
            s.reservations = {rid: r for rid, r in s.reservations.items() if r.day in kept}
        return s.days[-1]

    @workflow.query(name=names.ControlMessages.SPEND)
    def spend(self, *args: RawValue) -> SpendView:
        _no_arguments("spend", args)
        s = self._ready
        return SpendView(
            workspace=s.workspace,
            reserved_usd=round(sum(r.usd for r in s.reservations.values()), 9),
            days=list(reversed(s.days)),
        )

    @workflow.query(name=names.ControlMessages.SWITCHES)
    def current_switches(self, *args: RawValue) -> Switches:
        _no_arguments("switches", args)
        return self._ready.switches

    @workflow.signal(name=names.ControlMessages.ACK)
    def ack(self, *args: RawValue) -> None:
        ack = self._signalled("ack", args, Ack)
        s = self._s
        if s is None or ack is None or ack.run_id not in s.runs or ack.generation != s.switches.generation:
            return
        s.runs[ack.run_id] = ack.generation
        if s.switched_at is not None:
            s.last_ack_after_s = (workflow.now() - s.switched_at).total_seconds()

    @workflow.update(name=names.ControlMessages.SWITCH)
    async def switch(self, *args: RawValue) -> SwitchResult:
        request = message(args, SwitchRequest, MESSAGE_BYTES)
        s = await self._state()
        if isinstance(request, Refusal):
            # Rejected by the validator; this is only for an update accepted without it (the
            # histories of control workflows from before it).
            return self._refuse(s, request.reason)
        roles = s.context.policy.roles_of(request.by)
        if ADMIN_ROLE not in roles:
            return self._refuse(s, f"{request.by} lacks the {ADMIN_ROLE} role that workspace switches need")
        if not s.context.control_store:
            return await self._switch_in_memory(s, request)
        async with self._switching:
            current = s.switches
            changed = Switches(
                generation=current.generation + 1,
                paused=request.on if request.switch == "kill_switch" else current.paused,
                safe_mode=request.on if request.switch == "safe_mode" else current.safe_mode,
                by=request.by,
                reason=request.reason,
            )
            if (unsigned := self._unsigned(s, request, changed.generation)) is not None:
                return self._refuse(s, unsigned)
            stored: StoredSwitches = await workflow.execute_local_activity(
                "workspace.store_switches",
                StoreSwitches(workspace=s.workspace, switches=changed),
                result_type=StoredSwitches,
                summary=f"{request.switch} {'on' if request.on else 'off'} by {request.by}",
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5), maximum_attempts=10),
            )
            s.switches = stored.switches
            self._publish(stored.switches)
            if not stored.committed:
                return self._refuse(
                    s, f"the switches changed meanwhile (now generation {stored.switches.generation}); send it again"
                )
            s.switched_at = workflow.now()
            s.last_ack_after_s = None
            # Every tool call checks the store before it starts, so the change holds from its
            # commit; telling the runs (so that their status shows it) does not hold up the answer.
            run_ids = list(s.runs)
            self._broadcasts = [t for t in self._broadcasts if not t.done()]
            self._broadcasts.append(asyncio.create_task(self._signal_runs(s, run_ids)))
            return SwitchResult(accepted=True, generation=stored.switches.generation, runs_notified=len(run_ids))

    @switch.validator
    def validate_switch(self, *args: RawValue) -> None:
        # Who may throw a switch is decided (and a refusal recorded) by the update itself.
        _valid_update("switch", args, SwitchRequest)

    def _unsigned(self, s: ControlState, request: SwitchRequest, generation: int) -> str | None:
        """Why the change's signature is missing where the workspace requires signed approvals,
        or does not verify (a signature sent is always checked)."""
        if request.signature is None:
            if not s.context.policy.workspaces[s.workspace].signed_approvals:
                return None
            return (
                f"workspace {s.workspace} requires switch changes signed by an admin's key (`airlock workspace` signs)"
            )
        person = s.context.policy.people.get(request.by)
        message = switch_message(
            workspace=s.workspace, switch=request.switch, on=request.on, by=request.by, generation=generation
        )
        if person is None or not verifies(person.keys, message, request.signature):
            return f"the signature is not {request.by}'s over this change at generation {generation}"
        return None

    async def _switch_in_memory(self, s: ControlState, request: SwitchRequest) -> SwitchResult:
        """Control workflows pinned before the control store held their switches only here."""
        current = s.switches
        paused = request.on if request.switch == "kill_switch" else current.paused
        safe = request.on if request.switch == "safe_mode" else current.safe_mode
        s.switches = Switches(
            generation=current.generation + 1, paused=paused, safe_mode=safe, by=request.by, reason=request.reason
        )
        s.switched_at = workflow.now()
        s.last_ack_after_s = None
        self._publish(s.switches)
        notified = await self._signal_runs(s, list(s.runs))
        return SwitchResult(accepted=True, generation=s.switches.generation, runs_notified=notified)

    def _publish(self, switches: Switches) -> None:
        """Into the memo, where starting runs read them (workflows of earlier versions did not)."""
        if workflow.patched("switches-memo"):
            workflow.upsert_memo({SWITCHES_MEMO: switches.model_dump(mode="json")})

    async def _signal_runs(self, s: ControlState, run_ids: list[str]) -> int:
        """Tells these runs the switches in force; forgets those that have ended."""
        payload = s.switches.model_dump(mode="json")
        results = await asyncio.gather(*(self._signal_run(r, payload) for r in run_ids), return_exceptions=True)
        for run_id, result in zip(run_ids, results, strict=True):
            if isinstance(result, BaseException):
                # The run has ended: forget it.
                self._forget(s, run_id)
        return sum(not isinstance(r, BaseException) for r in results)

    async def _signal_run(self, run_id: str, payload: dict[str, Any]) -> None:
        """One run told of the switches, with at most SIGNALS_IN_FLIGHT such signals in flight. A free
        slot is taken without waiting, so below the bound the signals go out as they always did."""
        handle = workflow.get_external_workflow_handle(run_id)
        if self._signal_slots.locked() and not workflow.patched(BOUNDED_BROADCASTS):
            await handle.signal(names.RunMessages.WORKSPACE_SWITCH, payload)  # a history from before the bound
            return
        async with self._signal_slots:
            await handle.signal(names.RunMessages.WORKSPACE_SWITCH, payload)

    def _refuse(self, s: ControlState, reason: str) -> SwitchResult:
        s.refused = [
            *s.refused[-(REFUSALS_KEPT - 1) :],
            bounded(f"{workflow.now().isoformat()} {reason}", REFUSAL_CHARS),
        ]
        return SwitchResult(accepted=False, reason=reason)

    @workflow.query(name=names.ControlMessages.STATE)
    def state(self, *args: RawValue) -> WorkspaceView:
        _no_arguments("state", args)
        s = self._ready
        generation = s.switches.generation
        return WorkspaceView(
            workspace=s.workspace,
            switches=s.switches,
            switched_at=s.switched_at,
            runs=len(s.runs),
            acknowledged=sum(1 for g in s.runs.values() if g == generation) if generation else 0,
            last_ack_after_s=s.last_ack_after_s,
            refused=s.refused,
            max_concurrent_runs=s.max_concurrent_runs,
            refused_messages=s.refused_messages,
        )


def _reservation_bytes(reservation_id: str, r: Reservation | ReserveRequest) -> int:
    return json_bytes(reservation_id) + json_bytes(r.run_id) + json_bytes(r.agent) + json_bytes(r.requested_by)


def _reservation_refusal(s: ControlState, request: ReserveRequest) -> str | None:
    """Why a reservation is not taken into the carried state (see BOUNDED_RESERVATIONS)."""
    if request.workspace != s.workspace:
        return f"the reservation is for workspace {bounded(request.workspace, 80)!r}; this is {s.workspace!r}"
    ids = (request.reservation_id, request.run_id, request.agent, request.requested_by)
    if not all(i.isprintable() for i in ids):
        return "the reservation's ids or names hold characters that are not printable"
    held = sum(_reservation_bytes(k, r) for k, r in s.reservations.items())
    if len(s.reservations) >= RESERVATIONS_OPEN or held + _reservation_bytes(request.reservation_id, request) > (
        RESERVATION_BYTES_OPEN
    ):
        return (
            f"workspace {s.workspace}: {len(s.reservations)} spend reservations are open; at most "
            f"{RESERVATIONS_OPEN} (and {RESERVATION_BYTES_OPEN:,} bytes of their ids) are kept"
        )
    return None


def _fits(s: ControlState, new: set[str]) -> bool:
    if not new:
        return True
    count = len(s.runs) + len(new)
    weight = sum(map(json_bytes, s.runs)) + sum(map(json_bytes, new))
    return count <= RUNS_TRACKED and weight <= RUN_ID_BYTES_TRACKED


def _no_room(s: ControlState) -> str:
    return (
        f"{len(s.runs)} runs are tracked, at most {RUNS_TRACKED} "
        f"(and {RUN_ID_BYTES_TRACKED:,} bytes of run ids) are kept"
    )


def _bounded(values: dict[str, str], kept: int) -> dict[str, str]:
    return dict(list(values.items())[-kept:])


def _valid_update(name: str, args: Sequence[Any], model: type[BaseModel]) -> None:
    """Rejects an update whose arguments cannot be used, before it is accepted: the sender is
    told why, and the history keeps no trace of it."""
    if isinstance(decoded := message(args, model, MESSAGE_BYTES), Refusal):
        raise ApplicationError(f"update {name} rejected: {decoded.reason}", type=errors.MALFORMED_UPDATE)


def _no_arguments(name: str, args: Sequence[Any]) -> None:
    if args:
        raise ApplicationError(f"query {name} takes no argument, got {len(args)}", type=errors.MALFORMED_QUERY)


def _note(refused: RefusedMessages, kind: str, text: str, n: int = 1) -> None:
    refused.total += n
    tally(refused.by_reason, kind, n)
    refused.last = [*refused.last[-(REFUSED_MESSAGES_KEPT - 1) :], text]


def _fold(into: RefusedMessages, early: RefusedMessages) -> None:
    """Refusals noted before the state was ready, into it."""
    into.total += early.total
    for kind, n in early.by_reason.items():
        tally(into.by_reason, kind, n)
    into.last = [*into.last, *early.last][-REFUSED_MESSAGES_KEPT:]
