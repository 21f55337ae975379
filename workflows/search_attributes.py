"""The search attributes Airlock's workflows keep up to date, for listing runs in the Temporal CLI
and Web UI (`AirlockState="awaiting_approval"`) and for finding a workspace's live runs."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

WORKSPACE = SearchAttributeKey.for_keyword("AirlockWorkspace")
STATE = SearchAttributeKey.for_keyword("AirlockState")
PENDING = SearchAttributeKey.for_int("AirlockPendingApprovals")
COST = SearchAttributeKey.for_float("AirlockCostUsd")
# Set on an UndoRun and its compensation run: the workflow id of the run they undo.
UNDO_OF = SearchAttributeKey.for_keyword("AirlockUndoOf")
SEARCH_ATTRIBUTES = (WORKSPACE, STATE, PENDING, COST, UNDO_OF)
