"""Approvals that hold up in production: bound to the exact call, and signed by the approver.

Anyone with write access to the namespace can send a signal naming anyone; in a workspace that
requires signed approvals only a vote signed by the approver's key over this run, this approval,
this decision and this call counts. Every other vote is refused and recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine
from temporalio.client import Client, WorkflowHandle

from contracts.hashing import call_hash
from contracts.models import CallStatus, DecideResult, RunState, Status, TimelineEntry
from contracts.signing import load_key, new_key, public_key_text, sign, verifies, vote_message
from policy.loader import PolicyError, load_policy
from runtime.settings import Settings
from tests.conftest import READ, REFUND_120, AirlockCli, Runs, call, count_rows, policy_file
from tools.backoffice.db import refunds
from worker import build_worker

EMAIL = call("email.send", to="dana@example.com", subject="Your refund", body="120 USD is on its way.")


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    for person in ("u_bob", "u_carol"):
        new_key(path, person)
    return path


@pytest.fixture
def signed_settings(tmp_path: Path, keys_dir: Path, settings: Settings) -> Settings:
    path = policy_file(
        tmp_path / "signed.yaml",
        workspaces={"acme": {"signed_approvals": True}},
        people={person: {"keys": [public_key_text(load_key(keys_dir, person))]} for person in ("u_bob", "u_carol")},
    )
    return settings.model_copy(update={"policy_path": path})


@pytest_asyncio.fixture(loop_scope="session")
async def signed_runs(client: Client, signed_settings: Settings) -> AsyncIterator[Runs]:
    async with build_worker(client, signed_settings):
        yield Runs(client, signed_settings)


def signed_vote(
    key: Ed25519PrivateKey, status: Status, *, decision: str = "approve", **override: Any
) -> dict[str, Any]:
    pending = status.pending_approvals[0]
    fields = {
        "workflow_id": status.workflow_id,
        "run_id": status.chain_run_id,
        "approval_id": pending.approval_id,
        "decision": decision,
        "call_hash": pending.call_hash,
    } | override
    return {
        "approval_id": pending.approval_id,
        "approver": "u_bob",
        "decision": decision,
        "call_hash": pending.call_hash,
        "signature": sign(key, vote_message(**fields)),
    }


async def decide(handle: WorkflowHandle[Any, Any], payload: dict[str, Any]) -> DecideResult:
    return await handle.execute_update("decide", payload, result_type=DecideResult)


async def test_unsigned_forged_misbound_and_flipped_votes_are_refused_and_recorded(
    signed_runs: Runs, keys_dir: Path, db: Engine
) -> None:
    bob = load_key(keys_dir, "u_bob")
    mallory = Ed25519PrivateKey.generate()
    handle = await signed_runs.start(mode="approve", script=[READ, REFUND_120, EMAIL])
    status = await signed_runs.pending(handle)
    pending = status.pending_approvals[0]
    assert pending.signed_votes_required
    assert pending.call_hash == call_hash(pending.tool, pending.args)
    assert pending.approval_id.endswith(pending.call_hash[:10])

    # A raw signal, as anyone with namespace access could send it.
    await handle.signal("approve", {"approval_id": pending.approval_id, "approver": "u_bob"})
    refused: list[tuple[dict[str, Any], str]] = [
        # signed by someone else's key, in u_bob's name
        (signed_vote(mallory, status), "bad signature: it does not verify with u_bob's key"),
        # u_bob's real signature on a deny, presented as an approval
        ({**signed_vote(bob, status, decision="deny"), "decision": "approve"}, "bad signature"),
        # u_bob's signature over other arguments (a 950 USD refund)
        (
            signed_vote(bob, status, call_hash=call_hash(pending.tool, {**pending.args, "amount_usd": 950})),
            "bad signature",
        ),
        # a vote that says which call it is for, and it is another one
        (
            {**signed_vote(bob, status), "call_hash": "0" * 64},
            "the vote is bound to call 000000000000…",
        ),
        # u_carol's key signing a vote in u_bob's name
        (signed_vote(load_key(keys_dir, "u_carol"), status), "bad signature"),
    ]
    for payload, reason in refused:
        result = await decide(handle, payload)
        assert not result.accepted and result.reason is not None and result.reason.startswith(reason), result
    assert (await signed_runs.status(handle)).pending_approvals[0].votes == []
    assert count_rows(db, refunds) == 0

    good = signed_vote(bob, status)
    assert (await decide(handle, good)).accepted
    email = await signed_runs.wait_for(
        handle, lambda s: bool(s.pending_approvals) and s.pending_approvals[0].tool == "email.send"
    )
    # The same signed vote again, while the run waits on its next call: it changes nothing.
    again = await decide(handle, good)
    assert not again.accepted and again.reason == f"approval {pending.approval_id} is already decided"
    assert (await decide(handle, signed_vote(bob, email, decision="deny"))).accepted
    report = await handle.result()

    assert report.state is RunState.COMPLETED
    refund = report.calls[1]
    assert refund.status is CallStatus.EXECUTED and count_rows(db, refunds) == 1
    [vote] = refund.votes
    assert vote.approver == "u_bob" and vote.signature == good["signature"]
    # The evidence holds up later, with only the public key from the policy.
    message = vote_message(
        workflow_id=report.workflow_id,
        run_id=status.chain_run_id or "",
        approval_id=pending.approval_id,
        decision="approve",
        call_hash=pending.call_hash or "",
    )
    assert verifies([public_key_text(bob)], message, vote.signature or "")
    reasons = [r.reason for r in report.refused_votes]
    assert reasons[0].startswith("unsigned vote: this workspace requires signed approvals")
    assert len(reasons) == 1 + len(refused) + 1


async def test_a_signed_vote_does_not_carry_over_to_another_run(signed_runs: Runs, keys_dir: Path) -> None:
    """Two runs propose the same call under the same approval id; u_bob's signature for one is
    refused by the other."""
    bob = load_key(keys_dir, "u_bob")
    first, second = [await signed_runs.start(mode="approve", script=[READ, REFUND_120]) for _ in range(2)]
    one, two = [await signed_runs.pending(h) for h in (first, second)]
    assert one.pending_approvals[0].approval_id == two.pending_approvals[0].approval_id
    vote = signed_vote(bob, one)
    stolen = await decide(second, vote)
    assert not stolen.accepted and (stolen.reason or "").startswith("bad signature")
    assert (await decide(first, vote)).accepted
    await decide(second, signed_vote(bob, two, decision="deny"))
    assert (await first.result()).calls[1].status is CallStatus.EXECUTED
    assert (await second.result()).calls[1].status is CallStatus.REJECTED


async def test_airlock_approve_signs_with_the_local_key(
    signed_runs: Runs, keys_dir: Path, db: Engine, monkeypatch: pytest.MonkeyPatch, airlock_cli: AirlockCli
) -> None:
    """`airlock approve RUN APPROVAL --as u_bob` shows the call and its diff, signs it and says
    whether it counted; without a key it refuses to send a vote this workspace would refuse."""
    monkeypatch.setenv("AIRLOCK_KEYS_DIR", str(keys_dir))
    handle = await signed_runs.start(mode="approve", script=[READ, REFUND_120])
    approval_id = (await signed_runs.pending(handle)).pending_approvals[0].approval_id

    status, _ = await airlock_cli("approve", handle.id, approval_id, "--as", "u_dave")
    assert status == 1  # u_dave has no key on this machine

    status, text = await airlock_cli("approve", handle.id, approval_id, "--as", "u_bob", "--comment", "ok")
    assert status == 0, text
    report = await handle.result()
    timeline = await handle.query("timeline", result_type=list[TimelineEntry])
    [vote_entry] = [e for e in timeline if e.kind == "approval_vote"]
    assert vote_entry.actor == "u_bob" and vote_entry.message == "via update, signed; comment: ok"
    assert "orders[ORD-1001].refunded_usd: 0.00 -> 120.00" in text
    assert "approve by u_bob counted (signed)" in text
    assert report.calls[1].status is CallStatus.EXECUTED
    assert report.calls[1].votes[0].comment == "ok" and report.calls[1].votes[0].signature
    assert count_rows(db, refunds) == 1


def test_a_policy_key_must_be_an_ed25519_public_key(tmp_path: Path) -> None:
    path = policy_file(tmp_path / "bad.yaml", people={"u_bob": {"keys": ["ed25519:not-a-key"]}})
    with pytest.raises(PolicyError, match=r"people\.u_bob\.keys\.0"):
        load_policy(path)


async def test_where_signatures_are_optional_an_uncheckable_one_is_not_kept_as_evidence(
    runs: Runs, keys_dir: Path
) -> None:
    """In a workspace that counts unsigned votes, a vote signed by someone whose key the policy
    does not list counts as unsigned: the report never shows a signature nobody checked."""
    handle = await runs.start(mode="approve", script=[READ, REFUND_120])
    status = await runs.pending(handle)
    assert not status.pending_approvals[0].signed_votes_required
    assert (await decide(handle, signed_vote(load_key(keys_dir, "u_bob"), status))).accepted
    report = await handle.result()
    assert report.calls[1].status is CallStatus.EXECUTED
    assert report.calls[1].votes[0].approver == "u_bob" and report.calls[1].votes[0].signature is None


def test_airlock_keys_new_creates_a_private_key_once(tmp_path: Path) -> None:
    """The installed command: a key readable by its owner only, and never overwritten."""
    import os
    import stat
    import subprocess
    import sys

    command = [str(Path(sys.executable).parent / "airlock"), "keys", "new", "--as", "u_erin"]
    env = {**os.environ, "AIRLOCK_KEYS_DIR": str(tmp_path / "keys")}
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "keys" / "u_erin.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert f'keys: ["{public_key_text(load_key(tmp_path / "keys", "u_erin"))}"]' in first.stdout
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "never overwritten" in again.stderr
