"""Adversarial inputs, as properties (hypothesis): run inputs, signal and update payloads, tool
arguments and policy files.

Two promises are checked for every generated input, against the real Temporal dev server from
`conftest.py`: nothing ever leaves a workflow task failing in a loop (no WORKFLOW_TASK_FAILED
event in the run's history, no pending workflow task on a second attempt), and every rejection
names what is wrong. The policy-file property is pure: a mutated file either loads or is refused
with a `file:LINE:` message.

Example counts are kept small on purpose (each server-backed example is a real run); hypothesis
still explores different inputs on every test session. What these suites found, and the
regression tests for it, are in docs/threats.md ("Findings fixed").
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx2
import pytest
import pytest_asyncio
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.openai_provider import OpenAIProvider
from contracts.models import (
    FINAL_STATES,
    CallStatus,
    DecideResult,
    Effect,
    Outcome,
    RunInput,
    RunReport,
    RunState,
)
from policy import Policy, PolicyError, load_policy, parse_policy
from policy.engine import may_start
from runtime.settings import EXAMPLE_POLICY, Settings
from tests.adversarial_support import (
    VOTE_REASONS,
    assert_not_stuck,
    outcome,
    settle,
    timeline,
)
from tests.conftest import Runs, call, count_rows, fake_openai, run_input
from tools.backoffice.db import emails, refunds
from worker import build_worker

POLICY = load_policy(EXAMPLE_POLICY)
POLICY_TEXT = EXAMPLE_POLICY.read_text()

SERVER = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- values an attacker or a sloppy caller might send -------------------------------------------

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=24)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=10,
)
tricky_names = st.sampled_from(
    [
        "acme",
        "sandbox",
        "nowhere",
        "",
        "   ",
        "support",
        "admin",
        "u_alice",
        "u_bob",
        "u_carol",
        "u_dave",
        "U_ALICE",
        " u_alice ",
        "u_\u0430lice",
        "suggest",
        "approve",
        "auto",
        "AUTO",
        "yolo",
        "scripted",
        "openai",
        "gpt-4o-mini",
        "x" * 201,
        "'; DROP TABLE refunds; --",
        "{{7*7}}",
    ]
)
values = tricky_names | json_values


# --- 1. run inputs ---------------------------------------------------------------------------------

FIELDS = ["goal", "workspace", "requested_by", "agent", "model", "mode", "budget", "steps_per_history"]
NESTED = [("model", k) for k in ("provider", "name", "script", "temperature")] + [
    ("budget", k) for k in ("max_steps", "max_tool_calls", "max_tokens", "max_cost_usd", "max_wall_clock_s")
]


def base_input() -> dict[str, Any]:
    return run_input(script=[call("orders.get_order", order_id="ORD-1001"), {"answer": "done"}])


@st.composite
def run_inputs(draw: st.DrawFn) -> tuple[Any, set[str]]:
    """A valid run input with 1-3 fields set, removed or added, or no object at all; and the
    top-level fields that were touched (the only places a rejection may point at)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values.filter(lambda v: not isinstance(v, dict))), {"(arguments)"}
    raw, touched = base_input(), set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "drop", "nested", "extra"]))
        if kind == "set":
            field = draw(st.sampled_from(FIELDS))
            raw[field] = draw(values)
        elif kind == "drop":
            field = draw(st.sampled_from(FIELDS))
            raw.pop(field, None)
        elif kind == "extra":
            field = draw(st.sampled_from(["colour", "approved_by", "policy", "__proto__", "Mode"]))
            raw[field] = draw(values)
        else:
            field, key = draw(st.sampled_from(NESTED))
            if not isinstance(raw.get(field), dict):
                raw[field] = {}
            raw[field][key] = draw(values)
        touched.add(field)
    return raw, touched


def locally_acceptable(raw: Any) -> bool:
    """Whether the input fits RunInput and the policy lets it start, judged outside Temporal."""
    try:
        parsed = RunInput.model_validate(raw)
    except ValidationError:
        return False
    return may_start(POLICY, parsed.workspace, parsed.agent, parsed.requested_by) is None


