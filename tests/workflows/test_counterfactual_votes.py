"""Counterfactual replay counts recorded votes as the new policy would have: signatures checked
against its keys, its roles, required role and number of approvals. A vote it would refuse is
not counted, and the comparison says why (`airlock replay --policy`, text and --json)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client

from contracts.models import CallStatus
from contracts.signing import load_key, new_key, public_key_text, sign, vote_message
from runtime.settings import Settings
from tests.conftest import REFUND_120, AirlockCli, Runs, policy_file
from tests.history_scenarios import histories_of
from worker import build_worker


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    new_key(path, "u_bob")
    new_key(path, "u_bob_rotated")
    return path


def bob_key(keys_dir: Path, name: str = "u_bob") -> str:
    return public_key_text(load_key(keys_dir, name))


@pytest_asyncio.fixture(loop_scope="session")
async def signed_runs(client: Client, settings: Settings, tmp_path: Path, keys_dir: Path) -> AsyncIterator[Runs]:
    path = policy_file(
        tmp_path / "signed.yaml",
        workspaces={"acme": {"signed_approvals": True}},
        people={"u_bob": {"keys": [bob_key(keys_dir)]}},
    )
    signed = settings.model_copy(update={"policy_path": path})
    async with build_worker(client, signed):
        yield Runs(client, signed)


async def approved_refund(runs: Runs, tmp_path: Path, vote: dict[str, Any]) -> Path:
    """A 120 USD refund approved by u_bob with `vote` (merged into the payload); its history file."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    status = await runs.pending(handle)
    pending = status.pending_approvals[0]
    payload = {"approval_id": pending.approval_id, "approver": "u_bob"}
    if vote.pop("sign", None) is not None:
        message = vote_message(
            workflow_id=status.workflow_id,
            run_id=status.chain_run_id or "",
            approval_id=pending.approval_id,
            decision="approve",
            call_hash=pending.call_hash or "",
        )
        payload |= {"call_hash": pending.call_hash, "signature": sign(vote.pop("key"), message)}
    await handle.signal("approve", payload | vote)
    report = await handle.result()
    assert report.calls[0].status is CallStatus.EXECUTED
    history = tmp_path / f"{handle.id}.json"
    history.write_text((await histories_of(runs.client, handle))[-1])
    return history


async def replay(airlock_cli: AirlockCli, policy: Path, history: Path) -> tuple[dict[str, Any], str]:
    status, out = await airlock_cli("replay", "--policy", str(policy), "--json", str(history))
    assert status == 0, out
    status, text = await airlock_cli("replay", "--policy", str(policy), str(history))
    assert status == 0, text
    return json.loads(out)["calls"][0], text


async def test_a_signed_vote_counts_again_only_with_a_key_the_new_policy_lists(
    signed_runs: Runs, tmp_path: Path, keys_dir: Path, airlock_cli: AirlockCli
) -> None:
    """The recorded signature verifies with u_bob's key in the new policy: still approved. With
    u_bob's key rotated in the new policy, the same vote is refused as a bad signature."""
    history = await approved_refund(signed_runs, tmp_path, {"sign": True, "key": load_key(keys_dir, "u_bob")})
    signed = {"workspaces": {"acme": {"signed_approvals": True}}}
    same = policy_file(tmp_path / "same.yaml", **signed, people={"u_bob": {"keys": [bob_key(keys_dir)]}})
    call, _ = await replay(airlock_cli, same, history)
    assert (call["before"]["label"], call["after"]["label"]) == ("approved", "approved")
    assert call["note"] == "recorded approval by u_bob satisfies the new tier"

    rotated = policy_file(
        tmp_path / "rotated.yaml", **signed, people={"u_bob": {"keys": [bob_key(keys_dir, "u_bob_rotated")]}}
    )
    call, text = await replay(airlock_cli, rotated, history)
    assert (call["before"]["label"], call["after"]["label"]) == ("approved", "needs approval")
    refusal = (
        "u_bob's approve does not count: bad signature: it does not verify with u_bob's key over this run, "
        "approval, decision (approve) and call"
    )
    assert refusal in call["note"]
    assert "* step 1 payments.create_refund" in text and "approved → needs approval [refund.over-50-approval]" in text
    assert refusal in text


async def test_an_unsigned_vote_does_not_count_where_the_new_policy_requires_signatures(
    runs: Runs, tmp_path: Path, airlock_cli: AirlockCli
) -> None:
    history = await approved_refund(runs, tmp_path, {})
    stricter = policy_file(tmp_path / "signed.yaml", workspaces={"acme": {"signed_approvals": True}})
    call, text = await replay(airlock_cli, stricter, history)
    assert (call["before"]["label"], call["after"]["label"]) == ("approved", "needs approval")
    assert "u_bob's approve does not count: unsigned vote: this workspace requires signed approvals" in call["note"]
    assert "approved → needs approval: 1" in text


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        # u_bob no longer holds the approver role.
        (
            {"people": {"u_bob": {"roles": ["requester"]}}},
            "u_bob's approve does not count: u_bob lacks the role this tier needs (one of: approver)",
        ),
        # The tier now needs an admin's approval as the last one.
        (
            {"tiers": {"high": {"approvals": 1, "roles": ["approver"], "require_role": "admin"}}},
            "u_bob's approve does not count: the last approval must come from someone with role admin",
        ),
        # The tier now needs two approvals: u_bob's counts, and it is not enough.
        (
            {"tiers": {"high": {"approvals": 2, "roles": ["approver"]}}},
            "recorded votes do not satisfy tier high (2 of approver)",
        ),
    ],
    ids=["role", "required-role", "two-approvals"],
)
async def test_a_vote_the_new_tier_would_refuse_is_not_counted(
    runs: Runs, tmp_path: Path, airlock_cli: AirlockCli, changes: dict[str, Any], refusal: str
) -> None:
    history = await approved_refund(runs, tmp_path, {"comment": "checked the photos"})
    call, text = await replay(airlock_cli, policy_file(tmp_path / "new.yaml", **changes), history)
    assert (call["before"]["label"], call["after"]["label"]) == ("approved", "needs approval")
    assert refusal in call["note"] and refusal in text
