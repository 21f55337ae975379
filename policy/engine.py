"""The policy's decisions, as pure functions: no I/O, no clock, no Temporal.

Workflow code calls these directly with the policy pinned in its history, so a replay decides
exactly as the original run did.
"""

from __future__ import annotations

import unicodedata
import weakref
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from contracts import textnorm
from contracts.catalog import Kind, kind_at
from contracts.models import Decision, Effect, Mode, Outcome, Tier
from contracts.policy import Condition, Policy, Rule, RunRule, literal_kind
from policy.switches import safe_mode_forbids

_MISSING = object()


class CallContext(BaseModel):
    """Everything the policy may look at to decide on one call."""

    model_config = ConfigDict(frozen=True)

    workspace: str
    agent: str
    requested_by: str
    mode: Mode
    tool: str
    effect: Effect
    tier: Tier
    args: dict[str, JsonValue] = Field(default_factory=dict)
    facts: dict[str, JsonValue] = Field(default_factory=dict)
    # What the catalogue says each argument (by dotted path) and each fact is: a rule reads a
    # `Decimal` argument, which travels as a string, as the number it is.
    arg_kinds: dict[str, Kind] = Field(default_factory=dict)
    fact_kinds: dict[str, Kind] = Field(default_factory=dict)
    # The run's own scope (`RunInput.capabilities` and `rules`): it only narrows.
    run_capabilities: frozenset[str] | None = None
    run_rules: tuple[RunRule, ...] = ()


def effective_mode(policy: Policy, workspace: str, requested: Mode, requested_by: str | None = None) -> Mode:
    """A run never gets more autonomy than its workspace allows, nor than the requester's roles
    allow there. Of several listed roles the highest counts, so a second listed role never takes
    autonomy away; a requester holding none of them (or not named) is capped by `max_autonomy`
    alone."""
    ws = policy.workspaces.get(workspace)
    if ws is None:
        return Mode.SUGGEST
    cap = ws.max_autonomy
    if requested_by is not None:
        held = policy.roles_of(requested_by)
        by_role = [mode for role, mode in ws.autonomy_by_role.items() if role in held]
        if by_role:
            cap = min(cap, max(by_role, key=lambda m: m.rank), key=lambda m: m.rank)
    return requested if requested.rank <= cap.rank else cap


def may_start(
    policy: Policy, workspace: str, agent: str, requested_by: str, capabilities: list[str] | None = None
) -> str | None:
    """Why a run cannot start, or None when it may."""
    if workspace not in policy.workspaces:
        return f"workspace: {workspace!r} is not defined in the policy"
    if agent not in policy.agents:
        return f"agent: {agent!r} is not defined in the policy"
    # A run's scope narrows its agent's capabilities; naming one the agent lacks is a mistake
    # (or an attempt to widen), refused before anything runs.
    beyond = [t for t in capabilities or [] if t not in policy.agents[agent].capabilities]
    if beyond:
        return f"capabilities: {', '.join(map(repr, beyond))} not among agent {agent!r}'s capabilities"
    if not policy.roles_of(requested_by) & set(policy.requester_roles):
        return (
            f"requested_by: {requested_by!r} holds no role allowed to start runs ({', '.join(policy.requester_roles)})"
        )
    return None


def tool_tier(policy: Policy, tool: str, default: Tier) -> Tier:
    tp = policy.tools.get(tool)
    return tp.tier if tp is not None and tp.tier is not None else default


def value_at(values: dict[str, Any], path: str) -> Any:
    """The value at a dotted path into the arguments; a private sentinel when it is not there."""
    current: Any = values
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


def as_number(value: Any) -> Decimal | None:
    """A number, also one written as a decimal string (how a `Decimal` travels), or None."""
    kind = type(value)  # `bool` is an `int`, and never a number here
    try:
        if kind is str:
            number = Decimal(value.strip())
        elif kind is int or kind is Decimal:
            number = Decimal(value)
        elif kind is float:
            number = Decimal(str(value))  # 0.1 as written, not its binary expansion
        elif isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            return None
        else:  # a subclass of one of them
            number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    # NaN and infinities compare by raising or by lying; either way they are not amounts.
    return number if number.is_finite() else None


def _typed(kind: str, value: Any, declared: Kind | None) -> Any:
    """`value` as a literal of `kind` compares with it, or _MISSING when it is of another kind: a
    string is never a number (unless the catalogue declares the field a number, whose Decimal
    travels as a string), and a bool is never a number or a string."""
    if kind == "bool":
        return value if isinstance(value, bool) else _MISSING
    if kind == "string":
        return value if isinstance(value, str) and declared != "number" else _MISSING
    if isinstance(value, str) and declared != "number":
        return _MISSING
    number = as_number(value)
    return _MISSING if number is None else number