def names_a_touched_field(message: str, touched: set[str]) -> bool:
    detail = message.split(": ", 1)[1] if message.startswith("invalid run input: ") else message
    if message.startswith("run refused by policy "):
        detail = message.split(": ", 1)[1]
    return any(re.search(rf"(?:^|; ){re.escape(field)}[.:]", detail) for field in touched)


def _refusing_openai(settings: Settings) -> OpenAIProvider:
    """An `openai` provider whose server refuses every request (HTTP 400): a generated run that
    asks for openai ends quickly and deterministically, whatever the environment holds."""

    def refuse(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(400, json={"error": {"message": "refused by the test", "type": "invalid_request_error"}})

    return fake_openai(settings, refuse)


@pytest_asyncio.fixture(loop_scope="session")
async def sealed_worker(client: Client, settings: Settings) -> AsyncIterator[Worker]:
    async with build_worker(client, settings, openai=_refusing_openai(settings)) as w:
        yield w


@SERVER
@given(generated=run_inputs())
async def test_any_run_input_fails_fast_naming_the_field_or_runs_to_an_end(
    client: Client, settings: Settings, sealed_worker: Worker, generated: tuple[Any, set[str]]
) -> None:
    """Whatever JSON is given as a run's input, the run either fails at once, non-retryably,
    with a message naming a field that was actually wrong, or it runs to a final state. The
    outcome agrees with validating the input outside Temporal, and no workflow task ever
    fails."""
    raw, touched = generated
    runs = Runs(client, settings)
    handle = await runs.start_raw(raw)
    result = await outcome(handle)
    event(f"outcome: {result.type if isinstance(result, ApplicationError) else result.state.value}")
    if isinstance(result, ApplicationError):
        assert result.type in ("InvalidRunInput", "RunNotAllowed"), result
        assert not locally_acceptable(raw), f"acceptable input refused: {result.message}"
        assert names_a_touched_field(result.message, touched), (result.message, touched)
    else:
        assert result.state in FINAL_STATES
        assert locally_acceptable(raw), f"unacceptable input ran: {raw!r}"
    await assert_not_stuck(client, handle)


# --- 2. signal and update payloads ----------------------------------------------------------------

CURRENT, STALE = "<current approval>", "<stale approval>"
people = st.sampled_from(
    [
        "u_bob",
        "u_carol",
        "u_alice",
        "u_dave",
        "u_zed",
        "U_BOB",
        " u_carol ",
        "u_b\u043eb",
        "u_bob\u200b",
        "",
        "*",
        "u_bob, u_carol",
        "x" * 201,
    ]
)
approval_ids = st.sampled_from([CURRENT, CURRENT, STALE, "apr-1-0-0000000000", "", "*", "x" * 201]) | st.text(
    max_size=16
)
vote_payloads = st.fixed_dictionaries(
    {},
    optional={
        "approval_id": approval_ids | json_values,
        "approver": people | json_values,
        "comment": st.text(max_size=20) | json_values,
        "reason": st.text(max_size=20) | json_values,
        "decision": st.sampled_from(["approve", "deny", "maybe", "APPROVE"]) | json_values,
        "by": people | json_values,
        "approvals_still_needed": json_values,
    },
)
# Well-formed votes and pauses from anyone, so that some count and the rest fail on who sent them.
plausible = st.fixed_dictionaries(
    {"approval_id": st.sampled_from([CURRENT, CURRENT, CURRENT, STALE]), "approver": people},
    optional={"decision": st.sampled_from(["approve", "deny"]), "comment": st.text(max_size=12)},
) | st.fixed_dictionaries({"by": people}, optional={"reason": st.text(max_size=12)})
messages = st.lists(
    st.tuples(
        st.sampled_from(["approve", "deny", "decide", "pause", "resume"]),
        st.one_of(plausible, plausible, vote_payloads, json_values),
    ),
    min_size=1,
    max_size=6,
)
ALLOWED_DOMAINS = ("example.com", "acme.test")
EMAILS = [
    call("email.send", to="dana@example.com", subject=f"update {i}", body="Your refund is on its way.")
    for i in range(8)
]


def _resolve(payload: Any, current: str | None, stale: str | None) -> Any:
    if isinstance(payload, dict):
        return {k: _resolve(v, current, stale) for k, v in payload.items()}
    if payload == CURRENT:
        return current or "apr-9-9-none"
    if payload == STALE:
        return stale or "apr-1-0-0000000000"
    return payload


@SERVER
@given(sent=messages)
async def test_any_signal_or_update_payload_is_counted_or_refused_with_its_reason(
    client: Client, runs: Runs, db: Engine, sent: list[tuple[str, Any]]
) -> None:
    """Any mix of approve/deny signals, `decide` updates and pause/resume signals, with any JSON
    payload, sent to a run waiting for approval: every vote either counts, and then only from a
    holder of the approver role who is not the requester, or is refused and kept with a reason
    that names what is wrong; every pause/resume is applied or recorded as malformed; an email
    goes out only with an approval; no workflow task fails."""
    handle = await runs.start(mode="auto", script=EMAILS)
    seen: list[str] = []
    votes_sent = pauses_sent = 0
    for name, raw_payload in sent:
        status = await settle(runs, handle)
        current = status.pending_approvals[0].approval_id if status.pending_approvals else None
        if current and current not in seen:
            seen.append(current)
        stale = seen[-2] if len(seen) > 1 else None
        payload = _resolve(raw_payload, current, stale)
        if name == "decide":
            votes_sent += 1
            answer = await asyncio.wait_for(handle.execute_update("decide", payload, result_type=DecideResult), 10)
            if not answer.accepted:
                assert answer.reason and VOTE_REASONS.match(answer.reason), answer.reason
        else:
            votes_sent += name in ("approve", "deny")
            pauses_sent += name in ("pause", "resume")
            await handle.signal(name, payload)
    await settle(runs, handle)
    await handle.cancel()
    report = await asyncio.wait_for(handle.result(), 15)

    assert report.state is RunState.STOPPED
    counted = [v for c in report.calls for v in c.votes]
    event(f"votes counted: {len(counted)}, refused: {len(report.refused_votes)}")
    assert len(counted) + len(report.refused_votes) == votes_sent
    for refused in report.refused_votes:
        assert VOTE_REASONS.match(refused.reason), refused.reason
    assert all(v.approver in ("u_bob", "u_carol") for v in counted), counted
    entries = await timeline(handle)
    pause_entries = [e for e in entries if e.kind in ("paused", "resumed")]
    assert len(pause_entries) == pauses_sent
    for entry in pause_entries:
        if entry.outcome == "refused":
            # Malformed, or a resume by someone who may not lift this pause (not its sender, an
            # admin or an approver): either way the entry names what is wrong.
            assert entry.message and (
                re.match(r"^(pause|resume) ignored: malformed payload: .+", entry.message)
                or (
                    entry.kind == "resumed"
                    and re.match(
                        r"^the run was paused by \S+; only they, an admin or an approver may resume it$", entry.message
                    )
                    and entry.actor not in ("u_bob", "u_carol")
                )
            ), (entry.actor, entry.message)
    for record in report.calls:
        if record.status is CallStatus.EXECUTED:
            assert [v.decision for v in record.votes][-1:] == ["approve"], record
            assert record.args["to"].rsplit("@", 1)[1] in ALLOWED_DOMAINS
    sent_mail = count_rows(db, emails, emails.c.sent_by == handle.id)
    assert sent_mail == sum(c.status is CallStatus.EXECUTED for c in report.calls)
    await assert_not_stuck(runs.client, handle)


# --- 3. tool arguments ------------------------------------------------------------------------------

TEMPLATES: dict[str, dict[str, Any]] = {
    "orders.get_order": {"order_id": "ORD-1001"},
    "crm.get_customer": {"customer_id": "C-100"},
    "crm.update_customer": {"customer_id": "C-101", "changes": {"phone": "+1-555-0199"}},
    "tickets.create_ticket": {
        "subject": "Broken carafe",
        "body": "see photos",
        "priority": "low",
        "order_id": "ORD-1001",
    },
    "tickets.update_ticket": {"ticket_id": "T-17", "changes": {"priority": "high"}},
    "payments.create_refund": {"order_id": "ORD-1002", "amount_usd": 30, "reason": "damaged"},
    "payments.list_refunds": {"order_id": "ORD-1001"},
    "payments.void_refund": {"refund_id": "RF-0000000000"},
    "email.send": {"to": "dana@example.com", "subject": "Hello", "body": "Your order."},
    "kb.search": {"query": "refund"},
}
TOOL_NAMES = [*TEMPLATES, "shell.exec", "orders.get_order ", "ORDERS.GET_ORDER", "payments__create_refund", "x" * 200]
ARG_VALUES = st.sampled_from(
    [
        0,
        -1,
        0.001,
        50,
        50.01,
        120,
        199.99,
        200,
        200.01,
        950,
        10**12,
        "120",
        "NaN",
        "Infinity",
        "1e3",
        "12.345",
        True,
        None,
        "ORD-1001",
        "ORD-1002",
        "ORD-9999",
        "ORD-1001' OR '1'='1",
        "C-100",
        "T-17",
        "",
        "attacker@evil.test",
        "dana@example.com",
        "x@example.com.evil.test",
        "dana@example.com\nBcc: a@evil.test",
        "ATTACKER@EXAMPLE.COM",
        "a@ex\u0430mple.com",
        {"name": "Mallory"},
        {"email": "attacker@evil.test"},
        {"status": "deleted"},
        {"priority": "urgent", "assignee": "u_mallory"},
        {},
        [],
        "x" * 20_001,
    ]
)


@st.composite
def tool_calls(draw: st.DrawFn) -> dict[str, Any]:
    tool = draw(st.sampled_from(TOOL_NAMES))
    args = dict(TEMPLATES.get(tool.strip().lower(), {"order_id": "ORD-1001"}))
    shape = draw(st.sampled_from(["template", "change", "change", "extra", "drop", "junk"]))
    keys = sorted(args)
    if shape == "change" and keys:
        args[draw(st.sampled_from(keys))] = draw(ARG_VALUES | json_values)
    elif shape == "extra":
        args[draw(st.sampled_from(["approved", "approval_id", "force", "sudo", "amount_usd"]))] = draw(ARG_VALUES)
    elif shape == "drop" and keys:
        args.pop(draw(st.sampled_from(keys)))
    elif shape == "junk":
        args = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4))
    return {"tool": tool, "args": args}


