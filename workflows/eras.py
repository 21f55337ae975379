"""The eras of `AgentRun`'s code: each `workflow.patched` marker a run's history may hold, what
changed with it, and which way a run of each era starts. Kept out of the run's loop, so that it
reads as what a run does today; a history of any era still replays through here.

Runs since PUBLISH_BY_CLOCK start as those since PUBLISH_WHEN_SEEN do, and tell that they have
gone on long enough to be seen by the clock their model calls recorded. Runs since PUBLISH_WHEN_SEEN start as those since
START_IN_ONE do, and publish their state when it can be seen. Runs since START_IN_ONE join in their start activity, or under a cap in a full
one; runs between that and CAPPED_JOIN pinned first, then joined the same way in an activity of
its own; runs between that and `workspace-join-local` joined in a local activity; runs between
that and `workspace-control` in a full activity; earlier runs did not join.
"""

from __future__ import annotations

from typing import Literal

from temporalio import workflow

# How a starting run joins its workspace's control plane (see `start_era`).
Join = Literal["in-start", "capped-by-activity", "local", "activity"] | None
# When a starting run first publishes its search attributes: as it starts, or when it can be seen
# (past its first workflow task by the history's length, or by its model calls' clock).
Publishing = Literal["at-start", "when-seen", "by-clock"]
# Under a concurrency cap the join waits for the control workflow's admission. Since this patch
# it waits in a full activity, with this run's workflow task closed: a local activity kept the
# task, and its worker slot, and once a burst of starts held every slot of the worker the control
# workflow (on the same queue) had none left to admit them with.
CAPPED_JOIN = "capped-join-by-activity"
# Since this patch a run pins its context and joins its workspace in one local activity
# (`run.start`), one marker event instead of two; under a cap it still waits in a full activity.
START_IN_ONE = "start-in-one-activity"
# Since this patch a run publishes its search attributes when they can be seen: not when it
# starts, but when it first waits outside its first workflow task (for a person, a timer, a full
# activity, a switch, a continue-as-new) or finds itself past that task. A run that ends within its
# first task, as most short runs do, publishes once, its final state: one history event fewer,
# and one visibility write fewer on the server.
PUBLISH_WHEN_SEEN = "publish-when-seen"
# Since this patch a model's decision is considered for at most MAX_CALLS_PER_STEP calls (the rest
# are refused in one note to the model), and a history whose timeline passed MAX_TIMELINE entries
# continues as new at the next step: what one step or one history records stays bounded.
BOUNDED_STEP = "bounded-step"
# Since this patch a run that has not published yet tells that it has been going long enough to be
# seen by the clock its model calls recorded (`ModelDecision.decided_at`), not by the history's
# length: the length read after a local activity is not the same in a run and in its replay (the
# SDK may hand the activity's result to the workflow one task later than it did the first time),
# so a publish that depended on it could be replayed as an upsert the history does not hold, or
# the other way round. A recorded result reads the same on every replay.
PUBLISH_BY_CLOCK = "publish-by-clock"
# Since this patch a run that is paused (by a person or the kill switch) while it waits for votes
# reports `paused`, not `awaiting_approval`, and publishes it; it reports `awaiting_approval`
# again when resumed with the vote still open.
PAUSED_WINS = "paused-wins"
# Since this patch a failing model call is retried by the run, not by the server: each failed
# attempt is recorded (timeline `model_retry`, `last_error`, `held`) before the next, so that a
# run retrying a broken model does not look like a run that is working.
MODEL_RETRIES_SEEN = "model-retries-seen"
# Since this patch a call approved after a wait is previewed again just before it runs; if the
# facts its decision used changed, it is decided again, and the approval does not carry over.
FRESH_FACTS = "fresh-facts"
# Since this patch a call that a windowed limit counts holds its charges in the control store
# after it is decided (`limits.reserve`) and settles them after it ran or did not
# (`limits.settle`). Only runs whose pinned policy has limits for the call's tool reach it.
WINDOWED_LIMITS = "windowed-limits"
WORKSPACE_JOIN_LOCAL = "workspace-join-local"
WORKSPACE_CONTROL = "workspace-control"


def start_era() -> tuple[Join, Publishing]:
    """How this run joins its workspace's control plane, and when it first publishes its state.
    Called once, by a run that starts afresh, before its first await."""
    if workflow.patched(PUBLISH_BY_CLOCK):
        return "in-start", "by-clock"
    if workflow.patched(PUBLISH_WHEN_SEEN):
        return "in-start", "when-seen"
    if workflow.patched(START_IN_ONE):
        return "in-start", "at-start"
    if workflow.patched(CAPPED_JOIN):
        return "capped-by-activity", "at-start"
    if workflow.patched(WORKSPACE_JOIN_LOCAL):
        return "local", "at-start"
    if workflow.patched(WORKSPACE_CONTROL):
        return "activity", "at-start"
    return None, "at-start"
