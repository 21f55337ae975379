"""The switches in the control store (`activities.control_store.ControlStore.write`): a change
commits only over the generation it was made from, and the same change written again (its first
attempt committed, its answer lost) is committed once, not refused as stale."""

from __future__ import annotations

import pytest

from activities.control_store import ControlStore, StaleGeneration
from contracts.workspace_io import Switches
from tests.databases import both_databases  # noqa: F401  (runs every test here on both databases)

PAUSE = Switches(generation=1, paused=True, by="u_carol", reason="incident 42")


def test_the_same_change_written_again_is_committed_once(database: str) -> None:
    store = ControlStore.open(database)
    assert store.write("acme", PAUSE) == PAUSE
    assert store.write("acme", PAUSE) == PAUSE  # a retried attempt of the change that committed
    assert store.read("acme") == PAUSE
    resume = Switches(generation=2, paused=False, by="u_carol", reason="fixed")
    assert store.write("acme", resume) == resume
    assert store.read("acme") == resume


def test_another_change_over_a_generation_already_taken_is_stale(database: str) -> None:
    store = ControlStore.open(database)
    store.write("acme", PAUSE)
    for other in (
        Switches(generation=1, safe_mode=True, by="u_carol", reason="audit"),  # made from the same one
        Switches(generation=1, paused=True, by="u_dave", reason="incident 42"),  # someone else's
        Switches(generation=3, paused=False, by="u_carol"),  # from a generation never seen
    ):
        with pytest.raises(StaleGeneration) as refused:
            store.write("acme", other)
        assert refused.value.stored == PAUSE