def names_the_problem(error: str, tool: str, args: dict[str, Any]) -> bool:
    """The error starts with the argument it is about, or is one of the tools' own refusals."""
    fields = set(args) | set(TEMPLATES.get(tool, {})) | {"(arguments)"}
    return (
        any(error.startswith((f"{field}:", f"{field}.")) for field in fields)
        or error.startswith(("unknown tool ", "no order ", "no customer ", "no ticket ", "no refund "))
        or bool(re.match(r"^refund of \S+ USD exceeds the \S+ USD still refundable on \S+$", error))
    )


@SERVER
# Distinct calls: a repeated identical call is the loop detector's business (see
# test_adversarial_owasp.py::test_overload_a_looping_agent_is_stopped_by_its_budget).
@given(
    script=st.lists(tool_calls(), min_size=1, max_size=4, unique_by=lambda c: json.dumps(c, sort_keys=True)),
    mode=st.sampled_from(["auto", "approve"]),
    data=st.data(),
)
async def test_any_tool_arguments_are_validated_governed_and_named(
    client: Client, runs: Runs, db: Engine, script: list[dict[str, Any]], mode: str, data: st.DataObject
) -> None:
    """Whatever tool names and arguments a model proposes, every call ends executed, denied by a
    named rule, or invalid/failed with an error naming the argument or the problem; a tool
    outside the agent's capabilities is refused without even a preview; no write runs outside
    the policy (over 200 USD, beyond the allowed email domains or CRM fields) or without the
    approval the policy demands; and the database holds exactly the writes the report shows."""
    handle = await runs.start(mode=mode, script=script)
    approved: set[str] = set()
    while True:
        status = await settle(runs, handle)
        if status.state in FINAL_STATES:
            break
        pending = status.pending_approvals[0]
        choice = data.draw(st.sampled_from(["approve", "deny"]), label=f"vote on {pending.tool}")
        voter = "u_bob" if choice == "approve" else "u_carol"
        vote = {"approval_id": pending.approval_id, "approver": voter, "decision": choice}
        answer = await handle.execute_update("decide", vote, result_type=DecideResult)
        assert answer.accepted, answer
        if choice == "approve":
            approved.add(pending.approval_id)
    report: RunReport = await asyncio.wait_for(handle.result(), 15)
    assert report.state is RunState.COMPLETED
    for record in report.calls:
        event(f"{record.status.value}")

    for record in report.calls:
        if record.status is CallStatus.INVALID or record.status is CallStatus.FAILED:
            assert record.error and names_the_problem(record.error, record.tool, record.args), record.error
        if record.status is CallStatus.DENIED:
            assert record.decision is not None and record.decision.rule and record.error
        if record.tool == "payments.void_refund":
            assert record.status is CallStatus.DENIED and record.decision.rule == "agent.capabilities"
            assert record.diff == [] and record.facts == {}, "previewed a tool the agent may not call"
        if record.status is not CallStatus.EXECUTED or record.effect is Effect.READ:
            continue
        decision = record.decision
        assert decision is not None
        if decision.outcome is Outcome.APPROVE or mode == "approve":
            assert record.approval_id in approved and [v.approver for v in record.votes] == ["u_bob"], record
        else:
            assert decision.outcome is Outcome.ALLOW
        if record.tool == "payments.create_refund":
            amount = Decimal(str(record.args["amount_usd"]))
            assert amount <= 200 and (amount <= 50 or record.votes), record
        if record.tool == "email.send":
            assert record.args["to"].rsplit("@", 1)[1].lower() in ALLOWED_DOMAINS and record.votes
        if record.tool == "crm.update_customer":
            assert set(record.args["changes"]) <= {"email", "phone", "tier", "notes"}

    executed = {t: sum(c.status is CallStatus.EXECUTED and c.tool == t for c in report.calls) for t in TEMPLATES}
    refund_rows = count_rows(db, refunds, refunds.c.created_by == handle.id)
    email_rows = count_rows(db, emails, emails.c.sent_by == handle.id)
    assert refund_rows == executed["payments.create_refund"]
    assert email_rows == executed["email.send"]
    await assert_not_stuck(client, handle)


