"""The capability policy, as a security reviewer reads it: frozen models that reject unknown keys.

    workspaces   how much autonomy each workspace allows at most, overall and per requester role
                 (autonomy_by_role), and whether it is in safe mode
    people       who holds which roles (requester, approver, admin, ...)
    tiers        for each risk tier, how many approvers of which roles a call needs, and how long
                 an approval may wait before it counts as a deny
    agents       which tools each agent may call at all (deny by default)
    tools        per-tool rules over arguments and previewed facts: deny, require approval, or
                 auto (run without approval even in approve mode)

Rules never depend on their order: every rule that matches is collected, a deny beats a demand
for approval, which beats an allow. An `auto` rule only waives approve mode's wait for approval:
it never executes anything in suggest mode, never lifts a tier that always needs approval, and
never beats safe mode or an agent's capabilities. To lower a single capability instead, give it
a `require_approval` rule.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol, Self, TypeVar

import re2
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

from contracts.kinds import Mode, Tier
from contracts.policy_limits import MAX_WINDOW_S, WINDOW_UNITS_S, Per
from contracts.textnorm import listed_domain

T = TypeVar("T")


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(Frozen):
    """What a whole workspace may spend and run at once; the workspace control workflow holds the
    ledger and refuses what would pass a cap."""

    daily_spend_usd: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_concurrent_runs: int | None = Field(None, ge=1)
    # Reserved before each call to a paid model, then reconciled with what the call cost. A run
    # reserves the larger of this and the dearest model call it has made so far.
    model_call_estimate_usd: float = Field(0.01, ge=0, allow_inf_nan=False)


RoleName = Annotated[str, StringConstraints(min_length=1)]


class Workspace(Frozen):
    max_autonomy: Mode = Mode.APPROVE
    # The most autonomy a run may have when its requester holds the role; of several listed roles
    # the highest counts. A requester holding none of them is capped by max_autonomy alone, which
    # also caps every entry here.
    autonomy_by_role: dict[RoleName, Mode] = Field(default_factory=dict)
    safe_mode: bool = False
    # Votes must carry the approver's Ed25519 signature over run, approval, decision and call.
    signed_approvals: bool = False
    limits: Limits = Field(default_factory=Limits)


KEY_PATTERN = r"^ed25519:[A-Za-z0-9+/]{43}=$"


class Person(Frozen):
    roles: list[str] = Field(default_factory=list)
    # Public keys that sign this person's votes (`airlock keys new`): ed25519:<base64 of 32 bytes>.
    keys: list[Annotated[str, StringConstraints(pattern=KEY_PATTERN)]] = Field(default_factory=list)


class TierRule(Frozen):
    approvals: int = Field(1, ge=1, le=10)
    roles: list[str] = Field(min_length=1)
    # At least one of the approvers must hold this role (e.g. an admin among two approvers).
    require_role: str | None = None
    timeout_s: int = Field(86_400, ge=1)
    # Calls of this tier wait for approval in every mode that executes anything.
    always_approve: bool = False
    # A pending approval still open after `escalate_after_s` may also be decided by holders of
    # `escalate_to`; at `timeout_s` it counts as denied.
    escalate_after_s: int | None = Field(None, ge=1)
    escalate_to: str | None = None
    # Whose resource it is: the approval belongs to the person a previewed fact names (the
    # account's holder, say). Only their vote counts; when the preview names nobody, nobody's does.
    owner_fact: str | None = Field(None, min_length=1)
    # May the person a run acts for approve their own run's call of this tier? Never (the
    # default), or with step-up: a vote signed with one of their keys (`airlock approve` signs).
    self_approval: Literal["never", "signed"] = "never"

    @model_validator(mode="after")
    def _escalation(self) -> Self:
        if (self.escalate_after_s is None) != (self.escalate_to is None):
            raise ValueError("escalate_after_s and escalate_to go together")
        if self.escalate_after_s is not None and self.escalate_after_s >= self.timeout_s:
            raise ValueError(f"escalate_after_s ({self.escalate_after_s}) must be below timeout_s ({self.timeout_s})")
        return self


class Agent(Frozen):
    capabilities: list[str] = Field(default_factory=list)


# The operators, as a rule writes them (`when: {arg: amount_usd, gt: 500}`), by family.
COMPARISONS = ("eq", "ne", "in", "not_in")
NUMBERS = ("gt", "gte", "lt", "lte", "gt_fact")
TEXTS = ("starts_with", "ends_with", "contains", "regex")
LENGTHS = ("len_gt", "len_lt")
DOMAINS = ("domain_in", "domain_not_in", "url_domain_in", "url_domain_not_in", "links_outside")
SHAPES = ("present", "keys_not_in")
COMPOSITIONS = ("all", "any", "not")
OPERATORS = ("always", *COMPARISONS, *NUMBERS, *TEXTS, *LENGTHS, *DOMAINS, *SHAPES, *COMPOSITIONS)
# Python keywords and builtins are spelled with a trailing underscore in the model.
_ATTRIBUTE = {op: f"{op}_" if op in ("in", "all", "any", "not") else op for op in OPERATORS}

# How deep `all`/`any`/`not` may nest, how many conditions one list may hold, and how long a
# pattern may be: a rule stays something a reviewer can read, and its cost stays bounded.
MAX_DEPTH = 4
MAX_CHILDREN = 16
MAX_PATTERN_CHARS = 1000
# RE2 runs in time linear in the text (no backtracking); the compiled program is bounded too.
_RE2_MAX_MEM = 1 << 20

# A literal is a typed YAML value: true is a bool, 50 a number, "50" a string, and none of them
# equals another.
Scalar = StrictBool | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)] | StrictStr


def literal_kind(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "bool"
    return "string" if isinstance(value, str) else "number"


def _regex_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    # Text tests compare casefolded text; the pattern matches either case of what it names.
    options.case_sensitive = False
    options.max_mem = _RE2_MAX_MEM
    return options


class Pattern(Protocol):
    """What the engine uses of a compiled RE2 pattern."""

    def search(self, text: str) -> object | None: ...


def compile_pattern(pattern: str) -> Pattern:
    """A pattern compiled by RE2, or ValueError naming why RE2 refuses it (a back-reference, a
    look-around, a repetition past 1000: what would need backtracking, or too large a program)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"regex is {len(pattern)} characters; at most {MAX_PATTERN_CHARS}")
    try:
        compiled: Pattern = re2.compile(pattern, _regex_options())
        return compiled
    except re2.error as e:
        why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(f"regex {pattern!r} is refused (RE2, linear time only): {why}") from None