Test = Callable[[CallContext], bool | None]


def _operand(cond: Condition) -> Callable[[CallContext], tuple[Any, Kind | None]]:
    """How a condition reads its operand from a call: the value (or _MISSING) and its declared kind."""
    if cond.fact is not None:
        fact = cond.fact
        return lambda call: (call.facts.get(fact, _MISSING), call.fact_kinds.get(fact))
    path = cond.arg or ""
    if "." not in path:
        return lambda call: (call.args.get(path, _MISSING), call.arg_kinds.get(path))
    return lambda call: (value_at(call.args, path), kind_at(call.arg_kinds, path))


def _literal(value: bool | int | float | str) -> bool | Decimal | str:
    if isinstance(value, bool | str):
        return value
    return Decimal(str(value))


def _compile(cond: Condition) -> Test:
    """A condition as a function of the call: True, False, or None when it cannot be evaluated (a
    missing argument or fact, a value of the wrong kind, text that does not parse)."""
    op = cond.operator
    if op == "always":
        return lambda call: True
    if op in ("all", "any", "not"):
        return _combination(op, [child.compiled(_compile) for child in cond.children()])
    read = _operand(cond)
    if op == "present":
        wanted = cond.present
        return lambda call: (read(call)[0] is not _MISSING) == wanted
    check = _value_test(cond)

    def test(call: CallContext) -> bool | None:
        value, declared = read(call)
        if value is _MISSING or value is None:
            return None
        return check(value, declared, call)

    return test


def _combination(op: str, children: list[Test]) -> Test:
    # Three-valued (Kleene) logic: an unknown part decides only when the known parts do not, so
    # the whole is unknown exactly when the answer depends on what could not be read, and then
    # it fails closed like any single condition.
    if op == "not":
        [inner] = children

        def negation(call: CallContext) -> bool | None:
            held = inner(call)
            return None if held is None else not held

        return negation
    decisive = op == "any"  # the value that settles the whole: True for any, False for all

    def combined(call: CallContext) -> bool | None:
        unknown = False
        for child in children:
            held = child(call)
            if held is None:
                unknown = True
            elif held is decisive:
                return decisive
        return None if unknown else not decisive

    return combined


ValueTest = Callable[[Any, Kind | None, CallContext], bool | None]


def _value_test(cond: Condition) -> ValueTest:
    op = cond.operator
    literal = cond.literal()
    if op in ("eq", "ne", "in", "not_in"):
        values = [literal] if op in ("eq", "ne") else literal
        kind = literal_kind(values[0])
        wanted = frozenset(_literal(v) for v in values)
        inside = op in ("eq", "in")

        def compare(value: Any, declared: Kind | None, _: CallContext) -> bool | None:
            typed = _typed(kind, value, declared)
            return None if typed is _MISSING else (typed in wanted) == inside

        return compare
    if op == "gt_fact":
        fact = cond.gt_fact or ""

        def above_fact(value: Any, _: Kind | None, call: CallContext) -> bool | None:
            n, limit = as_number(value), as_number(call.facts.get(fact))
            return None if n is None or limit is None else n > limit

        return above_fact
    if op in ("gt", "gte", "lt", "lte"):
        limit = Decimal(literal)
        orders: dict[str, Callable[[Decimal], bool]] = {
            "gt": lambda n: n > limit,
            "gte": lambda n: n >= limit,
            "lt": lambda n: n < limit,
            "lte": lambda n: n <= limit,
        }
        order = orders[op]

        def ordered(value: Any, _: Kind | None, __: CallContext) -> bool | None:
            n = as_number(value)
            return None if n is None else bool(order(n))

        return ordered
    if op in ("starts_with", "ends_with", "contains", "regex"):
        needle = textnorm.text(literal)
        pattern = cond.pattern()
        tests: dict[str, Callable[[str], bool]] = {
            "starts_with": lambda t: t.startswith(needle),
            "ends_with": lambda t: t.endswith(needle),
            "contains": lambda t: needle in t,
            "regex": lambda t: pattern is not None and pattern.search(t) is not None,
        }
        in_text = tests[op]

        def texts(value: Any, _: Kind | None, __: CallContext) -> bool | None:
            return in_text(textnorm.text(value)) if isinstance(value, str) else None

        return texts
    if op in ("len_gt", "len_lt"):
        bound = int(literal)
        longer = op == "len_gt"

        def length(value: Any, _: Kind | None, __: CallContext) -> bool | None:
            if isinstance(value, str):
                size = len(unicodedata.normalize("NFKC", value))
            elif isinstance(value, list):
                size = len(value)
            else:
                return None
            return size > bound if longer else size < bound

        return length
    if op in ("domain_in", "domain_not_in", "url_domain_in", "url_domain_not_in"):
        entries = cond.domains()
        parse = textnorm.email_domain if op.startswith("domain") else textnorm.url_host
        inside = not op.endswith("not_in")

        def domains(value: Any, _: Kind | None, __: CallContext) -> bool | None:
            name = parse(value) if isinstance(value, str) else None
            return None if name is None else textnorm.covered(name, entries) == inside

        return domains
    if op == "links_outside":
        allowed = cond.domains()

        def links(value: Any, _: Kind | None, __: CallContext) -> bool | None:
            if not isinstance(value, str):
                return None
            # A link whose host does not parse counts as outside: it is not one of the listed.
            return any(h is None or not textnorm.covered(h, allowed) for h in textnorm.link_hosts(value))

        return links
    if op == "keys_not_in":
        known = frozenset(literal or [])

        def keys(value: Any, _: Kind | None, __: CallContext) -> bool | None:
            return any(k not in known for k in value) if isinstance(value, dict) else None

        return keys
    raise ValueError(f"no test for operator {op!r}")  # every operator of contracts.policy has one