# --- 4. policy files (pure) -------------------------------------------------------------------------

LINES = POLICY_TEXT.splitlines()
# YAML-ish debris, tags, complex and merge keys and deep nesting included.
TOKENS = st.sampled_from(
    [
        "!!int abc",
        "!!python/name:os.system ",
        "!!timestamp x",
        "? [a]\n: c\n",
        "<<: 5\n",
        "[" * 1200,
        ":",
        ": ",
        "-",
        "- ",
        " ",
        "  ",
        "\t",
        "{",
        "}",
        "[",
        "]",
        ",",
        "#",
        "'",
        '"',
        "|",
        ">",
        "~",
        "%",
        "@",
        "`",
        "&a ",
        "null",
        "true",
        "yes",
        "no",
        "0x1F",
        "1e3",
        "-1",
        "0",
        "99999999999999999999",
        ".inf",
        ".nan",
        "approvals: 3",
        "unknown_key: 1",
        "  - id: refund.max-200\n",
        "effect: allow",
        "when: {}",
        "when: {arg: amount_usd, gt: 1, lt: 2}",
        "max_autonomy: root",
        "roles: [admin]",
        "\n",
        "\n\n",
        "---\n",
        "...\n",
        "\u00e9",
        "\u200b",
        "\x85",
        "\ufeff",
    ]
)


