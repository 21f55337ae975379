"""The tool author's guide holds: its example module (`tools.examples.loyalty`), loaded by name beside
the back office, checks clean against its policy, reads unattended, previews and writes under the
policy, and is undone by `airlock undo`. The guide's code is the module's code."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Engine, select
from temporalio.client import Client

from contracts.models import CallStatus, RunReport
from contracts.undo_io import UndoReport
from runtime.settings import Settings
from tests.conftest import AirlockCli, Runs, call, policy_file
from tools.examples import loyalty
from worker import build_worker

ROOT = Path(__file__).resolve().parents[2]
MODULES = "tools.backoffice,tools.examples.loyalty"
RULES = {
    "loyalty.redeem": {
        "rules": [
            {
                "id": "loyalty.within-balance",
                "effect": "deny",
                "when": {"arg": "points", "gt_fact": "points_balance"},
                "reason": "more points than the customer holds",
            },
            {
                "id": "loyalty.large",
                "effect": "require_approval",
                "when": {"arg": "points", "gt": 500},
                "reason": "redemptions above 500 points need a person",
            },
        ]
    }
}


@pytest.fixture
def guide_policy(tmp_path: Path) -> Path:
    return policy_file(
        tmp_path / "loyalty.yaml",
        agents={
            "loyalty": {"capabilities": ["loyalty.balance", "loyalty.redeem"]},
            "undo": {"capabilities": ["payments.void_refund", "crm.update_customer", "loyalty.restore"]},
        },
        tools=RULES,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def guide_runs(client: Client, settings: Settings, guide_policy: Path) -> AsyncIterator[Runs]:
    ours = settings.model_copy(update={"policy_path": guide_policy, "tool_modules": MODULES})
    async with build_worker(client, ours):
        yield Runs(client, ours)


def points(db: Engine, customer: str) -> int:
    with db.connect() as conn:
        held: int = conn.execute(
            select(loyalty.balances.c.points).where(loyalty.balances.c.customer_id == customer)
        ).scalar_one()
    return held


def start(runs: Runs, *script: dict[str, Any]) -> Any:
    return runs.start(agent="loyalty", mode="auto", goal="Redeem Dana's points for a mug", script=list(script))


async def test_the_guide_module_checks_clean_reads_writes_and_is_undone(
    guide_runs: Runs,
    guide_policy: Path,
    db: Engine,
    airlock_cli: AirlockCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRLOCK_TOOL_MODULES", MODULES)
    status, out = await airlock_cli("policy", "check", str(guide_policy))
    assert status == 0, out
    assert f"{guide_policy}: ok: 0 error(s)" in out

    handle = await start(
        guide_runs,
        call("loyalty.balance", customer_id="C-100"),
        call("loyalty.redeem", customer_id="C-100", points=300, reward="mug"),
        call("loyalty.redeem", customer_id="C-100", points=5000, reward="bike"),
    )
    report = await handle.result()
    read, write, refused = report.calls
    assert read.status is CallStatus.EXECUTED and read.result == {"customer_id": "C-100", "points": 1200}
    assert write.status is CallStatus.EXECUTED and write.facts == {"points_balance": 1200}
    assert [str(d) for d in write.diff] == ["loyalty[C-100].points: 1200 -> 900"]
    assert refused.status is CallStatus.DENIED and refused.decision is not None
    assert refused.decision.rule == "loyalty.within-balance"
    assert points(db, "C-100") == 900

    status, out = await airlock_cli("undo", handle.id)
    assert status == 0, out
    # The restore is a medium-tier write, which the policy lets the `undo` agent run unattended.
    undone = await guide_runs.client.get_workflow_handle(f"undo-{handle.id}", result_type=UndoReport).result()
    assert undone.state == "completed"
    child = guide_runs.client.get_workflow_handle(f"undo-{handle.id}.compensations", result_type=RunReport)
    (restored,) = (await child.result()).calls
    assert restored.tool == "loyalty.restore" and restored.status is CallStatus.EXECUTED
    assert [str(d) for d in restored.diff] == ["loyalty[C-100].points: 900 -> 1200"]
    assert points(db, "C-100") == 1200


async def test_a_large_redemption_waits_for_a_person(guide_runs: Runs, db: Engine) -> None:
    handle = await start(guide_runs, call("loyalty.redeem", customer_id="C-100", points=600, reward="lamp"))
    pending = (await guide_runs.pending(handle)).pending_approvals[0]
    assert pending.tool == "loyalty.redeem" and pending.approvals_still_needed == 1
    assert points(db, "C-100") == 1200
    await handle.cancel()


def test_the_guides_code_is_the_example_module() -> None:
    """Every Python block of the guide's walk-through is a verbatim excerpt of the module."""
    guide = (ROOT / "docs" / "tools.md").read_text()
    walkthrough = guide[guide.index("## Writing a tool, step by step") :]
    walkthrough = walkthrough[: walkthrough.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", walkthrough, flags=re.S)
    source = (ROOT / "tools" / "examples" / "loyalty.py").read_text()
    assert len(blocks) >= 5
    for block in blocks:
        assert block in source, block[:80]
