"""Starting the worker: a bad policy stops it before it takes any task."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from temporalio.client import Client

from contracts.models import CallStatus, RunState
from policy import load_policy
from runtime.settings import EXAMPLE_POLICY, Settings
from tests.conftest import Runs, call
from worker import build_worker, preflight

ROOT = Path(__file__).resolve().parents[2]


def test_worker_refuses_a_policy_with_errors(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(EXAMPLE_POLICY.read_text().replace("approvals: 2", "approvals: two"))
    env = {**os.environ, "AIRLOCK_POLICY": str(bad), "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    proc = subprocess.run([sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{bad}:31: tiers.critical.approvals: Input should be a valid integer" in proc.stderr


def test_worker_refuses_a_rule_that_cannot_compare_with_its_field(tmp_path: Path) -> None:
    """A rule whose literal is of another kind than the field it tests (here the string "200"
    against the refund's amount, a number) would fail closed on every call: the worker refuses
    to start and names the tool, the rule and the kinds."""
    bad = tmp_path / "policy.yaml"
    old = "when: {arg: amount_usd, gt: 200}"
    text = EXAMPLE_POLICY.read_text()
    assert old in text
    bad.write_text(text.replace(old, 'when: {arg: amount_usd, eq: "200"}'))
    env = {**os.environ, "AIRLOCK_POLICY": str(bad), "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    proc = subprocess.run([sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert (
        f"{bad}: tools.payments.create_refund: rule refund.max-200: arg amount_usd is a number, "
        "and eq compares a string ('200')" in proc.stderr
    )


async def test_the_worker_runs_the_policy_its_start_checked(client: Client, settings: Settings, tmp_path: Path) -> None:
    """`airlock worker` checks the policy, then builds the worker from what it checked: a policy
    file edited in between (here, refunds over 10 USD denied) changes nothing until a restart."""
    path = tmp_path / "policy.yaml"
    text = EXAMPLE_POLICY.read_text()
    path.write_text(text)
    checked = settings.model_copy(update={"policy_path": path})
    loaded = preflight(checked)
    old = "when: {arg: amount_usd, gt: 200}"
    assert old in text
    path.write_text(text.replace(old, "when: {arg: amount_usd, gt: 10}"))
    async with build_worker(client, checked, loaded=loaded):
        handle = await Runs(client, checked).start(
            script=[call("payments.create_refund", order_id="ORD-1001", amount_usd=20, reason="damaged")]
        )
        report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert [(c.status, c.decision.rule) for c in report.calls] == [(CallStatus.EXECUTED, "agent.capabilities")]
    assert report.policy_hash == loaded.policy.content_hash() != load_policy(path).content_hash()
