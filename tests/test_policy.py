"""The policy as pure functions: no Temporal, no database."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock.models import Effect, Mode, Outcome, Tier
from airlock.settings import EXAMPLE_POLICY
from policy import CallContext, Policy, PolicyError, decide, load_policy, parse_policy, vote_refusal
from policy.model import Condition, Rule, ToolPolicy

POLICY = load_policy(EXAMPLE_POLICY)
TEXT = EXAMPLE_POLICY.read_text()


def ctx(tool: str = "payments.create_refund", **kw: object) -> CallContext:
    defaults: dict[str, object] = dict(
        workspace="acme", agent="support", requested_by="u_alice", mode=Mode.AUTO, tool=tool,
        effect=Effect.WRITE, tier=Tier.HIGH, args={"order_id": "ORD-1001", "amount_usd": "20"},
        facts={"refundable_usd": "180.00"},
    )
    defaults.update(kw)
    return CallContext.model_validate(defaults)


@pytest.mark.parametrize(
    ("amount", "refundable", "mode", "outcome", "rule"),
    [
        ("20", "180", Mode.AUTO, Outcome.ALLOW, "agent.capabilities"),
        ("50", "180", Mode.AUTO, Outcome.ALLOW, "agent.capabilities"),
        ("50.01", "180", Mode.AUTO, Outcome.APPROVE, "refund.over-50-approval"),
        ("20", "180", Mode.APPROVE, Outcome.APPROVE, "mode.approve"),
        ("200", "180", Mode.AUTO, Outcome.DENY, "refund.within-refundable"),
        ("200.01", "950", Mode.AUTO, Outcome.DENY, "refund.max-200"),
        ("20", "180", Mode.SUGGEST, Outcome.DENY, "mode.suggest"),
    ],
)
def test_refund_rules(amount: str, refundable: str, mode: Mode, outcome: Outcome, rule: str) -> None:
    """The shipped refund limits: above 200 or above refundable denied, above 50 approved."""
    d = decide(POLICY, ctx(mode=mode, args={"amount_usd": amount}, facts={"refundable_usd": refundable}))
    assert (d.outcome, d.rule) == (outcome, rule)


def test_a_missing_fact_fails_closed() -> None:
    """A rule that cannot be evaluated (no preview fact) counts as matching: deny, not allow."""
    d = decide(POLICY, ctx(args={"amount_usd": "20"}, facts={}))
    assert (d.outcome, d.rule) == (Outcome.DENY, "refund.within-refundable")


def test_approval_needs_what_the_tier_says() -> None:
    d = decide(POLICY, ctx(args={"amount_usd": "120"}))
    assert d.tier is Tier.HIGH and d.approvals_required == 1 and d.approver_roles == ["approver"]
    assert d.timeout_s == 86_400


@pytest.mark.parametrize(
    ("to", "outcome"),
    [("dana@example.com", Outcome.APPROVE), ("ops@ACME.test", Outcome.APPROVE), ("x@evil.test", Outcome.DENY),
     ("x@example.com.evil.test", Outcome.DENY), ("no-at-sign", Outcome.DENY)],
)
def test_email_domains(to: str, outcome: Outcome) -> None:
    """Email goes only to the allowed domains, and always waits for a person."""
    d = decide(POLICY, ctx("email.send", effect=Effect.EXTERNAL, args={"to": to}, facts={}))
    assert d.outcome is outcome


@pytest.mark.parametrize(("changes", "outcome"), [({"phone": "1"}, Outcome.ALLOW), ({"phone": "1", "name": "x"}, Outcome.DENY)])
def test_crm_allowed_fields(changes: dict[str, str], outcome: Outcome) -> None:
    d = decide(POLICY, ctx("crm.update_customer", tier=Tier.MEDIUM, args={"customer_id": "C-100", "changes": changes}, facts={}))
    assert d.outcome is outcome


def test_capabilities_deny_by_default() -> None:
    d = decide(POLICY, ctx("payments.void_refund"))
    assert (d.outcome, d.rule) == (Outcome.DENY, "agent.capabilities")
    assert decide(POLICY, ctx(agent="intruder")).outcome is Outcome.DENY


def test_safe_mode_refuses_writes_and_lets_reads_through() -> None:
    ws = POLICY.workspaces["acme"].model_copy(update={"safe_mode": True})
    safe = POLICY.model_copy(update={"workspaces": {**POLICY.workspaces, "acme": ws}})
    assert decide(safe, ctx()).reason == "safe_mode"
    assert decide(safe, ctx("orders.get_order", effect=Effect.READ, tier=Tier.LOW)).outcome is Outcome.ALLOW


@pytest.mark.parametrize(
    ("approver", "reason"),
    [
        ("u_alice", "self-approval: u_alice requested this run"),
        ("u_dave", "u_dave lacks the role this tier needs (one of: approver)"),
        ("u_bob", None),
    ],
)
def test_vote_refusals(approver: str, reason: str | None) -> None:
    got = vote_refusal(POLICY, approver=approver, requested_by="u_alice", approver_roles=["approver"],
                       required_role=None, approvals_still_needed=1, earlier_voters=[])
    assert got == reason


def test_critical_tier_last_vote_needs_an_admin() -> None:
    """Two approvers where one must be an admin: a second non-admin is refused."""
    common = dict(requested_by="u_alice", approver_roles=["approver", "admin"], required_role="admin")
    bigger = POLICY.model_copy(update={"people": {**POLICY.people, "u_erin": POLICY.people["u_bob"]}})
    assert vote_refusal(bigger, approver="u_erin", approvals_still_needed=1, earlier_voters=["u_bob"], **common) == (
        "the last approval must come from someone with role admin"
    )
    assert vote_refusal(bigger, approver="u_carol", approvals_still_needed=1, earlier_voters=["u_bob"], **common) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("max_autonomy: suggest", "max_autonomy: yolo"), "example.yaml:13: workspaces.sandbox.max_autonomy: Input should be"),
        (("  u_dave: {roles: []}", "  u_dave: {roles: []}\n  u_bob: {roles: []}"), "key 'u_bob' is given twice (first at line 18)"),
        (("when: {arg: amount_usd, gt: 200}", "when: {arg: amount_usd, gt: 200, lt: 5}"), "rules.0.when: Value error, a condition needs exactly one of"),
        (("    safe_mode: false\n  sandbox", "    safe_mode: false\n    unsafe: true\n  sandbox"), "workspaces.acme.unsafe: Extra inputs are not permitted"),
        (("agents:", "agents: [\n"), "not valid YAML"),
        (("  critical:\n", "  critical_typo:\n"), "tiers.critical_typo"),
    ],
)
def test_a_bad_policy_file_is_refused_with_line_and_reason(change: tuple[str, str], message: str) -> None:
    """A reviewer's typo never becomes a silently looser policy: the loader names line and reason."""
    old, new = change
    assert old in TEXT
    with pytest.raises(PolicyError) as error:
        parse_policy(TEXT.replace(old, new, 1), "example.yaml")
    assert message in str(error.value)


