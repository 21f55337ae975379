"""Audit events, without Temporal."""


def test_every_timeline_kind_has_an_audit_event_type() -> None:
    """Workflow code maps each timeline entry to audit events; a kind without a mapping would
    fail the workflow task (a stuck run), so the two lists must move together."""
    from typing import get_args

    from contracts.audit import _TYPES, EventType
    from contracts.models import TimelineKind

    assert set(_TYPES) == set(get_args(TimelineKind))
    assert set(_TYPES.values()) <= set(get_args(EventType))
