"""Secrets stay secret: a tool's secret argument or result never appears in clear in a workflow
history, a query answer, the report, `airlock show`, the audit export or the logs, while the tool
itself receives and returns the clear value. Diffs of a secret say that it changed, not its value.

The end-to-end tests run a real worker against the session's Temporal server, with the real
`openai` provider answered by a scripted server: a model writes a password in clear, as a real one
would, and the tool issues a token only it ever sees in clear.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr
from sqlalchemy import Engine, select
from structlog.testing import capture_logs
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Replayer

from contracts.hashing import call_hash, canonical_json
from contracts.model_io import ModelDecision, ProposedCall
from contracts.models import CallStatus, FieldChange, RunState, Status, TimelineEntry
from runtime.converter import data_converter
from runtime.sealing import CHANGED, REDACTED, TOKEN_KEY, Keyring, SecretError, is_token, new_key, sealing
from runtime.settings import Settings
from tests.adversarial_support import ScriptedOpenAI, assert_not_stuck, completion
from tests.conftest import AirlockCli, Runs, call
from tools.backoffice.accounts import api_tokens, credentials, token_hash, verify_password
from tools.backoffice.db import tool_calls
from tools.base import ToolArgs
from tools.registry import load_registry
from tools.runner import ToolRunner
from tools.secret_guard import ToolSecrets
from tools.secrets import Secret, secret_paths
from worker import build_worker
from workflows.agent_run import AgentRun
from workflows.undo_run import UndoRun
from workflows.workspace_control import WorkspaceControl

PASSWORD = "Tr0ub4dor&3-horse-staple"
KEY = new_key()


@pytest.fixture
def secret_settings(settings: Settings) -> Settings:
    """The test's settings with a sealing key the test holds too, so it can open what it finds."""
    return settings.model_copy(update={"secrets_key": SecretStr(KEY)})


def texts_of_everything(parts: dict[str, str], *secrets: str) -> dict[str, list[str]]:
    """For each named text, the secrets found in it in clear (empty lists when none leaked)."""
    return {name: [s for s in secrets if s in text] for name, text in parts.items()}


async def recorded_texts(
    client: Client, handle: WorkflowHandle[Any, Any], airlock_cli: AirlockCli, tmp_path: Path, since: str
) -> dict[str, str]:
    """Every place a run is recorded or shown, as text."""
    history = await handle.fetch_history()
    status = await handle.query("status", result_type=Status)
    timeline = await handle.query("timeline", result_type=list[TimelineEntry])
    report = await handle.result()
    code, shown = await airlock_cli("show", handle.id)
    assert code == 0
    code, shown_json = await airlock_cli("show", handle.id, "--json")
    assert code == 0
    out = tmp_path / "audit.jsonl"
    for _ in range(50):  # the run reaches the visibility store a moment after it closes
        code, _ = await airlock_cli("audit", "export", "--since", since, "--workspace", "acme", "--output", str(out))
        assert code == 0
        if handle.id in out.read_text():
            break
        await asyncio.sleep(0.1)
    audit = out.read_text()
    assert handle.id in audit
    return {
        "history": history.to_json(),
        "status": status.model_dump_json(),
        "timeline": json.dumps([e.model_dump(mode="json") for e in timeline]),
        "report": report.model_dump_json(),
        "show": shown,
        "show --json": shown_json,
        "audit export": audit,
    }


