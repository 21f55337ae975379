"""Approval that fits a personal assistant: bound to the resource's owner, self-approval with
step-up."""

from __future__ import annotations

from typing import Any

from policy import load_policy, vote_refusal
from runtime.settings import EXAMPLE_POLICY

POLICY = load_policy(EXAMPLE_POLICY)


def refusal(approver: str, **kw: Any) -> str | None:
    base: dict[str, Any] = dict(
        approver=approver,
        requested_by="u_alice",
        approver_roles=["approver", "requester"],
        required_role=None,
        approvals_still_needed=1,
        earlier_voters=[],
    )
    base.update(kw)
    return vote_refusal(POLICY, **base)


def test_only_the_owner_named_by_the_preview_may_approve() -> None:
    assert refusal("u_bob", owner_required=True, owner="u_bob") is None
    assert refusal("u_carol", owner_required=True, owner="u_bob") == (
        "u_carol does not own this resource: only u_bob may approve it"
    )


def test_an_owner_bound_approval_whose_preview_names_nobody_counts_no_vote() -> None:
    """Fail closed: no owner, no approver."""
    for person in ("u_bob", "u_carol", "u_alice"):
        assert refusal(person, owner_required=True, owner=None) == (
            "this approval belongs to the resource's owner, and the preview named none"
        )


def test_self_approval_needs_the_tier_to_allow_it_and_a_signed_vote() -> None:
    assert refusal("u_alice") == "self-approval: u_alice requested this run"
    assert refusal("u_alice", self_approval_signed=True, signed=False) == (
        "self-approval: u_alice requested this run; this tier accepts it with a vote signed by their key"
    )
    assert refusal("u_alice", self_approval_signed=True, signed=True) is None


def test_a_signed_self_approval_still_needs_the_tiers_role_and_the_ownership() -> None:
    assert refusal("u_alice", approver_roles=["approver"], self_approval_signed=True, signed=True) == (
        "u_alice lacks the role this tier needs (one of: approver)"
    )
    assert refusal("u_alice", owner_required=True, owner="u_bob", self_approval_signed=True, signed=True) == (
        "u_alice does not own this resource: only u_bob may approve it"
    )
