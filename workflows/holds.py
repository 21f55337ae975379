"""What holds a run that is not moving, said once for every surface that shows it.

`status`, `airlock show`, the inbox and the Temporal Web UI's current details all read the one
`Hold` built here, so they cannot tell different stories about the same wait. Pure: the run passes
in what it knows and the time; nothing here awaits or reads a clock.
"""

from __future__ import annotations

from datetime import datetime

from contracts.models import Hold, PendingApproval

# The order in which holds are named when several apply at once: the one named first is the one
# that must be lifted before anything else can happen (votes still count while a run is paused,
# but a resumed run with its approval given runs at once).
PRECEDENCE = ("kill_switch", "paused", "control_store", "safe_mode", "approval", "model_retry")


def at(instant: datetime) -> str:
    """An instant as people read it in every surface: UTC, to the second."""
    return instant.strftime("%Y-%m-%d %H:%M:%S UTC")


def approval(pending: PendingApproval, may_approve: list[str], run_id: str) -> Hold:
    needed = pending.approvals_still_needed
    who = ", ".join(may_approve) if may_approve else "nobody the policy names (the call will be denied)"
    role = f" (the last from a holder of {pending.required_role})" if pending.required_role else ""
    return Hold(
        kind="approval",
        since=pending.requested_at,
        until=pending.deadline,
        waiting_for=f"{needed} more approval(s) of {pending.tool} ({pending.approval_id}) from a holder of "
        f"{' or '.join(pending.approver_roles)}{role}",
        released_by=f"`airlock approve {run_id} {pending.approval_id} --as PERSON` by one of: {who}; "
        f"with no decision it counts as denied at {at(pending.deadline)}",
    )


def paused(by: str, since: datetime, reason: str) -> Hold:
    return Hold(
        kind="paused",
        since=since,
        waiting_for=f"a resume: {by} paused the run" + (f" ({reason})" if reason else ""),
        released_by=f"a `resume` signal from {by}, an admin or an approver",
    )


def kill_switch(workspace: str, by: str | None, since: datetime, reason: str) -> Hold:
    return Hold(
        kind="kill_switch",
        since=since,
        waiting_for=f"workspace {workspace}'s kill switch, thrown by {by or 'an admin'}"
        + (f" ({reason})" if reason else ""),
        released_by=f"`airlock workspace resume {workspace} --by ADMIN`",
    )


def safe_mode(workspace: str, tool: str, since: datetime) -> Hold:
    return Hold(
        kind="safe_mode",
        since=since,
        waiting_for=f"the end of workspace {workspace}'s safe mode: the approved {tool} is held, not dropped",
        released_by=f"`airlock workspace safe-mode-off {workspace} --by ADMIN`",
    )


def control_store(why: str, since: datetime, retry_at: datetime | None) -> Hold:
    return Hold(
        kind="control_store",
        since=since,
        until=retry_at,
        waiting_for=why,
        released_by="the control store (AIRLOCK_CONTROL_DB) answering again; the run reads it again by itself",
    )


def model_retry(model: str, attempt: int, attempts: int, error: str, since: datetime, next_at: datetime) -> Hold:
    return Hold(
        kind="model_retry",
        since=since,
        until=next_at,
        waiting_for=f"model {model}: attempt {attempt} of {attempts} failed: {error}",
        released_by=f"the next attempt at {at(next_at)}; after attempt {attempts} the run fails",
    )


def first(holds: list[Hold]) -> Hold | None:
    """The hold to name when several apply (see PRECEDENCE)."""
    return min(holds, key=lambda h: PRECEDENCE.index(h.kind), default=None)