async def test_a_secret_argument_and_a_secret_result_appear_in_no_record(
    client: Client,
    secret_settings: Settings,
    db: Engine,
    airlock_cli: AirlockCli,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A model sets a password (a secret argument) and issues an API token (a secret result). The
    tool stores the password it received in clear (its hash verifies) and the token it made; yet
    neither value appears in the history, the status and timeline answers (while pending and at
    the end), the report, `airlock show` (text and JSON), the audit export, the worker's logs, or
    what the model is shown later. The pending approval's diff and the report's changes say the
    password changed, not what it is; the model's answer that repeats the password is scrubbed."""
    caplog.set_level(logging.INFO)
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    model = ScriptedOpenAI(
        [
            completion(
                tool_calls=[
                    ("call_1", "accounts__set_password", {"customer_id": "C-100", "password": PASSWORD}),
                    ("call_2", "accounts__issue_api_token", {"customer_id": "C-100", "label": "shop sync"}),
                ]
            ),
            completion(content=f"Done. The new password is {PASSWORD} and the token is issued."),
        ]
    )
    with capture_logs() as structured:
        async with build_worker(client, secret_settings, openai=model.provider(secret_settings)):
            runs = Runs(client, secret_settings)
            handle = await runs.start(
                agent="accounts", mode="auto", model={"provider": "openai", "name": "gpt-4o-mini"}
            )
            pending = await runs.pending(handle)
            approval = pending.pending_approvals[0]
            pending_text = pending.model_dump_json()
            await handle.signal("approve", {"approval_id": approval.approval_id, "approver": "u_bob"})
            report = await handle.result()
            texts = await recorded_texts(client, handle, airlock_cli, tmp_path, since)
        await assert_not_stuck(client, handle)

    assert report.state is RunState.COMPLETED, report.reason
    assert [c.status for c in report.calls] == [CallStatus.EXECUTED, CallStatus.EXECUTED]
    # The tool got the clear password: the stored hash verifies against it.
    with db.connect() as conn:
        stored = conn.execute(
            select(credentials.c.password_hash).where(credentials.c.customer_id == "C-100")
        ).scalar_one()
        issued = conn.execute(select(api_tokens).where(api_tokens.c.customer_id == "C-100")).one()
    assert verify_password(stored, PASSWORD)
    # The token the tool made reached the report sealed; opened with the worker's key, it is the
    # one whose hash the back office holds.
    result = report.calls[1].result
    assert isinstance(result, dict) and is_token(result["token"]) and result["token_id"] == issued.id
    with sealing(Keyring.parse(KEY), "acme") as sealer:
        token = sealer.unseal(result["token"])
    assert token.startswith("ak_") and token_hash(token) == issued.token_hash
    # Sealed in the proposal and in the approval people vote on; the diff shows only the change.
    assert is_token(approval.args["password"]) and approval.args["customer_id"] == "C-100"
    assert approval.diff == [FieldChange(field="customers[C-100].password", before=None, after=CHANGED)]
    assert report.changes[0].diff == approval.diff
    assert report.answer == f"Done. The new password is {REDACTED} and the token is issued."
    assert "(secret)" in texts["show"] and CHANGED in texts["show"]

    logs = "\n".join(
        [f"{r.getMessage()} {r.__dict__}" for r in caplog.records] + [json.dumps(e, default=str) for e in structured]
    )
    assert any("tool.executed" in str(e) for e in structured), "the tool activities' logs were captured"
    assert any(getattr(r, "airlock", None) for r in caplog.records), "the workflow's audit log lines were captured"
    shown_to_model = json.dumps(model.requests[1])
    # The idempotency ledger hashes the arguments as recorded (tokens), and stores sealed results.
    with db.connect() as conn:
        ledger = conn.execute(select(tool_calls)).all()
    assert {r.args_hash for r in ledger} == {call_hash(c.tool, c.args) for c in report.calls}
    places = {
        **texts,
        "pending status": pending_text,
        "logs": logs,
        "later model request": shown_to_model,
        "ledger": "\n".join(str(tuple(r)) for r in ledger),
    }
    assert texts_of_everything(places, PASSWORD, token) == {name: [] for name in places}


async def test_a_scripted_secret_stays_only_in_the_callers_own_start_input(
    runs: Runs, client: Client, db: Engine, airlock_cli: AirlockCli, tmp_path: Path
) -> None:
    """With the `scripted` model the script is the caller's own text, so it stays in the start
    event as written; from the first proposal on, every record holds the sealed token. (A caller
    who does not want it there seals it first and scripts the token.)"""
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    handle = await runs.start(
        agent="accounts", mode="auto", script=[call("accounts.set_password", customer_id="C-101", password=PASSWORD)]
    )
    pending = await runs.pending(handle)
    await handle.signal("approve", {"approval_id": pending.pending_approvals[0].approval_id, "approver": "u_carol"})
    texts = await recorded_texts(client, handle, airlock_cli, tmp_path, since)
    history = await handle.fetch_history()
    holding = [e.event_id for e in history.events if PASSWORD in str(e)]
    assert holding == [1]  # WorkflowExecutionStarted: the input as the caller typed it
    del texts["history"]
    assert texts_of_everything(texts, PASSWORD) == {name: [] for name in texts}
    with db.connect() as conn:
        stored = conn.execute(
            select(credentials.c.password_hash).where(credentials.c.customer_id == "C-101")
        ).scalar_one()
    assert verify_password(stored, PASSWORD)


async def test_a_caller_can_script_a_sealed_token_and_the_run_replays(
    runs: Runs,
    client: Client,
    settings: Settings,
    db: Engine,
    airlock_cli: AirlockCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A script may carry the token instead of the clear value (`airlock secrets seal`, with the
    worker's key, reading the value from a file or stdin): then not even the start event holds
    the secret, the tool still receives it, and the history replays against today's code."""
    monkeypatch.setenv("AIRLOCK_SECRETS_KEY_FILE", str(settings.secrets_key_file))
    (tmp_path / "password.txt").write_text(PASSWORD + "\n")
    status, out = await airlock_cli("secrets", "seal", "--workspace", "acme", "--file", str(tmp_path / "password.txt"))
    assert status == 0 and PASSWORD not in out
    sealed = json.loads(out)
    handle = await runs.start(
        agent="accounts", mode="auto", script=[call("accounts.set_password", customer_id="C-100", password=sealed)]
    )
    pending = await runs.pending(handle)
    assert pending.pending_approvals[0].args["password"] == sealed
    await handle.signal("approve", {"approval_id": pending.pending_approvals[0].approval_id, "approver": "u_bob"})
    report = await handle.result()
    assert report.calls[0].status is CallStatus.EXECUTED
    history = await handle.fetch_history()
    assert PASSWORD not in history.to_json()
    with db.connect() as conn:
        stored = conn.execute(
            select(credentials.c.password_hash).where(credentials.c.customer_id == "C-100")
        ).scalar_one()
    assert verify_password(stored, PASSWORD)
    replayer = Replayer(workflows=[AgentRun, UndoRun, WorkspaceControl], data_converter=data_converter)
    await replayer.replay_workflow(history)


async def test_a_token_from_another_workspace_or_altered_does_not_open(
    runs: Runs, db: Engine, settings: Settings
) -> None:
    """A token is bound to its workspace and to the worker's key: copied from another workspace,
    or altered by one character, it is refused as an invalid argument naming the field, and the
    password is not changed."""
    keyring = Keyring.load(None, settings.secrets_key_file)
    with sealing(keyring, "sandbox") as sealer:
        elsewhere = sealer.seal(PASSWORD)
    with sealing(keyring, "acme") as sealer:
        text = sealer.seal(PASSWORD)[TOKEN_KEY]
    altered = {TOKEN_KEY: text[:-2] + ("A" if text[-2] != "A" else "B") + text[-1]}
    handle = await runs.start(
        agent="accounts",
        mode="auto",
        script=[
            call("accounts.set_password", customer_id="C-100", password=elsewhere),
            call("accounts.set_password", customer_id="C-100", password=altered),
        ],
    )
    report = await handle.result()
    assert [c.status for c in report.calls] == [CallStatus.INVALID, CallStatus.INVALID]
    assert all(
        (c.error or "").startswith("password: Value error, the sealed secret does not open here") for c in report.calls
    )
    with db.connect() as conn:
        assert conn.execute(select(credentials)).first() is None


async def test_an_issued_token_is_undone_by_revoking_it(runs: Runs, db: Engine, airlock_cli: AirlockCli) -> None:
    """The token's compensation names it by id, not by value: `airlock undo` revokes it."""
    handle = await runs.start(
        agent="accounts", mode="auto", script=[call("accounts.issue_api_token", customer_id="C-100", label="ci")]
    )
    report = await handle.result()
    assert report.undo[0].tool == "accounts.revoke_api_token"
    status, out = await airlock_cli("undo", handle.id, "--wait")
    assert status == 0, out
    with db.connect() as conn:
        assert conn.execute(select(api_tokens.c.status)).scalar_one() == "revoked"


# ---- a careless tool: the guard's safety net -------------------------------------------------


async def test_a_tool_that_echoes_its_secret_leaks_it_nowhere(
    client: Client, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A careless tool quotes its secret argument in a diff, a fact, a plain result field and,
    on its second call, in the message of a crash (as a database error quotes its parameters).
    The guard replaces the value wherever it appears: the records say `(secret)`, the crash is
    still a retried failure of the call (with its message scrubbed), and the run goes on."""
    caplog.set_level(logging.INFO)
    policy = tmp_path / "policy.yaml"
    from runtime.settings import EXAMPLE_POLICY

    policy.write_text(
        EXAMPLE_POLICY.read_text().replace(
            "      - accounts.issue_api_token    # a secret result\n",
            "      - accounts.issue_api_token    # a secret result\n      - careless.store\n",
            1,
        )
    )
    careless = settings.model_copy(
        update={"policy_path": policy, "tool_modules": "tools.backoffice,tests.example_tools.careless"}
    )
    async with build_worker(client, careless):
        runs = Runs(client, careless)
        handle = await runs.start(
            agent="accounts",
            mode="auto",
            script=[call("careless.store", value=PASSWORD), call("careless.store", value=PASSWORD, crash=True)],
        )
        report = await handle.result()
        history = (await handle.fetch_history()).to_json()
    assert [c.status for c in report.calls] == [CallStatus.EXECUTED, CallStatus.FAILED]
    first, crashed = report.calls
    assert first.diff == [FieldChange(field="store.value", before=REDACTED, after=CHANGED)]
    assert first.facts == {"note": f"will store {REDACTED}"}
    assert isinstance(first.result, dict) and first.result["echo"] == f"stored {REDACTED}"
    assert is_token(first.result["value"])
    assert crashed.error is not None and f"could not write {REDACTED}" in crashed.error
    logs = "\n".join(f"{r.getMessage()} {r.__dict__} {r.exc_text or ''}" for r in caplog.records)
    assert PASSWORD not in history and PASSWORD not in report.model_dump_json() and PASSWORD not in logs


# ---- the mechanism, without Temporal ---------------------------------------------------------


def test_sealing_is_deterministic_per_key_and_workspace() -> None:
    """One value, one key and one workspace give one token (a retried call hashes like its first
    attempt); another workspace or another key gives another token."""
    keyring = Keyring.parse(KEY)
    with sealing(keyring, "acme") as a1, sealing(keyring, "acme") as a2:
        assert a1.seal(PASSWORD) == a2.seal(PASSWORD)
    with sealing(keyring, "acme") as acme, sealing(keyring, "sandbox") as sandbox:
        assert acme.seal(PASSWORD) != sandbox.seal(PASSWORD)
    with sealing(Keyring.parse(new_key()), "acme") as other, sealing(keyring, "acme") as mine:
        assert other.seal(PASSWORD) != mine.seal(PASSWORD)
        assert PASSWORD not in json.dumps(mine.seal(PASSWORD))


def test_after_a_key_rotation_old_tokens_open_and_keep_their_form() -> None:
    """With a new key first and the old one after it, tokens sealed before the rotation still
    open, and a call's arguments are written back as the very token they came in as, so its
    idempotency hash does not change; new values are sealed under the new key."""
    old, new = KEY, new_key()
    with sealing(Keyring.parse(old), "acme") as before:
        token = before.seal(PASSWORD)
    rotated = Keyring.parse(f"{new},{old}")
    with sealing(rotated, "acme") as after:
        assert after.unseal(token) == PASSWORD
        assert after.seal(PASSWORD) == token
    with sealing(rotated, "acme") as fresh:
        assert fresh.seal(PASSWORD)[TOKEN_KEY].split(".")[1] == rotated.current != token[TOKEN_KEY].split(".")[1]
    with sealing(Keyring.parse(new), "acme") as dropped, pytest.raises(SecretError, match="does not hold"):
        dropped.unseal(token)


def test_outside_a_tool_call_a_secret_neither_opens_nor_serializes() -> None:
    """Failing beats leaking: code that is not inside a tool call's sealing scope cannot open a
    token, nor write a secret field as JSON."""

    class Login(ToolArgs):
        password: Secret

    with sealing(Keyring.parse(KEY), "acme") as sealer:
        token = sealer.seal(PASSWORD)
    with pytest.raises(ValueError, match="opens only inside a tool call"):
        Login.model_validate({"password": token})
    with pytest.raises(Exception, match="only inside a tool call"):
        Login(password=PASSWORD).model_dump(mode="json")
    assert Login(password=PASSWORD).password == PASSWORD  # the tool's own code sees it in clear


def test_secret_paths_reach_into_nested_models_and_collections() -> None:
    """Secrets nested in models, lists and mappings are found, so they are sealed there too."""

    class Credential(BaseModel):
        user: str
        password: Secret

    class Batch(ToolArgs):
        name: str
        owner: Credential
        users: list[Credential]
        by_host: dict[str, Credential]
        api_key: Annotated[Secret, "annotated further"] | None = None

    assert set(secret_paths(Batch)) == {
        ("owner", "password"),
        ("users", "*", "password"),
        ("by_host", "*", "password"),
        ("api_key",),
    }


def test_a_proposal_is_sealed_before_the_workflow_sees_it() -> None:
    """`model.decide` seals a proposal's secret arguments, whatever their JSON type, and also when
    the model misspells the tool's name in case or spacing (the call is then refused as unknown,
    but its secret is not in the record). Other arguments are left as written, except where they
    repeat a secret: a model cannot mail the password it just set."""
    guard = ToolSecrets(load_registry(), Keyring.parse(KEY))
    decision = ModelDecision(
        model="m",
        answer=f"setting {PASSWORD}",
        calls=[
            ProposedCall(call_id="1", tool="accounts.set_password", args={"customer_id": "C-1", "password": PASSWORD}),
            ProposedCall(call_id="2", tool=" Accounts.Set_Password", args={"password": 123456789012}),
            ProposedCall(call_id="3", tool="email.send", args={"subject": "hi", "body": f"it is {PASSWORD}"}),
        ],
    )
    sealed = guard.seal_proposals("acme", decision)
    one, two, three = sealed.calls
    assert is_token(one.args["password"]) and one.args["customer_id"] == "C-1"
    assert is_token(two.args["password"])
    assert three.args == {"subject": "hi", "body": f"it is {REDACTED}"}
    assert sealed.answer == f"setting {REDACTED}"


def test_a_token_moved_into_a_plain_field_is_not_opened(tmp_path: Path) -> None:
    """A model that copies a token into a field that is not secret (an email body) cannot make
    the worker open it there: the call is refused, and the value stays sealed."""
    from tools.backoffice.db import connect, create_schema

    engine = connect(str(tmp_path / "bo.db"))
    create_schema(engine)
    registry = load_registry()
    runner, guard = ToolRunner(registry, engine), ToolSecrets(registry, Keyring.parse(KEY))
    with sealing(guard.keyring, "acme") as sealer:
        token = sealer.seal(PASSWORD)
    args = {"to": "dana@example.com", "subject": "hi", "body": token}
    outcome = guard.call("acme", "email.send", lambda: runner.prepare("email.send", args, "wf", 1))
    assert outcome.kind == "rejected" and outcome.error.startswith("body: Input should be a valid string")


KEYRING = Keyring.parse(KEY)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@hypothesis.settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=200), workspace=st.text(min_size=1, max_size=20))
def test_any_value_round_trips_and_seals_to_one_token(value: str, workspace: str) -> None:
    """Any string, in any workspace: sealing twice gives one token, and opening it gives the value."""
    with sealing(KEYRING, workspace) as first, sealing(KEYRING, workspace) as second:
        token = first.seal(value)
        assert second.seal(value) == token and is_token(token)
        assert second.unseal(token) == value


@hypothesis.settings(max_examples=200, deadline=None)
@given(value=_json, extra=_json)
def test_whatever_a_model_writes_at_a_secret_field_is_sealed(value: Any, extra: Any) -> None:
    """Whatever JSON a model writes where a tool expects a secret is sealed before the workflow
    sees it (only a null stays, as it reveals nothing), and opens to that value's text; the
    other arguments are kept as written unless they quote the secret."""
    guard = ToolSecrets(load_registry(), KEYRING)
    args = {"customer_id": "C-100", "password": value, "extra": extra}
    decision = ModelDecision(model="m", calls=[ProposedCall(call_id="1", tool="accounts.set_password", args=args)])
    sealed = guard.seal_proposals("acme", decision).calls[0].args
    if value is None:
        assert sealed["password"] is None
        return
    assert is_token(sealed["password"])
    clear = value if isinstance(value, str) else canonical_json(value)
    with sealing(KEYRING, "acme") as sealer:
        assert sealer.unseal(sealed["password"]) == clear
    assert sealed["customer_id"] == "C-100"
    hypothesis.assume(clear not in REDACTED)  # the marker itself would then "quote" the secret
    if len(clear) < 4 or not any(clear in text for text in _strings(extra)):
        assert sealed["extra"] == extra
    else:
        assert not any(clear in text for text in _strings(sealed["extra"]))


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(t for v in value.values() for t in _strings(v))]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    return []