class Condition(Frozen):
    """One test over a call: exactly one operator, over exactly one operand, `arg` (a dotted path
    into the arguments) or `fact` (a fact the tool's preview gives). `always` takes no operand;
    `all`, `any` and `not` combine conditions. docs/policy.md lists every operator."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    arg: str | None = Field(None, min_length=1, pattern=r"^[^.]+(\.[^.]+)*$")
    fact: str | None = Field(None, min_length=1)
    always: bool | None = None
    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in", min_length=1)
    not_in: list[Scalar] | None = Field(None, min_length=1)
    gt: Decimal | None = None
    gte: Decimal | None = None
    lt: Decimal | None = None
    lte: Decimal | None = None
    gt_fact: str | None = None
    starts_with: str | None = Field(None, min_length=1)
    ends_with: str | None = Field(None, min_length=1)
    contains: str | None = Field(None, min_length=1)
    regex: str | None = Field(None, min_length=1)
    len_gt: int | None = Field(None, ge=0)
    len_lt: int | None = Field(None, ge=1)
    domain_in: list[str] | None = Field(None, min_length=1)
    domain_not_in: list[str] | None = None
    url_domain_in: list[str] | None = Field(None, min_length=1)
    url_domain_not_in: list[str] | None = None
    links_outside: list[str] | None = None
    present: bool | None = None
    keys_not_in: list[str] | None = None
    all_: list[Condition] | None = Field(None, alias="all", min_length=1, max_length=MAX_CHILDREN)
    any_: list[Condition] | None = Field(None, alias="any", min_length=1, max_length=MAX_CHILDREN)
    not_: Condition | None = Field(None, alias="not")

    # Worked out once, when the condition is read: the normal form of its literals, its compiled
    # pattern, how deep it nests. The engine's compiled test is kept here too (`policy.engine`).
    _domains: frozenset[str] = PrivateAttr(default=frozenset())
    _pattern: Pattern | None = PrivateAttr(default=None)
    _depth: int = PrivateAttr(default=1)
    _test: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_operator(self) -> Self:
        given = [op for op in OPERATORS if getattr(self, _ATTRIBUTE[op]) is not None]
        if len(given) != 1:
            raise ValueError(f"a condition needs exactly one of {', '.join(OPERATORS)}; got {given or 'none'}")
        op = given[0]
        operands = [name for name in ("arg", "fact") if getattr(self, name) is not None]
        if op == "always":
            if self.always is not True:
                raise ValueError("'always' can only be true")
            if operands:
                raise ValueError("'always' tests no argument or fact")
        elif op in COMPOSITIONS:
            if operands:
                raise ValueError(f"'{op}' combines conditions; the arg or fact goes inside them")
            children = self.children()
            self._depth = 1 + max(c._depth for c in children)
            if self._depth > MAX_DEPTH:
                raise ValueError(f"all/any/not nest {self._depth} deep; at most {MAX_DEPTH}")
        elif len(operands) != 1:
            raise ValueError(
                f"'{op}' needs exactly one operand, 'arg' (an argument) or 'fact' (a previewed fact); "
                f"got {' and '.join(operands) or 'none'}"
            )
        if op in ("in", "not_in"):
            kinds = {literal_kind(v) for v in self.literal()}
            if len(kinds) > 1:
                raise ValueError(f"'{op}' lists values of one kind; got {', '.join(sorted(kinds))}")
        if op == "regex" and self.regex is not None:
            self._pattern = compile_pattern(self.regex)
        if op in DOMAINS:
            entries = [e for e in getattr(self, op) or []]
            normal = [(e, listed_domain(e)) for e in entries]
            bad = [e for e, n in normal if n is None]
            if bad:
                raise ValueError(f"'{op}': not a domain: {', '.join(map(repr, bad))}")
            self._domains = frozenset(n for _, n in normal if n is not None)
        return self

    def __eq__(self, other: object) -> bool:
        # What a condition says is its fields. Pydantic would also compare the private caches,
        # and the compiled test is a closure: a policy that has decided once would no longer
        # equal the same policy read again.
        if not isinstance(other, Condition):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # its lists make it unhashable anyway

    @property
    def operator(self) -> str:
        return next(op for op in OPERATORS if getattr(self, _ATTRIBUTE[op]) is not None)

    def literal(self) -> Any:
        """What the operator compares with, as written (a list for in/not_in)."""
        return getattr(self, _ATTRIBUTE[self.operator])

    def children(self) -> list[Condition]:
        if self.not_ is not None:
            return [self.not_]
        return list(self.all_ or self.any_ or [])

    def compiled(self, build: Callable[[Condition], T]) -> T:
        """`build(self)`, worked out once and kept with the condition: the engine's compiled test,
        so a policy read once decides without re-reading its literals."""
        # Read from the private dict itself: pydantic's `__getattr__` for a private attribute
        # costs more than a whole simple decision, and this runs for every condition of every call.
        private = self.__pydantic_private__
        assert private is not None  # the model has private attributes, so pydantic sets the dict
        test = private.get("_test")
        if test is None:
            test = private["_test"] = build(self)
        result: T = test
        return result

    def domains(self) -> frozenset[str]:
        """A domain operator's list in normal form (`contracts.textnorm`)."""
        return self._domains

    def pattern(self) -> Pattern | None:
        """The compiled RE2 pattern of a `regex` condition."""
        return self._pattern

    def operand_kinds(self) -> tuple[str, ...]:
        """The kinds of operand this condition can compare: what `airlock policy check` holds the
        argument's or fact's declared kind to. Empty for `always` and combinations."""
        op = self.operator
        if op in ("eq", "ne"):
            return (literal_kind(self.literal()),)
        if op in ("in", "not_in"):
            return (literal_kind(self.literal()[0]),)
        if op in NUMBERS:
            return ("number",)
        if op in TEXTS or op in DOMAINS:
            return ("string",)
        if op in LENGTHS:
            return ("string", "list")
        if op == "keys_not_in":
            return ("object",)
        if op == "present":
            return ("bool", "number", "string", "list", "object")
        return ()


