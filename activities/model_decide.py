"""`model.decide`: asks the run's model for its next move.

`scripted` replays the proposals written in the run input (deterministic, offline, 0 tokens) and
is what tests and the demo use; `openai` asks a real model through the OpenAI SDK. Either way the
answer is only a proposal: the workflow governs every call it contains.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Protocol

import structlog
from opentelemetry import trace
from sqlalchemy import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.control_store import SpendLedger
from contracts import errors, names
from contracts.model_io import ModelDecision, ModelRequest, ProposedCall
from contracts.workspace_io import SpendHold
from tools import blobs
from tools.secret_guard import ToolSecrets

log = structlog.get_logger("airlock.model")
tracer = trace.get_tracer("airlock")

SCRIPT_DONE = "The scripted proposals are done."


class ModelProvider(Protocol):
    async def decide(self, request: ModelRequest) -> ModelDecision: ...


def scripted_decision(request: ModelRequest) -> ModelDecision:
    entry = request.scripted
    if entry is None:
        return ModelDecision(answer=SCRIPT_DONE, model="scripted")
    if entry.tool is None:
        return ModelDecision(answer=entry.answer or SCRIPT_DONE, model="scripted")
    return ModelDecision(
        calls=[ProposedCall(call_id=f"s{request.step}", tool=entry.tool, args=entry.args)],
        model="scripted",
    )


class ModelActivities:
    def __init__(
        self,
        openai: ModelProvider | None = None,
        engine: Engine | None = None,
        spend: SpendLedger | None = None,
        secrets: ToolSecrets | None = None,
    ) -> None:
        self._openai = openai
        self._engine = engine
        self._spend = spend
        self._secrets = secrets

    def _resolved(self, request: ModelRequest) -> ModelRequest:
        """The model sees whole tool results; histories keep large ones by reference."""
        if self._engine is None:
            return request
        items = []
        for item in request.transcript:
            if item.role == "tool_result" and '"$blob"' in item.content:
                value = blobs.resolve(self._engine, json.loads(item.content))
                item = item.model_copy(update={"content": json.dumps(value, sort_keys=True)})
            items.append(item)
        return request.model_copy(update={"transcript": items})

    @activity.defn(name=names.MODEL_DECIDE)
    async def decide(self, request: ModelRequest) -> ModelDecision:
        with structlog.contextvars.bound_contextvars(
            run_id=request.workflow_id, workspace=request.workspace, step=request.step
        ):
            decision = await self._decide(request)
        return decision.model_copy(update={"decided_at": datetime.now(UTC)})

    async def _held_call(self, request: ModelRequest, hold: SpendHold) -> ModelDecision:
        """A paid call under the workspace's daily cap: its estimate is held in the control store
        before it is made, and its real cost settled after (nothing, if it failed). Each attempt
        holds on its own: each one is a call the provider may charge for."""
        if self._spend is None or self._openai is None:
            raise ApplicationError(
                "this worker has no control store to hold model spend in",
                type=errors.CONTROL_STORE_MISSING,
                non_retryable=True,
            )
        hold = hold.model_copy(update={"reservation_id": f"{hold.reservation_id}/attempt-{activity.info().attempt}"})
        refusal = await asyncio.to_thread(self._spend.hold, hold)
        if refusal is not None:
            return ModelDecision(model=request.model_name or request.provider, spend_refusal=refusal)
        cost = 0.0
        try:
            decision = await self._openai.decide(self._resolved(request))
            cost = decision.cost_usd
        finally:
            await asyncio.to_thread(self._spend.settle, hold.reservation_id, cost)
        return decision

    async def _decide(self, request: ModelRequest) -> ModelDecision:
        with tracer.start_as_current_span(names.MODEL_DECIDE) as span:
            span.set_attributes(
                {
                    "airlock.run_id": request.workflow_id,
                    "airlock.workspace": request.workspace,
                    "airlock.step": request.step,
                    "airlock.model.provider": request.provider,
                }
            )
            if request.provider == "scripted":
                decision = scripted_decision(request)
            elif self._openai is None:
                raise ApplicationError(
                    "the openai provider is not configured on this worker",
                    type=errors.MODEL_NOT_CONFIGURED,
                    non_retryable=True,
                )
            elif request.spend is not None:
                decision = await self._held_call(request, request.spend)
            else:
                decision = await self._openai.decide(self._resolved(request))
            if self._secrets is not None:
                # Before the decision leaves the worker: the workflow records tokens, never the
                # secret values a model (or a script) wrote in clear.
                decision = self._secrets.seal_proposals(request.workspace, decision, request.transcript)
            span.set_attributes(
                {
                    "airlock.model": decision.model,
                    "airlock.tokens": decision.prompt_tokens + decision.completion_tokens,
                    "airlock.cost_usd": decision.cost_usd,
                }
            )
        log.info(
            "model.decided",
            model=decision.model,
            calls=[c.tool for c in decision.calls],
            tokens=decision.prompt_tokens + decision.completion_tokens,
            cost_usd=decision.cost_usd,
        )
        return decision