def _holds(cond: Condition, call: CallContext) -> bool | None:
    """Whether a condition holds, or None when it cannot be evaluated."""
    return cond.compiled(_compile)(call)


def matches(cond: Condition, call: CallContext, *, lifts: bool = False) -> bool:
    """Whether a rule's condition counts as matching. One that cannot be evaluated fails closed:
    it matches a rule that denies or demands approval, and does not match a rule that lifts
    (`auto`), so either way the stricter outcome follows."""
    return _counted(_holds(cond, call), lifts)


def _counted(holds: bool | None, lifts: bool) -> bool:
    return (not lifts) if holds is None else holds


def _applies(rule: Rule, workspace: str) -> bool:
    return rule.workspaces is None or workspace in rule.workspaces


class _Planned(NamedTuple):
    """A rule as `decide` reads it: with its compiled test, and whether it lifts."""

    rule: Rule
    test: Test
    lifts: bool


def _planned(rule: Rule) -> _Planned:
    return _Planned(rule, rule.when.compiled(_compile), rule.effect == "auto")


def _counts(planned: _Planned, call: CallContext) -> bool:
    """`matches`, for a planned rule."""
    return _counted(planned.test(call), planned.lifts)


# The rules of each tool in each workspace, in the order they are decided (by id), worked out
# once per policy object. Keyed by the object's id and dropped with it: a policy is immutable,
# and a copy with other rules (`model_copy`) is another object, with plans of its own.
_PLANS: dict[int, tuple[weakref.ref[Policy], dict[tuple[str, str], tuple[_Planned, ...]]]] = {}


def _plan(policy: Policy, tool: str, workspace: str) -> tuple[_Planned, ...]:
    key = id(policy)
    held = _PLANS.get(key)
    if held is None or held[0]() is not policy:
        held = _PLANS[key] = (weakref.ref(policy, lambda _: _PLANS.pop(key, None)), {})
    plans = held[1]
    plan = plans.get((tool, workspace))
    if plan is None:
        tool_policy = policy.tools.get(tool)
        rules = sorted(
            (r for r in (tool_policy.rules if tool_policy else []) if _applies(r, workspace)), key=lambda r: r.id
        )
        plan = plans[(tool, workspace)] = tuple(map(_planned, rules))
    return plan


def _reason(rule: Rule) -> str:
    return rule.reason or f"rule {rule.id}"


