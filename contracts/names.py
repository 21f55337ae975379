"""Names that cross Temporal: the activities a run calls by name."""

from __future__ import annotations


def prepare_activity_name(tool: str) -> str:
    return f"tool.{tool}.prepare"


def execute_activity_name(tool: str) -> str:
    return f"tool.{tool}"
