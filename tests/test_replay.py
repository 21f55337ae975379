"""Determinism: today's AgentRun must replay the histories of runs recorded by earlier code."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from airlock.converter import data_converter
from tests.conftest import Runs
from tests.history_scenarios import HISTORIES, SCENARIOS, histories_of
from workflows.agent_run import AgentRun

# Histories of every released shape of the workflow: today's, and older ones kept in
# subfolders (e.g. runs from before the workspace control plane) that must still replay.
COMMITTED = sorted(HISTORIES.rglob("*.json"))


def replayer() -> Replayer:
    return Replayer(workflows=[AgentRun], data_converter=data_converter)


def test_every_scenario_has_a_committed_history() -> None:
    """The committed set covers approval, denial, budget, stop and continue-as-new runs."""
    assert {p.name.split(".")[0] for p in HISTORIES.glob("*.json")} == set(SCENARIOS)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(HISTORIES)))
async def test_committed_history_replays(path: Path) -> None:
    """A non-deterministic change to the workflow fails here, naming the history it broke."""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_fresh_history_replays(runs: Runs, scenario: str) -> None:
    """Histories recorded now, against a real server, replay with the same code."""
    handle = await SCENARIOS[scenario](runs)
    for text in await histories_of(runs.client, handle):
        history = WorkflowHistory.from_json(handle.id, text)
        result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{scenario}: {result.replay_failure}"
