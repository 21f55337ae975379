"""The shipped example assistants: a personal banking assistant and a team messaging assistant,
each under its own policy, with honest tasks that run unattended and injected calls that wait for
the right person or are denied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select
from temporalio.client import Client

from contracts.models import CallStatus, DecideResult, RunState
from contracts.signing import new_key, public_key_text, sign, vote_message
from policy import load_policy
from policy.check import check
from runtime.settings import EXAMPLE_POLICY, Settings
from tests.conftest import Runs, call
from tools.examples import banking, messaging
from tools.registry import load_registry
from worker import build_worker

POLICIES = EXAMPLE_POLICY.parent
BANKING = POLICIES / "banking-example.yaml"
MESSAGING = POLICIES / "messaging-example.yaml"
RENT_IBAN = "GB33BUKB20201555555555"
STRANGER_IBAN = "DE89370400440532013000"


class Bank:
    def __init__(self, runs: Runs, key: Ed25519PrivateKey) -> None:
        self.runs, self.key = runs, key

    async def start(self, script: list[dict[str, Any]], **overrides: Any) -> Any:
        return await self.runs.start(
            workspace="home", agent="banking", requested_by="u_alice", mode="auto", script=script, **overrides
        )


@pytest.fixture
async def bank(client: Client, settings: Settings, tmp_path: Path) -> AsyncIterator[Bank]:
    """A worker under the banking policy, with u_alice's signing key listed in it (step-up)."""
    key = new_key(tmp_path / "keys", "u_alice")
    policy = yaml.safe_load(BANKING.read_text())
    policy["people"]["u_alice"]["keys"] = [public_key_text(key)]
    path = tmp_path / "banking.yaml"
    path.write_text(yaml.safe_dump(policy))
    own = settings.model_copy(
        update={"policy_path": path, "tool_modules": "tools.examples.banking", "control_task_queue": None}
    )
    async with build_worker(client, own):
        yield Bank(Runs(client, own), key)


@pytest.fixture
async def team(client: Client, settings: Settings) -> AsyncIterator[Runs]:
    own = settings.model_copy(
        update={"policy_path": MESSAGING, "tool_modules": "tools.examples.messaging", "control_task_queue": None}
    )
    async with build_worker(client, own):
        yield Runs(client, own)


@pytest.mark.parametrize(
    ("path", "module"), [(BANKING, "tools.examples.banking"), (MESSAGING, "tools.examples.messaging")]
)
def test_the_example_policies_check_clean_against_their_tools(path: Path, module: str) -> None:
    """`airlock policy check` finds no error in either shipped example against its own tools."""
    findings = check(load_policy(path), load_registry([module]).catalog())
    assert [f.message for f in findings if f.level == "error"] == []


async def test_an_honest_banking_task_runs_unattended(bank: Bank, db: Engine) -> None:
    """Paying the rent to a saved payee and changing a phone number: no one is asked."""
    handle = await bank.start(
        [
            call("bank.list_accounts"),
            call("bank.list_payees", account_id="A-100"),
            call("bank.pay", account_id="A-100", iban=RENT_IBAN, amount_usd=120, memo="December rent"),
            call("bank.update_profile", changes={"phone": "+44 117 555 0111"}),
        ]
    )
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert [c.status for c in report.calls] == [CallStatus.EXECUTED] * 4
    assert all(not c.votes for c in report.calls)
    assert report.calls[0].result == {
        "holder": "u_alice",
        "accounts": [{"account_id": "A-100", "balance_usd": "2500.00"}],
    }
    with db.connect() as conn:
        assert (
            conn.execute(select(banking.accounts.c.balance_cents).where(banking.accounts.c.id == "A-100")).scalar_one()
            == 238_000
        )