@st.composite
def mutated_policies(draw: st.DrawFn) -> str:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(
            st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent", "insert", "replace_value", "truncate"])
        )
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "indent":
            lines[i] = draw(st.sampled_from([" ", "  ", "    "])) + lines[i]
        elif kind == "dedent":
            lines[i] = lines[i][draw(st.integers(1, 4)) :]
        elif kind == "insert":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(TOKENS) + lines[i][at:]
        elif kind == "replace_value" and ": " in lines[i]:
            key = lines[i].split(": ", 1)[0]
            lines[i] = key + ": " + draw(TOKENS | st.text(alphabet="abc01 -_.", max_size=8))
        elif kind == "truncate":
            lines = lines[:i]
    return "\n".join(lines) + "\n"


LINE_PREFIX = re.compile(r"^example\.yaml:(\d+): \S")


@settings(max_examples=400, deadline=None, database=None)
@given(text=mutated_policies())
def test_a_mutated_policy_loads_or_is_refused_with_file_and_line(text: str) -> None:
    """Any line-level or token-level mutation of the shipped policy either loads into a Policy,
    or raises PolicyError (never another exception) in which every problem starts with
    `example.yaml:LINE:` and LINE is a line of the file; the only message without a line is the
    one for a file with nothing in it."""
    try:
        loaded = parse_policy(text, "example.yaml")
    except PolicyError as error:
        message = str(error)
        if message == "example.yaml: the policy file is empty":
            assert yaml.compose(text, Loader=yaml.SafeLoader) is None, "a file with content called empty"
            return
        problems = message.split("\n")
        assert problems and all(LINE_PREFIX.match(p) for p in problems), message
        last = len(text.splitlines()) + 1
        assert all(1 <= int(LINE_PREFIX.match(p).group(1)) <= last for p in problems), message
    else:
        assert isinstance(loaded, Policy)


