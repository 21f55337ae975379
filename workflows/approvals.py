"""Counting votes on pending calls. Pure: the workflow passes the time in; nothing here awaits.

Every vote, counted or refused, comes back with its reason so the workflow can record it; a vote
that does not count changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import JsonValue, ValidationError

from contracts.hashing import call_hash
from contracts.models import CallRecord, DecideRequest, Decision, PendingApproval, Vote
from contracts.policy import Policy
from contracts.signing import verifies, vote_message
from contracts.validation import describe_validation_error
from policy.engine import vote_refusal

Resolution = Literal["approved", "denied"]


@dataclass(frozen=True)
class VoteResult:
    accepted: bool
    reason: str | None
    approval_id: str | None
    approver: str | None
    still_needed: int | None = None
    resolution: Resolution | None = None
    # The vote carried a signature that was verified against the approver's key.
    signed: bool = False


def parse_vote(payload: Any, decision: Literal["approve", "deny"] | None) -> DecideRequest | str:
    """A signal's or update's payload as a vote, or what is wrong with it.

    Signals name the decision in the signal name; the `decide` update carries it in the payload.
    """
    if not isinstance(payload, dict):
        return f"malformed payload: expected a JSON object, got {type(payload).__name__}"
    body = dict(payload)
    if decision is not None:
        if "decision" in body:
            return "malformed payload: decision: not allowed in an approve/deny signal"
        body["decision"] = decision
        if "reason" in body and decision == "deny":
            body["comment"] = body.pop("reason")
    try:
        return DecideRequest.model_validate(body)
    except ValidationError as e:
        return "malformed payload: " + describe_validation_error(e)


def approval_terms(
    policy: Policy,
    decision: Decision,
    record: CallRecord,
    *,
    approval_id: str,
    workspace: str,
    requested_at: datetime,
    wait_s: float,
) -> PendingApproval:
    """The approval a call needs under `policy`: who may vote (roles, required role, the
    resource's owner from the previewed facts, self-approval with step-up), whether votes must be
    signed, and when it escalates and expires. The run opens it; counterfactual replay opens the
    one a new policy would have asked for and counts the recorded votes against it."""
    tier = policy.tiers[decision.tier]
    pending = PendingApproval(
        approval_id=approval_id,
        step=record.step,
        index=record.index,
        tool=record.tool,
        args=record.args,
        tier=decision.tier,
        approvals_required=decision.approvals_required,
        approvals_still_needed=decision.approvals_required,
        approver_roles=list(decision.approver_roles),
        required_role=decision.required_role,
        diff=record.diff,
        requested_at=requested_at,
        deadline=requested_at + timedelta(seconds=wait_s),
        call_hash=call_hash(record.tool, record.args),
        signed_votes_required=policy.workspaces[workspace].signed_approvals,
        self_approval_signed=tier.self_approval == "signed",
        # What sent the call here (a rule, a tier, a windowed limit with its counter), for the
        # approver: `status`, the inbox and `show` say it.
        rule=decision.rule,
        reason=decision.reason,
    )
    if tier.escalate_after_s is not None and tier.escalate_after_s < wait_s:
        pending.escalates_at = requested_at + timedelta(seconds=tier.escalate_after_s)
    if tier.owner_fact is not None:
        # Whose resource it is, as the preview says: only that person's vote counts.
        pending.owner_required, pending.owner = True, _owner(record.facts.get(tier.owner_fact))
    return pending


def _owner(fact: JsonValue) -> str | None:
    return fact if isinstance(fact, str) and fact else None


@dataclass(frozen=True)
class RunBinding:
    """What a signed vote names besides the call: this workflow and the first run of its chain."""

    workflow_id: str
    run_id: str


class ApprovalDesk:
    def __init__(self, policy: Policy, requested_by: str, decided: dict[str, str], binding: RunBinding) -> None:
        self._policy = policy
        self._requested_by = requested_by
        self._binding = binding
        # approval id -> how it ended; shared with the run's memory so it survives continue-as-new
        self._decided = decided
        self.pending: dict[str, PendingApproval] = {}
        self.resolutions: dict[str, tuple[Resolution, str]] = {}

    def open(self, approval: PendingApproval) -> None:
        self.pending[approval.approval_id] = approval

    def close(self, approval_id: str, outcome: str) -> None:
        self.pending.pop(approval_id, None)
        self._decided[approval_id] = outcome

    def vote(self, request: DecideRequest, at: datetime) -> VoteResult:
        def refuse(reason: str) -> VoteResult:
            return VoteResult(False, reason, request.approval_id, request.approver)

        approval = self.pending.get(request.approval_id)
        if approval is None or approval.approval_id in self.resolutions:
            if request.approval_id in self._decided or request.approval_id in self.resolutions:
                return refuse(f"approval {request.approval_id} is already decided")
            return refuse(f"unknown approval id {request.approval_id!r}")
        if (binding := self._binding_refusal(request, approval)) is not None:
            return refuse(binding)
        earlier = [v.approver for v in approval.votes]
        signed = self._signature_checked(request)
        refusal = vote_refusal(
            self._policy,
            approver=request.approver,
            requested_by=self._requested_by,
            approver_roles=approval.approver_roles,
            required_role=approval.required_role if request.decision == "approve" else None,
            approvals_still_needed=approval.approvals_still_needed,
            earlier_voters=earlier,
            owner_required=approval.owner_required,
            owner=approval.owner,
            self_approval_signed=approval.self_approval_signed,
            signed=signed,
        )
        if refusal:
            return refuse(refusal)
        approval.votes.append(
            Vote(
                approver=request.approver,
                decision=request.decision,
                at=at,
                comment=request.comment,
                # Kept only when it was verified: an unchecked signature would be false evidence.
                signature=request.signature if signed else None,
            )
        )
        if request.decision == "deny":
            reason = f"denied by {request.approver}" + (f": {request.comment}" if request.comment else "")
            self.resolutions[approval.approval_id] = ("denied", reason)
            return VoteResult(
                True, None, approval.approval_id, request.approver, approval.approvals_still_needed, "denied", signed
            )
        approval.approvals_still_needed -= 1
        if approval.approvals_still_needed == 0:
            names = ", ".join(v.approver for v in approval.votes)
            self.resolutions[approval.approval_id] = ("approved", f"approved by {names}")
            return VoteResult(True, None, approval.approval_id, request.approver, 0, "approved", signed)
        return VoteResult(
            True, None, approval.approval_id, request.approver, approval.approvals_still_needed, signed=signed
        )

    def may_approve(self, approval: PendingApproval) -> list[str]:
        """The people whose approval would count now (the requester, where the tier allows it,
        with a signed vote)."""
        return [
            person
            for person in self._policy.people
            if vote_refusal(
                self._policy,
                approver=person,
                requested_by=self._requested_by,
                approver_roles=approval.approver_roles,
                required_role=approval.required_role,
                approvals_still_needed=approval.approvals_still_needed,
                earlier_voters=[v.approver for v in approval.votes],
                owner_required=approval.owner_required,
                owner=approval.owner,
                self_approval_signed=approval.self_approval_signed,
                signed=True,
            )
            is None
        ]

    def _binding_refusal(self, request: DecideRequest, approval: PendingApproval) -> str | None:
        """Why this vote is not bound to this exact call, or not signed as the workspace requires."""
        if request.call_hash is not None and request.call_hash != approval.call_hash:
            return (
                f"the vote is bound to call {request.call_hash[:12]}…, "
                f"but {approval.approval_id} is for call {(approval.call_hash or '')[:12]}…"
            )
        if request.signature is None:
            if approval.signed_votes_required:
                return (
                    "unsigned vote: this workspace requires signed approvals "
                    f"(airlock approve {self._binding.workflow_id} {approval.approval_id} --as {request.approver})"
                )
            return None
        keys = self._policy.people[request.approver].keys if request.approver in self._policy.people else []
        if not keys:
            if approval.signed_votes_required:
                return f"{request.approver} has no signing key in the policy"
            return None  # nothing to check it against, and this workspace counts unsigned votes
        message = vote_message(
            workflow_id=self._binding.workflow_id,
            run_id=self._binding.run_id,
            approval_id=approval.approval_id,
            decision=request.decision,
            call_hash=approval.call_hash or "",
        )
        if not verifies(keys, message, request.signature):
            return (
                f"bad signature: it does not verify with {request.approver}'s key over this run, "
                f"approval, decision ({request.decision}) and call"
            )
        return None

    def _signature_checked(self, request: DecideRequest) -> bool:
        person = self._policy.people.get(request.approver)
        return request.signature is not None and person is not None and bool(person.keys)

    def escalate(self, approval_id: str, role: str) -> None:
        approval = self.pending.get(approval_id)
        if approval is None:
            return
        if role not in approval.approver_roles:
            approval.approver_roles.append(role)
        approval.escalated_to = role
