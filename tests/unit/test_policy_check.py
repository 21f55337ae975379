"""`airlock policy check FILE`: a policy read against the tool catalogue, one line a reviewer reads
per finding, exit 1 on errors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from airlock import cli
from policy import load_policy
from policy.check import check
from runtime.settings import EXAMPLE_POLICY
from tests.conftest import policy_file
from tools.registry import load_registry

CATALOG = load_registry(["tools.backoffice"]).catalog()


def run_check(path: Path) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = cli.run(["policy", "check", str(path), "--tools", "tools.backoffice"], out=out)
    return status, out.getvalue().splitlines()


def test_the_shipped_policies_pass() -> None:
    status, lines = run_check(EXAMPLE_POLICY)
    assert status == 0
    assert lines == [f"{EXAMPLE_POLICY}: ok: 0 error(s), 0 warning(s); 3 agent(s), 13 tool(s) in the catalogue"]


def test_unknown_tools_and_tiers_nobody_can_approve_are_errors(tmp_path: Path) -> None:
    path = policy_file(
        tmp_path / "p.yaml",
        agents={"support": {"capabilities": ["orders.get_order", "payments.create_refnud", "crm.update_customer"]}},
        tools={"crm.delete_everything": {"tier": "low"}, "crm.update_customer": {"tier": "critical"}},
        tiers={"critical": {"roles": ["auditor"], "require_role": "auditor"}},
    )
    findings = check(load_policy(path), CATALOG)
    errors = [f.message for f in findings if f.level == "error"]
    assert "agents.support.capabilities: payments.create_refnud is not a tool of the catalogue" in errors
    assert "tools.crm.delete_everything: not a tool of the catalogue; its rules never apply" in errors
    assert any(e.startswith("tiers.critical: nobody holds any of the roles auditor") for e in errors), errors
    assert any(e.startswith("tiers.critical.require_role: nobody holds auditor") for e in errors), errors
    status, lines = run_check(path)
    assert status == 1
    assert lines[-1].startswith(f"{path}: FAILED: {len(errors)} error(s)")
    assert f"{path}: error: agents.support.capabilities: payments.create_refnud is not a tool of the catalogue" in lines


def test_a_tier_needing_more_approvers_than_hold_its_roles_is_an_error(tmp_path: Path) -> None:
    path = policy_file(tmp_path / "p.yaml", tiers={"high": {"approvals": 3, "roles": ["approver"]}})
    messages = [f.message for f in check(load_policy(path), CATALOG) if f.level == "error"]
    assert any(
        m.startswith("tiers.high: 3 approvals are needed but only 2 people hold the roles approver (u_bob, u_carol)")
        for m in messages
    ), messages


def test_a_policy_that_does_not_load_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nagents: [\n")
    status, lines = run_check(path)
    err = capsys.readouterr().err.splitlines()
    assert status != 0 and lines == []
    assert len(err) == 1 and err[0].startswith(f"airlock: policy check: {path}:"), err


def test_rules_are_read_against_each_tools_arguments_facts_and_kinds(tmp_path: Path) -> None:
    """A rule over a fact no preview gives, an argument the tool lacks, or a literal of another
    kind than the field's can never mean what it says: each is an error naming tool, rule, field
    and kinds, also inside all/any/not."""
    rules = [
        {"id": "r.fact", "effect": "require_approval", "when": {"fact": "refundable", "gt": 10}},
        {"id": "r.arg", "effect": "deny", "when": {"arg": "amount", "gt": 10}},
        {"id": "r.kind", "effect": "deny", "when": {"arg": "amount_usd", "eq": "50"}},
        {"id": "r.bool", "effect": "deny", "when": {"fact": "refundable_usd", "in": [True]}},
        {"id": "r.text", "effect": "deny", "when": {"arg": "amount_usd", "starts_with": "5"}},
        {"id": "r.limit", "effect": "deny", "when": {"arg": "amount_usd", "gt_fact": "order_total"}},
        {
            "id": "r.nested",
            "effect": "deny",
            "when": {"all": [{"arg": "order_id", "present": True}, {"not": {"arg": "reason", "gt": 1}}]},
        },
        {
            "id": "r.ok",
            "effect": "deny",
            "when": {"any": [{"arg": "amount_usd", "eq": 50}, {"arg": "order_id", "in": ["ORD-1"]}]},
        },
    ]
    path = policy_file(tmp_path / "p.yaml", tools={"payments.create_refund": {"rules": rules}})
    errors = [f.message for f in check(load_policy(path), CATALOG) if f.level == "error"]
    where = "tools.payments.create_refund: rule"
    assert errors == [
        f"{where} r.fact: fact 'refundable' is not among the facts payments.create_refund's preview gives "
        "(order_total_usd, refundable_usd)",
        f"{where} r.arg: arg 'amount' is not an argument of payments.create_refund (amount_usd, order_id, reason)",
        f"{where} r.kind: arg amount_usd is a number, and eq compares a string ('50')",
        f"{where} r.bool: fact refundable_usd is a number, and in compares a bool ([True])",
        f"{where} r.text: arg amount_usd is a number, and starts_with compares a string",
        f"{where} r.limit: gt_fact 'order_total' is not among the facts payments.create_refund's preview gives "
        "(order_total_usd, refundable_usd)",
        f"{where} r.nested: arg reason is a string, and gt compares a number",
    ]


def test_a_mapping_arguments_keys_are_known_by_its_value_kind(tmp_path: Path) -> None:
    """`changes.email` of a `dict[str, str]` argument is a string; `changes.name` of a nested model
    is its field; neither is an unknown argument."""
    rules = [{"id": "crm.no-rename", "effect": "deny", "when": {"arg": "changes.name", "present": True}}]
    rules.append({"id": "crm.mail", "effect": "deny", "when": {"arg": "changes.email", "domain_not_in": ["acme.test"]}})
    path = policy_file(tmp_path / "p.yaml", tools={"crm.update_customer": {"rules": rules}})
    assert [f.message for f in check(load_policy(path), CATALOG) if f.level == "error"] == []


def test_a_string_literal_against_a_boolean_fact_is_an_error(tmp_path: Path) -> None:
    """`not_in: ["true"]` over a boolean fact would never compare: an error naming both kinds,
    also through `airlock policy check`, which exits 1."""
    rules = [{"id": "r.flag", "effect": "deny", "when": {"fact": "refundable_usd", "present": True}}]
    rules.append({"id": "r.bool", "effect": "deny", "when": {"arg": "order_id", "not_in": [True]}})
    path = policy_file(tmp_path / "p.yaml", tools={"payments.create_refund": {"rules": rules}})
    status, lines = run_check(path)
    assert status == 1
    assert (
        f"{path}: error: tools.payments.create_refund: rule r.bool: arg order_id is a string, "
        "and not_in compares a bool ([True])"
    ) in lines
    assert not any("r.flag" in line for line in lines)