@pytest.mark.parametrize(
    "hostile",
    [
        "version: 1\nworkspaces: {acme: {max_autonomy: auto}}\n" * 2,
        POLICY_TEXT.replace("effect: deny", "effect: allow", 1),
        POLICY_TEXT.replace("approvals: 2", "approvals: 0"),
        POLICY_TEXT.replace("  u_dave: {roles: []}", "  u_dave: {roles: []}\n  u_dave: {roles: [admin]}"),
        POLICY_TEXT.replace("when: {always: true}", "when: {always: false}"),
        POLICY_TEXT.replace("when: {arg: to, domain_not_in: [acme.test, example.com]}", "when: {arg: to}"),
        POLICY_TEXT.replace("      - id: refund.max-200", "      - id: Refund Max!"),
        POLICY_TEXT.replace(
            "  u_carol: {roles: [approver, admin]}", "  u_carol: {roles: [approver, admin], sudo: true}"
        ),
    ],
    ids=[
        "duplicate-top-keys",
        "effect-allow",
        "zero-approvers",
        "person-given-twice",
        "always-false",
        "no-operator",
        "bad-rule-id",
        "unknown-person-key",
    ],
)
def test_policy_edits_that_would_loosen_it_are_refused_with_line(hostile: str) -> None:
    """Edits an insider might try in order to loosen the policy quietly (a rule that allows, zero
    approvers, a person given twice with more roles, a condition that never holds or has no
    operator) are refused with the file, the line and the reason."""
    with pytest.raises(PolicyError) as error:
        parse_policy(hostile, "example.yaml")
    assert all(LINE_PREFIX.match(p) for p in str(error.value).split("\n")), str(error.value)
