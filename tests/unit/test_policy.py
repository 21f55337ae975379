"""The policy as pure functions: no Temporal, no database."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.models import Effect, Mode, Outcome, Tier
from contracts.policy import Condition, Rule, ToolPolicy, Workspace
from policy import CallContext, Policy, PolicyError, decide, effective_mode, load_policy, parse_policy, vote_refusal
from runtime.settings import EXAMPLE_POLICY
from tests.conftest import PRODUCTION_POLICY

POLICY = load_policy(EXAMPLE_POLICY)
TEXT = EXAMPLE_POLICY.read_text()


def ctx(tool: str = "payments.create_refund", **kw: object) -> CallContext:
    defaults: dict[str, object] = dict(
        workspace="acme",
        agent="support",
        requested_by="u_alice",
        mode=Mode.AUTO,
        tool=tool,
        effect=Effect.WRITE,
        tier=Tier.HIGH,
        args={"order_id": "ORD-1001", "amount_usd": "20"},
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
    [
        ("dana@example.com", Outcome.APPROVE),
        ("ops@ACME.test", Outcome.APPROVE),
        ("x@evil.test", Outcome.DENY),
        ("x@example.com.evil.test", Outcome.DENY),
        ("no-at-sign", Outcome.DENY),
    ],
)
def test_email_domains(to: str, outcome: Outcome) -> None:
    """Email goes only to the allowed domains, and always waits for a person."""
    d = decide(POLICY, ctx("email.send", effect=Effect.EXTERNAL, args={"to": to}, facts={}))
    assert d.outcome is outcome


@pytest.mark.parametrize(
    ("changes", "outcome"), [({"phone": "1"}, Outcome.ALLOW), ({"phone": "1", "name": "x"}, Outcome.DENY)]
)
def test_crm_allowed_fields(changes: dict[str, str], outcome: Outcome) -> None:
    d = decide(
        POLICY,
        ctx("crm.update_customer", tier=Tier.MEDIUM, args={"customer_id": "C-100", "changes": changes}, facts={}),
    )
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
    got = vote_refusal(
        POLICY,
        approver=approver,
        requested_by="u_alice",
        approver_roles=["approver"],
        required_role=None,
        approvals_still_needed=1,
        earlier_voters=[],
    )
    assert got == reason


def test_critical_tier_last_vote_needs_an_admin() -> None:
    """Two approvers where one must be an admin: a second non-admin is refused."""
    common = dict(requested_by="u_alice", approver_roles=["approver", "admin"], required_role="admin")
    bigger = POLICY.model_copy(update={"people": {**POLICY.people, "u_erin": POLICY.people["u_bob"]}})
    assert vote_refusal(bigger, approver="u_erin", approvals_still_needed=1, earlier_voters=["u_bob"], **common) == (
        "the last approval must come from someone with role admin"
    )
    assert (
        vote_refusal(bigger, approver="u_carol", approvals_still_needed=1, earlier_voters=["u_bob"], **common) is None
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("max_autonomy: suggest", "max_autonomy: yolo"),
            "example.yaml:13: workspaces.sandbox.max_autonomy: Input should be",
        ),
        (
            ("  u_dave: {roles: []}", "  u_dave: {roles: []}\n  u_bob: {roles: []}"),
            "key 'u_bob' is given twice (first at line 18)",
        ),
        (
            ("when: {arg: amount_usd, gt: 200}", "when: {arg: amount_usd, gt: 200, lt: 5}"),
            "rules.0.when: Value error, a condition needs exactly one of",
        ),
        (
            ("    safe_mode: false\n  sandbox", "    safe_mode: false\n    unsafe: true\n  sandbox"),
            "workspaces.acme.unsafe: Extra inputs are not permitted",
        ),
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


# ---- autonomy per role ------------------------------------------------------------------------


def with_roles(
    autonomy_by_role: dict[str, Mode], max_autonomy: Mode = Mode.AUTO, erin: Sequence[str] = ("requester", "lead")
) -> Policy:
    """The example policy, with acme's autonomy set and u_erin holding `erin`'s roles."""
    acme = POLICY.workspaces["acme"].model_copy(
        update={"max_autonomy": max_autonomy, "autonomy_by_role": autonomy_by_role}
    )
    people = {**POLICY.people, "u_erin": POLICY.people["u_alice"].model_copy(update={"roles": list(erin)})}
    return POLICY.model_copy(update={"workspaces": {**POLICY.workspaces, "acme": acme}, "people": people})


def test_a_role_capped_at_approve_turns_auto_into_approve() -> None:
    policy = with_roles({"requester": Mode.APPROVE})
    assert effective_mode(policy, "acme", Mode.AUTO, "u_alice") is Mode.APPROVE
    assert effective_mode(policy, "acme", Mode.SUGGEST, "u_alice") is Mode.SUGGEST
    d = decide(policy, ctx(mode=Mode.AUTO, requested_by="u_alice"))
    assert (d.outcome, d.rule) == (Outcome.APPROVE, "mode.approve")


def test_of_several_listed_roles_the_highest_counts() -> None:
    """A second listed role never takes autonomy away: u_erin holds requester (approve) and lead (auto)."""
    policy = with_roles({"requester": Mode.APPROVE, "lead": Mode.AUTO})
    assert effective_mode(policy, "acme", Mode.AUTO, "u_alice") is Mode.APPROVE
    assert effective_mode(policy, "acme", Mode.AUTO, "u_erin") is Mode.AUTO
    assert decide(policy, ctx(mode=Mode.AUTO, requested_by="u_erin")).outcome is Outcome.ALLOW


@pytest.mark.parametrize(("max_autonomy", "expected"), [(Mode.AUTO, Mode.AUTO), (Mode.APPROVE, Mode.APPROVE)])
def test_a_requester_holding_no_listed_role_is_capped_by_max_autonomy_alone(max_autonomy: Mode, expected: Mode) -> None:
    policy = with_roles({"lead": Mode.SUGGEST}, max_autonomy)
    assert effective_mode(policy, "acme", Mode.AUTO, "u_alice") is expected
    # Without a requester the role map cannot apply; callers that know one pass it.
    assert effective_mode(policy, "acme", Mode.AUTO) is expected


def test_a_role_never_gets_more_than_max_autonomy() -> None:
    policy = with_roles({"requester": Mode.AUTO, "lead": Mode.AUTO}, max_autonomy=Mode.APPROVE)
    assert effective_mode(policy, "acme", Mode.AUTO, "u_erin") is Mode.APPROVE
    assert decide(policy, ctx(mode=Mode.AUTO, requested_by="u_erin")).rule == "mode.approve"


def test_autonomy_by_role_needs_role_names() -> None:
    with pytest.raises(ValueError, match="autonomy_by_role"):
        Workspace.model_validate({"autonomy_by_role": {"": "auto"}})
    with pytest.raises(PolicyError, match=r"workspaces\.acme\.autonomy_by_role\.intern: Input should be"):
        parse_policy(
            TEXT.replace("    max_autonomy: auto ", "    autonomy_by_role: {intern: yolo}\n    max_autonomy: auto ", 1)
        )


# ---- the `auto` effect: lifting one capability --------------------------------------------------

UNDER_20 = Rule(
    id="refund.under-20-auto",
    effect="auto",
    when=Condition(arg="amount_usd", lt=Decimal(20)),
    workspaces=["acme"],
    reason="refunds under 20 USD run on their own in acme",
)


def lifted(*extra: Rule) -> Policy:
    # The sandbox may leave suggest mode here, so that only the rule's scope keeps it unlifted.
    sandbox = POLICY.workspaces["sandbox"].model_copy(update={"max_autonomy": Mode.AUTO})
    refunds = POLICY.tools["payments.create_refund"]
    tool = refunds.model_copy(update={"rules": [*refunds.rules, UNDER_20, *extra]})
    return POLICY.model_copy(
        update={
            "workspaces": {**POLICY.workspaces, "sandbox": sandbox},
            "tools": {**POLICY.tools, "payments.create_refund": tool},
        }
    )


@pytest.mark.parametrize(
    ("amount", "workspace", "mode", "outcome", "rule"),
    [
        ("15", "acme", Mode.APPROVE, Outcome.ALLOW, "refund.under-20-auto"),
        ("15", "acme", Mode.AUTO, Outcome.ALLOW, "refund.under-20-auto"),
        ("25", "acme", Mode.APPROVE, Outcome.APPROVE, "mode.approve"),
        ("15", "sandbox", Mode.APPROVE, Outcome.APPROVE, "mode.approve"),
        ("15", "acme", Mode.SUGGEST, Outcome.DENY, "mode.suggest"),
    ],
)
def test_an_auto_rule_lifts_approve_mode_where_it_applies(
    amount: str, workspace: str, mode: Mode, outcome: Outcome, rule: str
) -> None:
    d = decide(lifted(), ctx(workspace=workspace, mode=mode, args={"amount_usd": amount}))
    assert (d.outcome, d.rule) == (outcome, rule)
    if rule == UNDER_20.id:
        assert d.reason == UNDER_20.reason and d.approvals_required == 0


def test_a_demand_for_approval_beats_an_auto_rule() -> None:
    small = Rule(id="refund.any-approval", effect="require_approval", when=Condition(arg="amount_usd", lt=Decimal(100)))
    d = decide(lifted(small), ctx(mode=Mode.APPROVE, args={"amount_usd": "15"}))
    assert (d.outcome, d.rule) == (Outcome.APPROVE, "refund.any-approval")


def test_an_auto_rule_never_beats_a_deny_safe_mode_capabilities_or_an_always_approve_tier() -> None:
    policy = lifted()
    assert (
        decide(policy, ctx(mode=Mode.APPROVE, args={"amount_usd": "15"}, facts={"refundable_usd": "10"})).rule
        == "refund.within-refundable"
    )
    assert (
        decide(policy, ctx(mode=Mode.APPROVE, args={"amount_usd": "15"}), safe_mode=True).rule == "workspace.safe_mode"
    )
    assert decide(policy, ctx(agent="undo", mode=Mode.APPROVE, args={"amount_usd": "15"})).rule == "agent.capabilities"
    assert decide(policy, ctx(tier=Tier.CRITICAL, mode=Mode.AUTO, args={"amount_usd": "15"})).rule == "tier.critical"


@pytest.mark.parametrize("args", [{}, {"amount_usd": "fifteen"}, {"amount_usd": "NaN"}])
def test_an_auto_rule_that_cannot_be_evaluated_does_not_lift(args: dict[str, str]) -> None:
    """Failing closed for a lift means not lifting: an unreadable amount is not under 20. (Alone,
    so the shipped denies, which match an unreadable amount, do not decide it first.)"""
    d = decide(with_rules([UNDER_20]), ctx(mode=Mode.APPROVE, args=args))
    assert (d.outcome, d.rule) == (Outcome.APPROVE, "mode.approve")


def test_production_example_lifts_small_refunds_and_keeps_interns_to_suggestions() -> None:
    policy = load_policy(PRODUCTION_POLICY)
    assert set(policy.workspaces) == set(POLICY.workspaces) and set(POLICY.people) < set(policy.people)
    assert policy.agents == POLICY.agents and set(policy.tools) == set(POLICY.tools)

    def refund(amount: str, **kw: object) -> tuple[Outcome, str]:
        d = decide(policy, ctx(**{"mode": Mode.APPROVE, "args": {"order_id": "ORD-1001", "amount_usd": amount}, **kw}))
        return d.outcome, d.rule

    assert refund("15") == (Outcome.ALLOW, "refund.under-20-auto")
    assert refund("19.99", mode=Mode.AUTO) == (Outcome.ALLOW, "refund.under-20-auto")
    assert refund("20") == (Outcome.APPROVE, "mode.approve")
    assert refund("15", workspace="sandbox") == (Outcome.DENY, "mode.suggest")
    assert refund("15", requested_by="u_intern", mode=Mode.AUTO) == (Outcome.DENY, "mode.suggest")
    assert refund("60", mode=Mode.AUTO) == (Outcome.APPROVE, "refund.over-50-approval")
    assert effective_mode(policy, "acme", Mode.AUTO, "u_alice") is Mode.AUTO


# ---- policy laws, as properties ---------------------------------------------------------------

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2)
modes = st.sampled_from(list(Mode))


def with_rules(rules: list[Rule]) -> Policy:
    return POLICY.model_copy(update={"tools": {**POLICY.tools, "payments.create_refund": ToolPolicy(rules=rules)}})


# Conditions over every family of operator, on arguments and on facts, with literals of every
# kind (so some compare with a field of another kind and fail closed), nested up to three deep.
literals = st.one_of(st.booleans(), st.integers(0, 1000), st.sampled_from(["20", "ORD-1001", "true"]))
domains = st.lists(st.sampled_from(["acme.test", "*.acme.test", "example.com", "team.example"]), min_size=1)
leaves = st.one_of(
    st.builds(Condition, arg=st.just("amount_usd"), gt=amounts),
    st.builds(Condition, arg=st.just("amount_usd"), lt=amounts),
    st.builds(Condition, arg=st.just("amount_usd"), eq=literals),
    st.builds(Condition, arg=st.just("amount_usd"), in_=st.lists(st.integers(0, 1000), min_size=1, max_size=3)),
    st.builds(Condition, arg=st.just("order_id"), not_in=st.lists(st.just("ORD-1001"), min_size=1, max_size=1)),
    st.builds(Condition, fact=st.just("known_payee"), eq=literals),
    st.builds(Condition, fact=st.just("refundable_usd"), gte=amounts),
    st.builds(Condition, arg=st.just("amount_usd"), gt_fact=st.just("refundable_usd")),
    st.builds(Condition, arg=st.sampled_from(["memo", "order_id"]), present=st.booleans()),
    st.builds(Condition, arg=st.just("memo"), contains=st.sampled_from(["http", "ＩＮＶＯＩＣＥ", "rent"])),
    st.builds(Condition, arg=st.just("memo"), starts_with=st.sampled_from(["inv", "see"])),
    st.builds(Condition, arg=st.just("memo"), regex=st.sampled_from(["https?://", "^inv", "[0-9]{4}"])),
    st.builds(Condition, arg=st.just("memo"), len_gt=st.integers(0, 40)),
    st.builds(Condition, arg=st.just("memo"), links_outside=domains),
    st.builds(Condition, arg=st.just("to"), domain_in=domains),
    st.builds(Condition, arg=st.just("to"), domain_not_in=domains),
    st.builds(Condition, arg=st.just("memo"), url_domain_not_in=domains),
    st.builds(Condition, always=st.just(True)),
)


def _combined(children: st.SearchStrategy[Condition]) -> st.SearchStrategy[Condition]:
    parts = st.lists(children, min_size=1, max_size=3)
    return st.one_of(
        children,
        parts.map(lambda cs: Condition(all_=cs)),
        parts.map(lambda cs: Condition(any_=cs)),
        children.map(lambda c: Condition(not_=c)),
    )


conditions = _combined(_combined(leaves))
rule_strategy = st.builds(
    Rule,
    id=st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
    effect=st.sampled_from(["deny", "require_approval", "auto"]),
    when=conditions,
)
# Calls whose arguments and facts may be missing, of the declared kind, or of another kind.
calls = st.builds(
    lambda args, facts: {"args": args, "facts": facts},
    st.fixed_dictionaries(
        {},
        optional={
            "amount_usd": st.one_of(amounts.map(str), st.integers(0, 1000), st.just("fifteen"), st.booleans()),
            "order_id": st.sampled_from(["ORD-1001", "ORD-1002", 1001]),
            "memo": st.sampled_from(
                ["", "invoice 2291", "see https://evil.example/x", "ＳＥＥ ｈｔｔｐｓ：／／acme.test/a", "rent", 7]
            ),
            "to": st.sampled_from(["bob@acme.test", "x@a.acme.test", "eve@EVIL.example.", "nobody", None]),
        },
    ),
    st.fixed_dictionaries(
        {}, optional={"known_payee": st.one_of(st.booleans(), st.just("true")), "refundable_usd": amounts.map(str)}
    ),
)
KINDS = {
    "arg_kinds": {"amount_usd": "number", "order_id": "string", "memo": "string", "to": "string"},
    "fact_kinds": {"known_payee": "bool", "refundable_usd": "number"},
}


def law_call(call: dict[str, dict[str, object]], **kw: object) -> CallContext:
    return ctx(args=call["args"], facts=call["facts"], **KINDS, **kw)


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(rule_strategy, max_size=6, unique_by=lambda r: r.id), call=calls, mode=modes)
def test_decisions_do_not_depend_on_rule_order(
    rules: list[Rule], call: dict[str, dict[str, object]], mode: Mode
) -> None:
    """Every rule that matches is collected; which comes first in the file changes nothing."""
    context = law_call(call, mode=mode)
    forward = decide(with_rules(rules), context)
    backward = decide(with_rules(list(reversed(rules))), context)
    assert forward == backward


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(rule_strategy, max_size=6, unique_by=lambda r: r.id), call=calls, mode=modes)
def test_a_matching_deny_always_wins(rules: list[Rule], call: dict[str, dict[str, object]], mode: Mode) -> None:
    """A deny that matches decides, whatever else matches or cannot be evaluated."""
    deny = Rule(id="zz-deny", effect="deny", when=Condition(always=True))
    assert decide(with_rules([*rules, deny]), law_call(call, mode=mode)).outcome is Outcome.DENY


STRICTNESS = {Outcome.ALLOW: 0, Outcome.APPROVE: 1, Outcome.DENY: 2}


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(rule_strategy, max_size=6, unique_by=lambda r: r.id), call=calls, mode=modes)
def test_removing_a_rule_moves_a_decision_only_its_own_way(
    rules: list[Rule], call: dict[str, dict[str, object]], mode: Mode
) -> None:
    """A deny or a demand for approval only restricts, so removing one can only keep or loosen a
    decision; an `auto` rule only lifts, so removing one can only keep or tighten it (deny by
    default lives in capabilities, not rules). Also when a condition cannot be evaluated."""
    context = law_call(call, mode=mode)
    full = decide(with_rules(rules), context)
    for i, rule in enumerate(rules):
        fewer = decide(with_rules(rules[:i] + rules[i + 1 :]), context)
        if rule.effect == "auto":
            assert STRICTNESS[fewer.outcome] >= STRICTNESS[full.outcome]
        else:
            assert STRICTNESS[fewer.outcome] <= STRICTNESS[full.outcome]


@settings(max_examples=300, deadline=None)
@given(
    rules=st.lists(rule_strategy, max_size=6, unique_by=lambda r: r.id),
    lift=rule_strategy.map(lambda r: r.model_copy(update={"id": "zz-auto", "effect": "auto"})),
    call=calls,
    mode=modes,
    tier=st.sampled_from(list(Tier)),
)
def test_an_auto_rule_lifts_only_approve_mode(
    rules: list[Rule], lift: Rule, call: dict[str, dict[str, object]], mode: Mode, tier: Tier
) -> None:
    """Adding an `auto` rule never turns a deny into anything else, never lifts a call in suggest
    mode or of an always_approve tier, and never overrides a demand for approval: the only
    decisions it changes are approve mode's wait and which rule an allow names. So adding an
    allow never turns an allow into a deny."""
    context = law_call(call, mode=mode, tier=tier)
    before = decide(with_rules(rules), context)
    after = decide(with_rules([*rules, lift]), context)
    if (
        before.outcome is Outcome.DENY
        or mode is Mode.SUGGEST
        or POLICY.tiers[tier].always_approve
        or (before.outcome is Outcome.APPROVE and before.rule != "mode.approve")
    ):
        assert after == before
    else:
        assert after.outcome in (before.outcome, Outcome.ALLOW)
        assert STRICTNESS[after.outcome] <= STRICTNESS[before.outcome]


@settings(max_examples=200, deadline=None)
@given(
    by_role=st.dictionaries(st.sampled_from(["requester", "lead", "intern"]), modes, max_size=3),
    roles=st.sets(st.sampled_from(["requester", "lead", "intern", "approver"])),
    extra=st.sampled_from(["requester", "lead", "intern", "approver"]),
    max_autonomy=modes,
    requested=modes,
)
def test_autonomy_by_role_only_caps_and_a_further_role_never_takes_autonomy_away(
    by_role: dict[str, Mode], roles: set[str], extra: str, max_autonomy: Mode, requested: Mode
) -> None:
    def mode_with(held: set[str]) -> Mode:
        return effective_mode(with_roles(by_role, max_autonomy, sorted(held)), "acme", requested, "u_erin")

    mode = mode_with(roles)
    assert mode.rank <= min(requested.rank, max_autonomy.rank)
    if roles & set(by_role):
        # Once a listed role caps the requester, another role can only lift the cap.
        assert mode_with(roles | {extra}).rank >= mode.rank
    else:
        assert mode.rank == min(requested.rank, max_autonomy.rank)


def test_the_kill_switch_holds_every_call_and_safe_mode_all_but_reads() -> None:
    """One rule for the engine, the run and the worker's last gate."""
    from policy.switches import held_by

    assert [held_by(paused=True, safe_mode=s, effect=e) for s in (False, True) for e in Effect] == ["kill_switch"] * 6
    assert {e: held_by(paused=False, safe_mode=True, effect=e) for e in Effect} == {
        Effect.READ: None,
        Effect.WRITE: "safe_mode",
        Effect.EXTERNAL: "safe_mode",
    }
    assert {held_by(paused=False, safe_mode=False, effect=e) for e in Effect} == {None}


def test_a_copy_with_other_rules_decides_by_its_own_rules() -> None:
    """`decide` works out a policy's rules once and keeps them with that policy: a copy with
    other rules (as a test or a counterfactual makes) is decided by its own, and the original,
    decided before and after it, by the original's."""
    call = ctx(args={"order_id": "ORD-1001", "amount_usd": "20"})
    before = decide(POLICY, call)
    stricter = with_rules([Rule(id="refund.never", effect="deny", when=Condition(always=True))])
    assert decide(stricter, call).rule == "refund.never"
    assert decide(POLICY, call) == before and before.rule != "refund.never"
    assert decide(with_rules([]), call).rule != "refund.never"