def decide(policy: Policy, call: CallContext, *, safe_mode: bool = False) -> Decision:
    """The decision on one call. `safe_mode` is the workspace's live switch (the control plane),
    on top of what the policy file says."""
    tier = tool_tier(policy, call.tool, call.tier)
    requirement = policy.tiers[tier]

    def verdict(outcome: Outcome, rule: str, reason: str, matched: list[str] | None = None) -> Decision:
        needs_approval = outcome is Outcome.APPROVE
        return Decision(
            outcome=outcome,
            rule=rule,
            reason=reason,
            tier=tier,
            approvals_required=requirement.approvals if needs_approval else 0,
            approver_roles=list(requirement.roles) if needs_approval else [],
            required_role=requirement.require_role if needs_approval else None,
            timeout_s=requirement.timeout_s if needs_approval else 0,
            matched_rules=matched or [rule],
        )

    workspace = policy.workspaces.get(call.workspace)
    if workspace is None:
        return verdict(Outcome.DENY, "workspace.unknown", f"workspace {call.workspace!r} is not in the policy")
    agent = policy.agents.get(call.agent)
    if agent is None or call.tool not in agent.capabilities:
        return verdict(
            Outcome.DENY,
            "agent.capabilities",
            f"agent {call.agent!r} has no capability for {call.tool}",
        )
    if call.run_capabilities is not None and call.tool not in call.run_capabilities:
        return verdict(
            Outcome.DENY,
            "run.capabilities",
            f"this run may call only {', '.join(sorted(call.run_capabilities)) or 'no tool'}",
        )
    if (workspace.safe_mode or safe_mode) and safe_mode_forbids(call.effect):
        return verdict(Outcome.DENY, "workspace.safe_mode", "safe_mode")

    # The run's own rules join the policy's under ids of their own (`run.ID`); they deny or
    # demand approval, so they can make a decision stricter and never looser.
    plan = _plan(policy, call.tool, call.workspace)
    if call.run_rules:
        run_rules = [r.model_copy(update={"id": f"run.{r.id}"}) for r in call.run_rules if r.tool == call.tool]
        plan = tuple(sorted([*plan, *map(_planned, run_rules)], key=lambda p: p.rule.id))
    matched = [p.rule for p in plan if _counts(p, call)]
    denies = [r for r in matched if r.effect == "deny"]
    if denies:
        return verdict(Outcome.DENY, denies[0].id, _reason(denies[0]), [r.id for r in denies])

    mode = effective_mode(policy, call.workspace, call.mode, call.requested_by)
    if mode is Mode.SUGGEST:
        return verdict(
            Outcome.DENY,
            "mode.suggest",
            "suggest mode: the call is recorded as a suggestion and not executed",
        )
    approvals = [r for r in matched if r.effect == "require_approval"]
    if approvals:
        return verdict(Outcome.APPROVE, approvals[0].id, _reason(approvals[0]), [r.id for r in approvals])
    if requirement.always_approve:
        return verdict(Outcome.APPROVE, f"tier.{tier.value}", f"every {tier.value}-tier call is approved by a person")
    # A lift comes only here: after every deny, suggest mode, every demand for approval and the
    # tier's own demand have had their say, so it can waive approve mode's wait and nothing else.
    lifts = [r for r in matched if r.effect == "auto"]
    if lifts:
        return verdict(Outcome.ALLOW, lifts[0].id, _reason(lifts[0]), [r.id for r in lifts])
    if mode is Mode.APPROVE and call.effect is not Effect.READ:
        return verdict(Outcome.APPROVE, "mode.approve", "approve mode: every write waits for approval")
    return verdict(Outcome.ALLOW, "agent.capabilities", f"agent {call.agent!r} may call {call.tool}")


def vote_refusal(
    policy: Policy,
    *,
    approver: str,
    requested_by: str,
    approver_roles: list[str],
    required_role: str | None,
    approvals_still_needed: int,
    earlier_voters: list[str],
    owner_required: bool = False,
    owner: str | None = None,
    self_approval_signed: bool = False,
    signed: bool = False,
) -> str | None:
    """Why this person's vote on a pending call does not count, or None when it does.

    `owner_required`: the tier binds approval to the resource's owner (`owner`, from a previewed
    fact; None counts nobody's vote). `self_approval_signed`: the requester may approve their own
    run's call when the vote is `signed` (verified) with their key."""
    if approver not in policy.people:
        return f"{approver!r} is not a person in the policy"
    if owner_required and owner is None:
        return "this approval belongs to the resource's owner, and the preview named none"
    if owner_required and approver != owner:
        return f"{approver} does not own this resource: only {owner} may approve it"
    if approver == requested_by and not (self_approval_signed and signed):
        step_up = "; this tier accepts it with a vote signed by their key" if self_approval_signed else ""
        return f"self-approval: {approver} requested this run{step_up}"
    roles = policy.roles_of(approver)
    if not roles & set(approver_roles):
        return f"{approver} lacks the role this tier needs (one of: {', '.join(approver_roles)})"
    if approver in earlier_voters:
        return f"{approver} has already voted on this approval"
    if required_role and approvals_still_needed == 1 and required_role not in roles:
        earlier_have_it = any(required_role in policy.roles_of(v) for v in earlier_voters)
        if not earlier_have_it:
            return f"the last approval must come from someone with role {required_role}"
    return None