class Rule(Frozen):
    id: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    # `auto` lifts: a matching call runs without approval even in approve mode, unless a deny or
    # a demand for approval also matches, the run is in suggest mode, or its tier always approves.
    effect: Literal["deny", "require_approval", "auto"]
    when: Condition
    reason: str = ""
    # Limit a rule to some workspaces; by default it applies in all of them.
    workspaces: list[str] | None = None


class RunRule(Rule):
    """A rule a run's input brings for one tool (`RunInput.rules`). It can only narrow what the
    policy allows: no `auto`, so it never lifts a wait for approval."""

    tool: str = Field(min_length=1, max_length=200)
    effect: Literal["deny", "require_approval"]


class WindowLimit(Frozen):
    """What a tool's calls may add up to over a sliding window, per requester, agent or workspace
    (docs/policy.md, "Windowed limits"). Exactly one of `sum` (an argument, dotted path), `sum_fact`
    (a previewed fact) and `count: true` (each call counts 1).

    A call that would take the counter past `max` is denied, or sent for approval (by the tier it
    names, else the call's own); the counter lives in the workspace's control store."""

    id: str = Field(min_length=1, max_length=200, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    sum: str | None = Field(None, min_length=1)
    sum_fact: str | None = Field(None, min_length=1)
    count: Literal[True] | None = None
    per: Per = "requester"
    # A number and a unit: s, m, h, d or w (30m, 1h, 1d, 7d, 1w). Sliding: a call counts what the
    # counter took in the `window` just before it.
    window: str = Field(pattern=r"^[1-9][0-9]{0,5}[smhdw]$")
    max: Decimal = Field(ge=0, allow_inf_nan=False)
    effect: Literal["deny", "require_approval"]
    # For `require_approval`: the tier whose approvers decide (its approvals, roles, timeout);
    # the call's own tier when not given, and never lower than it.
    tier: Tier | None = None
    reason: str = ""
    # What the counter counts in, for people: USD, payees, messages (`calls` for `count`).
    unit: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = None
    # Which calls count; every call of the tool by default.
    when: Condition | None = None
    workspaces: list[str] | None = None

    @model_validator(mode="after")
    def _one_measure(self) -> Self:
        measures = [k for k in ("sum", "sum_fact", "count") if getattr(self, k) is not None]
        if len(measures) != 1:
            raise ValueError(
                f"limit {self.id} needs exactly one of sum (an argument), sum_fact (a fact) or count: true; "
                f"got {', '.join(measures) or 'none'}"
            )
        if self.seconds > MAX_WINDOW_S:
            raise ValueError(f"limit {self.id}: a window is at most {MAX_WINDOW_S // 86_400}d; got {self.window}")
        if self.tier is not None and self.effect != "require_approval":
            raise ValueError(f"limit {self.id}: tier goes with effect require_approval, not {self.effect}")
        return self

    @property
    def seconds(self) -> int:
        return int(self.window[:-1]) * WINDOW_UNITS_S[self.window[-1]]

    @property
    def shown_unit(self) -> str:
        return self.unit or ("calls" if self.count else "")


class ToolPolicy(Frozen):
    tier: Tier | None = None
    rules: list[Rule] = Field(default_factory=list)
    # Counters over a window (docs/policy.md, "Windowed limits").
    limits: list[WindowLimit] = Field(default_factory=list)


class Policy(Frozen):
    version: Literal[1] = 1
    workspaces: dict[str, Workspace]
    people: dict[str, Person]
    tiers: dict[Tier, TierRule]
    agents: dict[str, Agent]
    tools: dict[str, ToolPolicy] = Field(default_factory=dict)
    # Roles allowed to start runs.
    requester_roles: list[str] = Field(default_factory=lambda: ["requester"])

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        missing = [t.value for t in Tier if t not in self.tiers]
        if missing:
            raise ValueError(f"tiers must define every risk tier; missing {missing}")
        ids = [r.id for tp in self.tools.values() for r in tp.rules] + [
            limit.id for tp in self.tools.values() for limit in tp.limits
        ]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"rule ids must be unique; repeated: {dupes}")
        for tool, tp in self.tools.items():
            scoped: list[Rule | WindowLimit] = [*tp.rules, *tp.limits]
            for rule in scoped:
                for ws in rule.workspaces or []:
                    if ws not in self.workspaces:
                        raise ValueError(f"rule {rule.id} of {tool} names unknown workspace {ws!r}")
        return self

    def content_hash(self) -> str:
        """Identifies what the policy decides, not how the file is laid out."""
        # Settings left at their defaults are left out, so a newer Airlock that adds a setting
        # gives an unchanged file the same hash.
        canonical = json.dumps(
            self.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":")
        )
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def roles_of(self, person: str) -> frozenset[str]:
        p = self.people.get(person)
        return frozenset(p.roles) if p else frozenset()
