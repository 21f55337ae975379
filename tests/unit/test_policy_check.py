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
