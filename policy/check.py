"""A policy read against the tool catalogue, as a reviewer would before it ships: what names a tool
nobody defined, what nobody can approve, what nobody can call. Pure: the policy and the catalogue
in, findings out (`airlock policy check FILE`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from contracts.catalog import CatalogEntry, kind_at
from contracts.models import Tier
from contracts.policy import Condition, Policy, WindowLimit
from policy.engine import tool_tier
from policy.loader import PolicyError


class Finding(BaseModel):
    """One thing wrong (`error`: the policy does not do what it says) or worth a look (`warning`)."""

    level: Literal["error", "warning"]
    message: str


def check(policy: Policy, catalog: Sequence[CatalogEntry]) -> list[Finding]:
    """Every finding, errors first, each message naming the agent, tool, rule, limit or tier at
    fault."""
    tools = {entry.name: entry for entry in catalog}
    roles_held = {role for person in policy.people.values() for role in person.roles}
    findings: list[Finding] = []

    def error(message: str) -> None:
        findings.append(Finding(level="error", message=message))

    def warning(message: str) -> None:
        findings.append(Finding(level="warning", message=message))

    for name, agent in sorted(policy.agents.items()):
        for tool in agent.capabilities:
            if tool not in tools:
                error(f"agents.{name}.capabilities: {tool} is not a tool of the catalogue")
    for tool in sorted(policy.tools):
        if tool not in tools:
            error(f"tools.{tool}: not a tool of the catalogue; its rules never apply")
    for problem in rule_problems(policy, catalog):
        error(problem)

    callable_tools = {tool for agent in policy.agents.values() for tool in agent.capabilities if tool in tools}
    tiers_in_use: dict[Tier, list[str]] = {}
    for tool in sorted(callable_tools):
        tiers_in_use.setdefault(tool_tier(policy, tool, tools[tool].tier), []).append(tool)
    for tier, requirement in sorted(policy.tiers.items()):
        used_by = tiers_in_use.get(tier, [])
        if not used_by:
            continue
        approvers = [role for role in requirement.roles if role in roles_held]
        if not approvers:
            error(
                f"tiers.{tier.value}: nobody holds any of the roles {', '.join(requirement.roles) or '(none)'}, "
                f"so no call of {', '.join(used_by)} can be approved"
            )
        holders = [p for p, person in policy.people.items() if set(person.roles) & set(requirement.roles)]
        if approvers and len(holders) < requirement.approvals:
            error(
                f"tiers.{tier.value}: {requirement.approvals} approvals are needed but only {len(holders)} "
                f"{'person holds' if len(holders) == 1 else 'people hold'} the roles "
                f"{', '.join(requirement.roles)} ({', '.join(sorted(holders))}), so no call of {', '.join(used_by)} "
                "can be approved"
            )
        if requirement.require_role is not None and requirement.require_role not in roles_held:
            error(
                f"tiers.{tier.value}.require_role: nobody holds {requirement.require_role}, "
                f"so no call of {', '.join(used_by)} can be approved"
            )

    for tool, tool_policy in sorted(policy.tools.items()):
        for limit in tool_policy.limits:
            if (
                limit.tier is not None
                and tool in tools
                and list(Tier).index(limit.tier) < list(Tier).index(tool_tier(policy, tool, tools[tool].tier))
            ):
                warning(
                    f"tools.{tool}.limits.{limit.id}.tier: {limit.tier.value} is below the tool's own tier; "
                    "the call's tier decides its approval"
                )

    for tool in sorted(set(tools) - callable_tools):
        warning(f"{tool}: no agent has it among its capabilities")
    return sorted(findings, key=lambda f: f.level != "error")


def limit_problems(limit: WindowLimit, entry: CatalogEntry) -> list[str]:
    """What a windowed limit counts that its tool does not have, one line each, starting with the
    limit's field: an argument or fact to sum that is missing or not a number, or a `when` that
    cannot mean what it says."""
    problems: list[str] = []
    if limit.sum is not None:
        kind = kind_at(entry.arguments, limit.sum)
        if kind is None:
            known = ", ".join(a for a in sorted(entry.arguments) if not a.endswith("*")) or "none"
            problems.append(f"sum: {entry.name} has no argument {limit.sum}; arguments: {known}")
        elif kind not in ("number", "any"):
            problems.append(f"sum: {entry.name}'s argument {limit.sum} is {_article(kind)}, and sum adds numbers")
    if limit.sum_fact is not None:
        kind = entry.facts.get(limit.sum_fact)
        if kind is None:
            given = ", ".join(sorted(entry.facts)) or "none"
            problems.append(f"sum_fact: {entry.name}'s preview gives no fact {limit.sum_fact}; facts: {given}")
        elif kind not in ("number", "any"):
            problems.append(f"sum_fact: {entry.name}'s fact {limit.sum_fact} is {_article(kind)}, and sum adds numbers")
    if limit.when is not None:
        problems.extend(f"when: {problem}" for problem in condition_problems(limit.when, entry))
    return problems


def rule_problems(policy: Policy, catalog: Sequence[CatalogEntry]) -> list[str]:
    """Every rule and windowed limit of a catalogued tool that cannot mean what it says, one line
    each: what `airlock policy check` reports, and what the worker refuses to start with."""
    tools = {entry.name: entry for entry in catalog}
    problems: list[str] = []
    for tool in sorted(policy.tools):
        if tool not in tools:
            continue
        for rule in policy.tools[tool].rules:
            problems += [f"tools.{tool}: rule {rule.id}: {p}" for p in condition_problems(rule.when, tools[tool])]
        for limit in policy.tools[tool].limits:
            problems += [f"tools.{tool}.limits.{limit.id}.{p}" for p in limit_problems(limit, tools[tool])]
    return problems


def require_sound_rules(policy: Policy, catalog: Sequence[CatalogEntry], source: str) -> None:
    """Refuses (PolicyError) a policy with a rule `rule_problems` finds: a worker would otherwise
    run it, and the rule would fail closed on every call instead of deciding what it says."""
    problems = rule_problems(policy, catalog)
    if problems:
        raise PolicyError("\n".join(f"{source}: {p}" for p in problems))


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def condition_problems(cond: Condition, entry: CatalogEntry) -> list[str]:
    """What in a rule's condition cannot mean what it says for this tool: an argument it does not
    have, a fact its preview does not give, a literal of another kind than the field's."""
    if cond.operator in ("all", "any", "not"):
        return [problem for child in cond.children() for problem in condition_problems(child, entry)]
    if cond.operator == "always":
        return []
    problems: list[str] = []
    if cond.fact is not None:
        field, kind = f"fact {cond.fact}", entry.facts.get(cond.fact)
        if kind is None:
            given = ", ".join(sorted(entry.facts)) or "none"
            problems.append(f"fact {cond.fact!r} is not among the facts {entry.name}'s preview gives ({given})")
    else:
        arg = cond.arg or ""
        field, kind = f"arg {arg}", kind_at(entry.arguments, arg)
        if kind is None:
            known = ", ".join(a for a in sorted(entry.arguments) if not a.endswith("*")) or "none"
            problems.append(f"arg {arg!r} is not an argument of {entry.name} ({known})")
    wanted = cond.operand_kinds()
    if kind is not None and kind != "any" and kind not in wanted:
        literal = cond.literal()
        problems.append(
            f"{field} is {_article(kind)}, and {cond.operator} compares {' or '.join(map(_article, wanted))}"
            + (f" ({literal!r})" if cond.operator in ("eq", "ne", "in", "not_in") else "")
        )
    if cond.gt_fact is not None:
        limit = entry.facts.get(cond.gt_fact)
        if limit is None:
            given = ", ".join(sorted(entry.facts)) or "none"
            problems.append(f"gt_fact {cond.gt_fact!r} is not among the facts {entry.name}'s preview gives ({given})")
        elif limit not in ("number", "any"):
            problems.append(f"gt_fact {cond.gt_fact} is {_article(limit)}, and gt_fact compares a number")
    return problems
