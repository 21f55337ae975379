"""Counterfactual replay: how a recorded run would have gone under a new policy or model.

Nothing runs and nothing is written. Every recorded call is decided again with the new policy,
using the arguments and previewed facts recorded when it ran. A new model is asked, step by step,
what it would propose given the recorded conversation (recorded tool results, not live tools).

The new policy's windowed limits count too (`airlock.counterfactual_limits`): from the counter
each call recorded where the limit is the same, else from this run's own calls, which the
comparison says.

A recorded vote counts again only for the very same call (same tool, same arguments), and only
as the new policy would have counted it when it was cast: the new policy's approval for the call
is opened (`workflows.approvals.approval_terms`: roles, required role, the resource's owner,
self-approval with step-up, signed votes, escalation, timeout) and each recorded vote is put to
the same desk the run uses, in the order and at the instant it was cast, its signature checked
against the new policy's keys. A vote the new policy would refuse is not counted, and the
comparison says why.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field, JsonValue

from activities.model_decide import ModelProvider
from airlock.counterfactual_limits import Instants, ReplayedLimits
from contracts.model_io import ModelRequest, TranscriptItem
from contracts.models import CallRecord, CallStatus, DecideRequest, Decision, Outcome
from contracts.policy import Policy
from policy.engine import CallContext, decide
from recorder.flight_recorder import Recording
from workflows.approvals import ApprovalDesk, RunBinding, approval_terms


class Verdict(BaseModel):
    label: str
    rule: str | None = None


class CallComparison(BaseModel):
    step: int
    index: int
    tool: str
    args: dict[str, JsonValue]
    before: Verdict
    after: Verdict
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.before.label != self.after.label


class Counterfactual(BaseModel):
    workflow_id: str
    policy_before: str
    policy_after: str
    model_after: str | None = None
    calls: list[CallComparison]
    summary: dict[str, int] = Field(default_factory=dict)

    @property
    def changed(self) -> list[CallComparison]:
        return [c for c in self.calls if c.changed]


def recorded_verdict(call: CallRecord) -> Verdict:
    d = call.decision
    if d is None:
        return Verdict(label="invalid")
    if d.outcome is Outcome.DENY:
        return Verdict(label="suggested" if d.rule == "mode.suggest" else "denied", rule=d.rule)
    if d.outcome is Outcome.ALLOW:
        return Verdict(label="allowed", rule=d.rule)
    if call.status in (CallStatus.EXECUTED, CallStatus.FAILED):
        return Verdict(label="approved", rule=d.rule)
    if call.status is CallStatus.REJECTED:
        denied_by = [v for v in call.votes if v.decision == "deny"]
        return Verdict(label="refused by approver" if denied_by else "expired", rule=d.rule)
    return Verdict(label="needs approval", rule=d.rule)


class Recount(BaseModel):
    """The recorded votes on one call, counted as the new policy would have counted them."""

    resolution: Literal["approved", "denied"] | None
    counted: list[str]
    refused: list[str]


def recount_votes(policy: Policy, rec: Recording, call: CallRecord, decision: Decision) -> Recount:
    m = rec.memory
    approval_id = call.approval_id or ""
    opened = next(
        (e.at for e in m.timeline if e.kind == "approval_requested" and e.approval_id == approval_id),
        min(v.at for v in call.votes),
    )
    pending = approval_terms(
        policy,
        decision,
        call,
        approval_id=approval_id,
        workspace=m.input.workspace,
        requested_at=opened,
        wait_s=decision.timeout_s,
    )
    desk = ApprovalDesk(
        policy, m.input.requested_by, {}, RunBinding(workflow_id=rec.workflow_id, run_id=rec.chain_run_id)
    )
    desk.open(pending)
    tier = policy.tiers[decision.tier]
    counted: list[str] = []
    refused: list[str] = []
    for vote in sorted(call.votes, key=lambda v: v.at):
        if approval_id in desk.resolutions:
            break
        if vote.at > pending.deadline:
            refused.append(f"{vote.approver}'s vote came after the new tier's {decision.timeout_s}s timeout")
            continue
        if pending.escalates_at is not None and vote.at >= pending.escalates_at and tier.escalate_to:
            desk.escalate(approval_id, tier.escalate_to)
        result = desk.vote(
            DecideRequest(
                approval_id=approval_id,
                approver=vote.approver,
                decision=vote.decision,
                comment=vote.comment,
                signature=vote.signature,
            ),
            vote.at,
        )
        if result.accepted:
            counted.append(vote.approver)
        else:
            refused.append(f"{vote.approver}'s {vote.decision} does not count: {result.reason}")
    resolution = desk.resolutions.get(approval_id)
    return Recount(resolution=resolution[0] if resolution else None, counted=counted, refused=refused)


def replayed_limits(policy: Policy, rec: Recording) -> ReplayedLimits:
    """The new policy's limits over the run, with the instants the timeline shows of each call."""
    instants = Instants(first={}, last={})
    for e in rec.memory.timeline:
        if e.call_index is None:
            continue
        key = (e.step, e.call_index)
        instants.first[key] = min(e.at, instants.first.get(key, e.at))
        instants.last[key] = max(e.at, instants.last.get(key, e.at))
    return ReplayedLimits(policy, rec.memory.context.policy, instants)


