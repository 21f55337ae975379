"""Figure 3: how long `policy.engine` takes on the shipped policies, per call.

Each call is timed on its own (perf_counter_ns around one decision), after a warm-up, for the
three calls of the job. "as in a step" adds what `GovernedRun._govern` does around the decision:
building the `CallContext` and copying it with the previewed arguments and facts.

The example policies (`policy/banking-example.yaml`, `policy/messaging-example.yaml`) are timed
the same way on calls that reach every family of operator: facts compared with `eq`, `all`,
`regex`, presence, URL domains, links in a long text, e-mail domains. `EXAMPLE_CASES` names what
each call must decide (tests/unit/test_example_policies.py holds them to it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bench.common import CALLS, percentile
from contracts.models import Mode
from contracts.policy import Policy

# From the submodules: after workflow code has run in the sandbox, the package attribute
# `policy.engine` can be the submodule rather than the function.
from policy.engine import CallContext, decide
from policy.loader import load_policy
from runtime.settings import EXAMPLE_POLICY, Settings
from tools.registry import load_registry

FACTS = {"read": {}, "write": {"refundable_usd": "950.00"}, "denied": {"refundable_usd": "950.00"}}


def _contexts() -> tuple[Any, dict[str, dict[str, Any]]]:
    settings = Settings()
    policy = load_policy(settings.policy_path)
    catalog = {e.name: e for e in load_registry(settings.tool_module_list).catalog()}
    specs: dict[str, dict[str, Any]] = {}
    for kind, call in CALLS.items():
        entry = catalog[call["tool"]]
        specs[kind] = {
            "base": dict(
                workspace="acme",
                agent="support",
                requested_by="u_alice",
                mode=Mode.APPROVE,
                tool=call["tool"],
                effect=entry.effect,
                tier=entry.tier,
                args=call["args"],
            ),
            "facts": FACTS[kind],
        }
    return policy, specs


def measure(iterations: int) -> dict[str, Any]:
    policy, specs = _contexts()
    out: dict[str, Any] = {"iterations": iterations, "kinds": {}}
    clock = time.perf_counter_ns
    # What the clock itself costs, to read the figures against.
    overhead = []
    for _ in range(iterations):
        a = clock()
        overhead.append(clock() - a)
    out["clock_overhead_ns_p50"] = percentile(overhead, 50)
    for kind, spec in specs.items():
        ctx = CallContext(**spec["base"]).model_copy(update={"facts": spec["facts"]})
        decision = decide(policy, ctx)
        for _ in range(min(2000, iterations)):  # warm-up
            decide(policy, ctx)
        alone: list[int] = []
        for _ in range(iterations):
            a = clock()
            decide(policy, ctx)
            alone.append(clock() - a)
        in_step: list[int] = []
        for _ in range(iterations):
            a = clock()
            c = CallContext(**spec["base"])
            decide(policy, c.model_copy(update={"args": spec["base"]["args"], "facts": spec["facts"]}))
            in_step.append(clock() - a)
        out["kinds"][kind] = {
            "outcome": f"{decision.outcome.value} ({decision.rule})",
            "decide_us": (percentile(alone, 50) / 1000, percentile(alone, 99) / 1000),
            "in_step_us": (percentile(in_step, 50) / 1000, percentile(in_step, 99) / 1000),
        }
    return out


@dataclass(frozen=True)
class Case:
    """One call on an example policy and what it must decide (outcome, and the first rule)."""

    label: str
    tool: str
    args: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    outcome: str = "allow"
    rule: str = "agent.capabilities"


@dataclass(frozen=True)
class Example:
    policy: str
    tools: str
    workspace: str
    agent: str
    cases: list[Case]


RENT_IBAN = "GB33BUKB20201555555555"
STRANGER_IBAN = "DE89370400440532013000"
HOLDER = {"account_holder": "u_alice", "balance_usd": "2500.00"}
# A long post with several links, the most text `links_outside` and `len_gt` read on one call.
LONG_POST = " ".join(
    f"Item {i}: see https://wiki.team.example/releases/4.{i} and www.team.example/notes/{i}." for i in range(20)
)

EXAMPLE_CASES = [
    Example(
        policy="banking-example.yaml",
        tools="tools.examples.banking",
        workspace="home",
        agent="banking",
        cases=[
            Case("pay a saved payee", "bank.pay",
                 {"account_id": "A-100", "iban": RENT_IBAN, "amount_usd": "120.00", "memo": "December rent"},
                 {**HOLDER, "recipient_is_known_payee": True}),
            Case("pay someone new", "bank.pay",
                 {"account_id": "A-100", "iban": STRANGER_IBAN, "amount_usd": "90.00", "memo": "invoice 2291"},
                 {**HOLDER, "recipient_is_known_payee": False}, "needs_approval", "pay.new-recipient"),
            Case("a link in the memo", "bank.pay",
                 {"account_id": "A-100", "iban": RENT_IBAN, "amount_usd": "20.00", "memo": "see HTTPS://evil.example"},
                 {**HOLDER, "recipient_is_known_payee": True}, "needs_approval", "pay.memo-links"),
            Case("2400 USD to someone new", "bank.pay",
                 {"account_id": "A-100", "iban": STRANGER_IBAN, "amount_usd": "2400.00", "memo": "urgent"},
                 {**HOLDER, "recipient_is_known_payee": False}, "deny", "pay.large-to-stranger"),
            Case("a new phone number", "bank.update_profile", {"changes": {"phone": "+44 117 555 0111"}},
                 {"account_holder": "u_alice"}),
            Case("a new name", "bank.update_profile", {"changes": {"name": "Mallory Evans"}},
                 {"account_holder": "u_alice"}, "deny", "profile.no-rename"),
        ],
    ),
    Example(
        policy="messaging-example.yaml",
        tools="tools.examples.messaging",
        workspace="team",
        agent="messaging",
        cases=[
            Case("fetch a team page", "web.fetch", {"url": "https://WIKI.team.example./releases/4.2"}),
            Case("fetch a look-alike", "web.fetch", {"url": "https://team.example.evil.example/login"},
                 outcome="deny", rule="fetch.allowed-domains"),
            Case("a long post, team links", "chat.post_message", {"channel": "team-ops", "text": LONG_POST},
                 {"channel_is_external": False}),
            Case("a phishing post to partners", "chat.post_message",
                 {"channel": "partners", "text": "Please sign in again: https://evil.example/login"},
                 {"channel_is_external": True}, "needs_approval", "post.external-channel"),
            Case("invite an outsider", "chat.invite_user", {"channel": "partners", "email": "mallory@EVIL.example"},
                 {"channel_is_external": True}, "deny", "invite.team-only"),
        ],
    ),
]  # fmt: skip


def example_contexts(example: Example) -> tuple[Policy, list[tuple[Case, CallContext]]]:
    """The example's policy, and each case as the workflow would build its `CallContext`: with
    the catalogue's kinds of the tool's arguments and facts."""
    policy = load_policy(EXAMPLE_POLICY.parent / example.policy)
    catalog = {e.name: e for e in load_registry([example.tools]).catalog()}
    contexts = []
    for case in example.cases:
        entry = catalog[case.tool]
        contexts.append(
            (
                case,
                CallContext(
                    workspace=example.workspace,
                    agent=example.agent,
                    requested_by="u_alice",
                    mode=Mode.AUTO,
                    tool=case.tool,
                    effect=entry.effect,
                    tier=entry.tier,
                    args=case.args,
                    facts=case.facts,
                    arg_kinds=entry.arguments,
                    fact_kinds=entry.facts,
                ),
            )
        )
    return policy, contexts


def measure_examples(iterations: int) -> dict[str, Any]:
    """decide p50/p99 (us) for every case of every example policy, and over all of a policy's
    cases together (each case as often as the others). The cases of a policy are timed in turn,
    one call each round, so that a moment of noise on the machine falls on all of them alike."""
    clock = time.perf_counter_ns
    out: dict[str, Any] = {"iterations": iterations, "policies": {}, "pooled": {}}
    for example in EXAMPLE_CASES:
        policy, contexts = example_contexts(example)
        decisions = [decide(policy, ctx) for _, ctx in contexts]
        for _ in range(min(2000, iterations)):  # warm-up, and the conditions compile once
            for _, ctx in contexts:
                decide(policy, ctx)
        times: list[list[int]] = [[] for _ in contexts]
        for _ in range(iterations):
            for (_, ctx), alone in zip(contexts, times, strict=True):
                a = clock()
                decide(policy, ctx)
                alone.append(clock() - a)
        out["policies"][example.policy] = {
            case.label: {
                "outcome": f"{decision.outcome.value} ({decision.rule})",
                "decide_us": (percentile(alone, 50) / 1000, percentile(alone, 99) / 1000),
            }
            for (case, _), decision, alone in zip(contexts, decisions, times, strict=True)
        }
        pooled = [t for alone in times for t in alone]
        out["pooled"][example.policy] = (percentile(pooled, 50) / 1000, percentile(pooled, 99) / 1000)
    return out


# What the policy engine is held to: a decision under 20 us p50 on each shipped policy (each
# example policy's calls pooled; policy/example.yaml's slowest call of the job). A single call
# may take longer where its text does: the link scan grows with the links in it.
TARGET_P50_US = 20.0


def target_line(job: dict[str, Any], examples: dict[str, Any]) -> str:
    """The target, each shipped policy's pooled p50 against it, and the single calls above it."""
    pooled = {"example.yaml (its slowest call)": max(x["decide_us"][0] for x in job["kinds"].values())}
    pooled.update({name: p50 for name, (p50, _) in examples["pooled"].items()})
    verdict = "met" if all(p50 < TARGET_P50_US for p50 in pooled.values()) else "NOT met"
    figures = ", ".join(f"{name} {p50:.1f}" for name, p50 in pooled.items())
    above = [
        f"{label!r} {x['decide_us'][0]:.1f}"
        for cases in examples["policies"].values()
        for label, x in cases.items()
        if x["decide_us"][0] >= TARGET_P50_US
    ]
    line = f"decide p50 on each shipped policy (target < {TARGET_P50_US:.0f} us): {figures}; {verdict}."
    if above:
        line += f"\nSingle calls at or above {TARGET_P50_US:.0f} us p50: {', '.join(above)}."
    return line
