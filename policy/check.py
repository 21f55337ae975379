"""A policy read against the tool catalogue, as a reviewer would before it ships: what names a tool
nobody defined, what nobody can approve, what nobody can call. Pure: the policy and the catalogue
in, findings out (`airlock policy check FILE`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel

from contracts.catalog import CatalogEntry
from contracts.models import Tier
from contracts.policy import Policy, WindowLimit
from policy.engine import tool_tier


class Finding(BaseModel):
    """One thing wrong (`error`: the policy does not do what it says) or worth a look (`warning`)."""

    level: Literal["error", "warning"]
    message: str


class ToolShape(BaseModel):
    """What a limit may count on a tool: its arguments (dotted paths into nested objects) and the
    facts its preview gives (None when the tool does not name them)."""

    args: frozenset[str]
    facts: frozenset[str] | None = None


def check(
    policy: Policy, catalog: Sequence[CatalogEntry], shapes: Mapping[str, ToolShape] | None = None
) -> list[Finding]:
    """Every finding, errors first, each message naming the agent, tool or tier at fault. With
    `shapes`, each windowed limit's argument or fact is looked up on its tool."""
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
        shape = (shapes or {}).get(tool)
        for limit in tool_policy.limits:
            if shape is not None:
                _check_limit_fields(tool, limit, shape, error, warning)
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


def _check_limit_fields(
    tool: str,
    limit: WindowLimit,
    shape: ToolShape,
    error: Callable[[str], None],
    warning: Callable[[str], None],
) -> None:
    where = f"tools.{tool}.limits.{limit.id}"
    if limit.sum is not None and limit.sum not in shape.args:
        error(f"{where}.sum: {tool} has no argument {limit.sum}; arguments: {', '.join(sorted(shape.args)) or 'none'}")
    if limit.sum_fact is not None:
        if shape.facts is None:
            warning(
                f"{where}.sum_fact: {tool} does not name the facts its preview gives; {limit.sum_fact} is unchecked"
            )
        elif limit.sum_fact not in shape.facts:
            error(
                f"{where}.sum_fact: {tool}'s preview gives no fact {limit.sum_fact}; "
                f"facts: {', '.join(sorted(shape.facts)) or 'none'}"
            )
    arg = limit.when.arg if limit.when is not None else None
    if arg is not None and arg not in shape.args:
        error(f"{where}.when.arg: {tool} has no argument {arg}; arguments: {', '.join(sorted(shape.args)) or 'none'}")
