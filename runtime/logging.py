"""Structured JSON logs for the worker: every line carries run id, workspace and step.

Activities bind those with structlog's context variables; workflow code logs through
`workflow.logger` (replay-safe: silent while replaying), whose records are routed through the
same structlog processors so that one stream of JSON lines comes out of the worker.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from temporalio import activity, workflow


def _temporal_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Lift the workflow fields the Temporal SDK attaches to a log record to top-level keys."""
    record = event.get("_record")
    if record is None:
        return event
    wf = getattr(record, "temporal_workflow", None)
    if isinstance(wf, dict):
        event.setdefault("run_id", wf.get("workflow_id"))
        event.setdefault("temporal_run_id", wf.get("run_id"))
        event.setdefault("workflow_type", wf.get("workflow_type"))
    extra = getattr(record, "airlock", None)
    if isinstance(extra, dict):
        for key, value in extra.items():
            if value is not None:
                event.setdefault(key, value)
    return event


def configure_logging(level: str = "INFO") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        # Below the level, an event is dropped before any processor runs (time stamps included).
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _temporal_context],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    # The workflow fields travel as structured keys (see _temporal_context), not in the message.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
