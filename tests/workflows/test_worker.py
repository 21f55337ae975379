"""Starting the worker: a bad policy stops it before it takes any task."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runtime.settings import EXAMPLE_POLICY

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