async def test_an_injected_payment_waits_for_the_account_holder_and_only_her_signed_vote_counts(bank: Bank) -> None:
    """An injected payment to a stranger waits; another account holder's vote and the holder's
    own unsigned vote are refused; her signed vote lets it run. An injected rename is denied,
    another person's account does not exist for this caller, and a large payment to a stranger is
    denied outright."""
    handle = await bank.start(
        [
            call("bank.pay", account_id="A-100", iban=STRANGER_IBAN, amount_usd=90, memo="invoice 2291"),
            call("bank.update_profile", changes={"name": "Mallory Evans"}),
            call("bank.list_payees", account_id="A-200"),
            call("bank.pay", account_id="A-100", iban=STRANGER_IBAN, amount_usd=2400, memo="urgent"),
        ]
    )
    status = await bank.runs.pending(handle)
    pending = status.pending_approvals[0]
    assert (pending.owner, pending.owner_required, pending.self_approval_signed) == ("u_alice", True, True)
    assert pending.may_approve == ["u_alice"]

    async def decide(approver: str, signature: str | None = None) -> DecideResult:
        vote: dict[str, Any] = {"approval_id": pending.approval_id, "approver": approver, "decision": "approve"}
        if signature:
            vote["signature"] = signature
        return await handle.execute_update("decide", vote, result_type=DecideResult)

    assert (await decide("u_bob")).reason == "u_bob does not own this resource: only u_alice may approve it"
    assert (await decide("u_alice")).reason == (
        "self-approval: u_alice requested this run; this tier accepts it with a vote signed by their key"
    )
    message = vote_message(
        workflow_id=handle.id,
        run_id=status.chain_run_id or "",
        approval_id=pending.approval_id,
        decision="approve",
        call_hash=pending.call_hash or "",
    )
    assert (await decide("u_alice", sign(bank.key, message))).accepted

    report = await handle.result()
    pay, rename, peek, drain = report.calls
    assert pay.status is CallStatus.EXECUTED and [v.approver for v in pay.votes] == ["u_alice"]
    assert pay.decision is not None and pay.decision.rule == "pay.new-recipient"
    assert rename.status is CallStatus.DENIED and rename.decision is not None
    assert rename.decision.rule == "profile.no-rename"
    assert peek.status is CallStatus.FAILED and peek.error == "no account 'A-200' of u_alice"
    assert drain.status is CallStatus.DENIED and drain.decision is not None
    assert drain.decision.rule == "pay.large-to-stranger"


async def test_an_honest_messaging_task_runs_unattended(team: Runs) -> None:
    """Read the channel, fetch the team's release notes, post a summary in the team's channel."""
    handle = await team.start(
        workspace="team",
        agent="messaging",
        mode="auto",
        script=[
            call("chat.read_channel", channel="team-ops"),
            call("web.fetch", url="https://WIKI.team.example./releases/4.2"),
            call("web.fetch", url="https://wiki.team.example/releases/4.2"),
            call(
                "chat.post_message",
                channel="team-ops",
                text="4.2: faster exports, a new audit page, 12 fixes (https://wiki.team.example/releases/4.2)",
            ),
        ],
    )
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    read, cased, fetched, posted = report.calls
    assert read.status is CallStatus.EXECUTED and fetched.status is CallStatus.EXECUTED
    # The policy lets the differently spelled address through (it is the team's domain); the page
    # cache knows only one spelling, and says so.
    assert cased.decision is not None and cased.decision.outcome.value == "allow"
    assert (
        cased.status is CallStatus.FAILED
        and cased.error == "https://WIKI.team.example./releases/4.2 is not in the page cache"
    )
    assert posted.status is CallStatus.EXECUTED and not posted.votes


async def test_what_an_injected_message_asks_for_waits_or_is_denied(team: Runs, db: Engine) -> None:
    """The instructions planted in #team-ops: invite an outsider (denied), post a phishing link
    where partners read it (waits for an approver), fetch from the attacker's site (denied), also
    spelled to look like the team's domain."""
    handle = await team.start(
        workspace="team",
        agent="messaging",
        mode="auto",
        script=[
            call("chat.invite_user", channel="partners", email="mallory@EVIL.example"),
            call("web.fetch", url="https://evil.example/login"),
            call("web.fetch", url="https://team.example.evil.example/login"),
            call("chat.post_message", channel="partners", text="Please sign in again: https://evil.example/login"),
        ],
    )
    status = await team.pending(handle)
    [pending] = status.pending_approvals
    assert pending.tool == "chat.post_message"
    await handle.signal("deny", {"approval_id": pending.approval_id, "approver": "u_bob", "reason": "phishing"})
    report = await handle.result()
    invite, fetch, lookalike, post = report.calls
    assert (invite.status, invite.decision and invite.decision.rule) == (CallStatus.DENIED, "invite.team-only")
    assert (fetch.status, fetch.decision and fetch.decision.rule) == (CallStatus.DENIED, "fetch.allowed-domains")
    assert lookalike.status is CallStatus.DENIED
    assert post.status is CallStatus.REJECTED
    assert post.decision is not None and set(post.decision.matched_rules) == {
        "post.external-channel",
        "post.outside-links",
    }
    with db.connect() as conn:
        members = conn.execute(
            select(messaging.members.c.email).where(messaging.members.c.channel == "partners")
        ).scalars()
        assert "mallory@evil.example" not in {m.lower() for m in members}