def test_content_hash_ignores_layout_but_not_meaning() -> None:
    commented = parse_policy("# reviewed 2026-11-01\n" + TEXT)
    assert commented.content_hash() == POLICY.content_hash()
    looser = parse_policy(TEXT.replace("gt: 200", "gt: 2000"))
    assert looser.content_hash() != POLICY.content_hash()


def test_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "nope.yaml")


# ---- policy laws, as properties ---------------------------------------------------------------

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2)
modes = st.sampled_from(list(Mode))


def with_rules(rules: list[Rule]) -> Policy:
    return POLICY.model_copy(update={"tools": {**POLICY.tools, "payments.create_refund": ToolPolicy(rules=rules)}})


rule_strategy = st.builds(
    Rule,
    id=st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
    effect=st.sampled_from(["deny", "require_approval"]),
    when=st.one_of(
        st.builds(Condition, arg=st.just("amount_usd"), gt=amounts),
        st.builds(Condition, arg=st.just("amount_usd"), lt=amounts),
        st.builds(Condition, always=st.just(True)),
    ),
)


@settings(max_examples=200, deadline=None)
@given(rules=st.lists(rule_strategy, max_size=6, unique_by=lambda r: r.id), amount=amounts, mode=modes)
def test_decisions_do_not_depend_on_rule_order(rules: list[Rule], amount: Decimal, mode: Mode) -> None:
    call = ctx(mode=mode, args={"amount_usd": str(amount)})
    forward = decide(with_rules(rules), call)
    backward = decide(with_rules(list(reversed(rules))), call)
    assert forward == backward


@settings(max_examples=200, deadline=None)
@given(rules=st.lists(rule_strategy, max_size=6, unique_by=lambda r: r.id), amount=amounts, mode=modes)
def test_a_matching_deny_always_wins(rules: list[Rule], amount: Decimal, mode: Mode) -> None:
    call = ctx(mode=mode, args={"amount_usd": str(amount)})
    deny = Rule(id="zz-deny", effect="deny", when=Condition(always=True))
    assert decide(with_rules([*rules, deny]), call).outcome is Outcome.DENY


@settings(max_examples=200, deadline=None)
@given(rules=st.lists(rule_strategy, max_size=6, unique_by=lambda r: r.id), amount=amounts)
def test_removing_a_rule_never_makes_a_decision_stricter(rules: list[Rule], amount: Decimal) -> None:
    """Rules only restrict: fewer rules can only keep or loosen a decision (deny by default
    lives in capabilities, not rules)."""
    strictness = {Outcome.ALLOW: 0, Outcome.APPROVE: 1, Outcome.DENY: 2}
    call = ctx(args={"amount_usd": str(amount)})
    full = decide(with_rules(rules), call)
    for i in range(len(rules)):
        fewer = decide(with_rules(rules[:i] + rules[i + 1 :]), call)
        assert strictness[fewer.outcome] <= strictness[full.outcome]