def _context(rec: Recording, call: CallRecord) -> CallContext | None:
    """What the policy looks at for a recorded call, or None for a tool the run's catalogue lacks."""
    entry = next((e for e in rec.memory.context.catalog if e.name == call.tool), None)
    return None if entry is None else rec.memory.call_context(entry, call.args, call.facts)


def new_verdict(
    policy: Policy, rec: Recording, call: CallRecord, limits: ReplayedLimits, *, reuse_votes: bool
) -> tuple[Verdict, str]:
    """The call decided by `policy` (its limits counted by `limits`, which the call then adds to
    when the new policy lets it run)."""
    context = _context(rec, call)
    if context is None:
        return Verdict(label="invalid"), "unknown tool"
    verdict, note = _decided(policy, rec, call, context, limits, reuse_votes=reuse_votes)
    # A call waiting for approval counts too: in the store it holds its charge while it waits
    # (or takes it once approved), so the calls after it find it.
    limits.settle(call, context, counts=verdict.label in ("allowed", "approved", "needs approval"))
    return verdict, note


def not_proposed(rec: Recording, call: CallRecord, limits: ReplayedLimits) -> None:
    """A recorded call the new model does not make: what it added then is taken out of the
    recorded counters of the calls after it."""
    context = _context(rec, call)
    if context is not None:
        limits.settle(call, context, counts=False)


def _decided(
    policy: Policy,
    rec: Recording,
    call: CallRecord,
    context: CallContext,
    limits: ReplayedLimits,
    *,
    reuse_votes: bool,
) -> tuple[Verdict, str]:
    decision, counted = limits.judge(call, context, decide(policy, context))
    if decision.outcome is Outcome.DENY:
        label = "suggested" if decision.rule == "mode.suggest" else "denied"
        return Verdict(label=label, rule=decision.rule), _joined(decision.reason, counted)
    if decision.outcome is Outcome.ALLOW:
        return Verdict(label="allowed", rule=decision.rule), counted
    if reuse_votes and call.votes:
        recount = recount_votes(policy, rec, call, decision)
        refused = "".join(f"; {reason}" for reason in recount.refused)
        if recount.resolution == "denied":
            return Verdict(label="refused by approver", rule=decision.rule), _joined(
                f"the recorded denial stands{refused}", counted
            )
        if recount.resolution == "approved":
            names = ", ".join(recount.counted)
            return Verdict(label="approved", rule=decision.rule), _joined(
                f"recorded approval by {names} satisfies the new tier{refused}", counted
            )
        return Verdict(label="needs approval", rule=decision.rule), _joined(
            f"recorded votes do not satisfy tier {decision.tier.value} "
            f"({decision.approvals_required} of {', '.join(decision.approver_roles)}){refused}",
            counted,
        )
    return Verdict(label="needs approval", rule=decision.rule), _joined(decision.reason, counted)


def _joined(reason: str, counted: str) -> str:
    return f"{reason}; {counted}" if counted else reason


def _summarize(calls: list[CallComparison]) -> dict[str, int]:
    counts = Counter(f"{c.before.label} → {c.after.label}" for c in calls if c.changed)
    counts["unchanged"] = sum(not c.changed for c in calls)
    return dict(sorted(counts.items()))


def under_policy(rec: Recording, policy: Policy) -> Counterfactual:
    """Each recorded call decided again by `policy`, with its recorded arguments and facts."""
    comparisons: list[CallComparison] = []
    limits = replayed_limits(policy, rec)
    for call in rec.memory.calls:
        before = recorded_verdict(call)
        if before.label == "invalid":
            after, note = before, "not a policy decision: the call never reached the policy"
        else:
            after, note = new_verdict(policy, rec, call, limits, reuse_votes=True)
        comparisons.append(
            CallComparison(
                step=call.step, index=call.index, tool=call.tool, args=call.args, before=before, after=after, note=note
            )
        )
    return Counterfactual(
        workflow_id=rec.workflow_id,
        policy_before=rec.memory.context.policy_hash,
        policy_after=policy.content_hash(),
        calls=comparisons,
        summary=_summarize(comparisons),
    )


def _canonical(args: dict[str, Any]) -> str:
    return json.dumps(args, sort_keys=True, separators=(",", ":"))


def _transcript_before(calls: list[CallRecord], step: int) -> list[TranscriptItem]:
    """What the model had seen before `step`: its proposals and the recorded outcomes."""
    items: list[TranscriptItem] = []
    for c in calls:
        if c.step >= step:
            break
        call_id = f"call_{c.step}_{c.index}"
        items.append(TranscriptItem(role="assistant", call_id=call_id, tool=c.tool, args=c.args))
        if c.status is CallStatus.EXECUTED:
            items.append(
                TranscriptItem(
                    role="tool_result", call_id=call_id, tool=c.tool, content=json.dumps(c.result, sort_keys=True)
                )
            )
        else:
            items.append(
                TranscriptItem(role="airlock", call_id=call_id, tool=c.tool, content=f"the call was not run: {c.error}")
            )
    return items


async def under_model(
    rec: Recording, policy: Policy, provider: ModelProvider, provider_name: str, model_name: str | None
) -> Counterfactual:
    """Each recorded step proposed again by another model, and decided by `policy`."""
    m = rec.memory
    capabilities = m.context.policy.agents.get(m.input.agent)
    comparisons: list[CallComparison] = []
    steps = sorted({c.step for c in m.calls})
    diverged_at: int | None = None
    limits = replayed_limits(policy, rec)
    for step in steps:
        recorded = [c for c in m.calls if c.step == step]
        decision = await provider.decide(
            ModelRequest(
                workflow_id=rec.workflow_id,
                workspace=m.input.workspace,
                step=step,
                provider="openai" if provider_name == "openai" else "scripted",
                model_name=model_name,
                goal=m.input.goal,
                tool_names=list(capabilities.capabilities) if capabilities else [],
                transcript=_transcript_before(m.calls, step),
            )
        )
        matched: set[int] = set()
        for i, proposal in enumerate(decision.calls):
            # A recorded call answers one proposal: the same call proposed again is a new one.
            same = next(
                (
                    c
                    for c in recorded
                    if c.index not in matched
                    and c.tool == proposal.tool
                    and _canonical(c.args) == _canonical(proposal.args)
                ),
                None,
            )
            if same is not None:
                matched.add(same.index)
                after, note = new_verdict(policy, rec, same, limits, reuse_votes=True)
                before = recorded_verdict(same)
                args = same.args
            else:
                diverged_at = diverged_at or step
                probe = CallRecord(
                    step=step, index=i, tool=proposal.tool, args=proposal.args, status=CallStatus.INVALID
                )
                after, note = new_verdict(policy, rec, probe, limits, reuse_votes=False)
                note = "a call the recorded run did not make; no recorded approval applies" + (
                    f"; {note}" if note else ""
                )
                before = Verdict(label="not proposed")
                args = proposal.args
            comparisons.append(
                CallComparison(step=step, index=i, tool=proposal.tool, args=args, before=before, after=after, note=note)
            )
        for c in recorded:
            if c.index not in matched:
                not_proposed(rec, c, limits)
                diverged_at = diverged_at or step
                comparisons.append(
                    CallComparison(
                        step=step,
                        index=c.index,
                        tool=c.tool,
                        args=c.args,
                        before=recorded_verdict(c),
                        after=Verdict(label="not proposed"),
                        note="the new model did not propose this call",
                    )
                )
    if diverged_at is not None:
        for comparison in comparisons:
            if comparison.step > diverged_at:
                comparison.note = (
                    comparison.note + "; " if comparison.note else ""
                ) + f"judged on the recorded results (the run diverged at step {diverged_at})"
    return Counterfactual(
        workflow_id=rec.workflow_id,
        policy_before=m.context.policy_hash,
        policy_after=policy.content_hash(),
        model_after=provider_name + (f":{model_name}" if model_name else ""),
        calls=comparisons,
        summary=_summarize(comparisons),
    )


def render(cf: Counterfactual) -> str:
    out = [
        f"Counterfactual for {cf.workflow_id}",
        f"  policy {cf.policy_before} → {cf.policy_after}" + (f"; model {cf.model_after}" if cf.model_after else ""),
        "",
    ]
    for c in cf.calls:
        mark = "*" if c.changed else " "
        rule = f" [{c.after.rule}]" if c.after.rule else ""
        out.append(
            f" {mark} step {c.step} {c.tool} {_canonical(c.args)[:80]}: {c.before.label} → {c.after.label}{rule}"
        )
        if c.note and c.changed:
            out.append(f"      {c.note}")
    out += ["", "Summary"]
    out += [f"  {k}: {v}" for k, v in cf.summary.items()]
    return "\n".join(out)
