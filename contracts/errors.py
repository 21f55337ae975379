"""Every error Airlock raises, in one place: the `type` of each `ApplicationError` that crosses
Temporal (clients and scripts match on it: a contract, so add, never rename), and where each
Python exception that stays inside a process lives.

    ApplicationError, by `type`
    ├── a run refused as it starts: non-retryable, the run fails at once naming the problem
    │   ├── InvalidRunInput        arguments missing, extra, unreadable, too large or invalid
    │   ├── ForgedCarriedState     "carried state" that no continue-as-new produced
    │   ├── RunNotAllowed          the pinned policy does not let this run start
    │   ├── NotTheControlWorkflow  a WorkspaceControl started under another workflow id
    │   └── UnknownWorkspace       a WorkspaceControl for a workspace the policy does not know
    ├── a message refused: the workflow goes on, only the caller sees it
    │   ├── NotStarted             a query before the first workflow task pinned the policy
    │   ├── NotRegistered          an admission asked for before the run registered
    │   ├── UnknownQuery
    │   ├── UnknownUpdate
    │   ├── MalformedQuery         a query whose arguments are not what it takes
    │   └── MalformedUpdate        an update whose argument does not decode (rejected by its validator)
    ├── an undo refused
    │   └── UndoNotPossible        the run's writes cannot be compensated (the plan says why)
    └── an activity failed
        ├── the model
        │   ├── ModelUnavailable       retried: HTTP 408/409/429/5xx, timeouts, no choices
        │   ├── ModelRequestRejected   non-retryable: the request itself was refused
        │   ├── ModelNotConfigured     non-retryable: no model name, provider or API key
        │   └── ModelPriceUnknown      non-retryable: a paid model with no price to budget by
        ├── the back-office database (tools.db_errors)
        │   ├── DatabaseUnavailable    retried: connection lost, locked, timed out
        │   ├── DatabaseRefused        non-retryable: a constraint refused the value
        │   └── DatabaseError          non-retryable: anything else
        └── ControlStoreMissing        the worker has no control store (a deployment error)

    Python exceptions, never sent across Temporal as themselves
    ├── policy.loader.PolicyError            a policy file that does not load (file:line: what)
    ├── tools.base.ToolError                 a tool refusing a call: recorded as `Rejected`
    ├── runtime.sealing.SecretError          a sealed value that does not open
    ├── activities.control_store.StaleGeneration  a switch written over a newer one
    ├── workflows.governed_run.RunEnded      a run reaching a final state from deep in its loop
    ├── recorder.flight_recorder.ReplayFailed
    └── airlock.cli.CommandError, airlock.votes.VoteError   one line for the person at the terminal

A tool's own exception is classified at the activity boundary (tools.db_errors): it reaches the
workflow as one of the types above, with its text scrubbed of secrets (tools.secret_guard).
"""

from __future__ import annotations

from typing import Final

INVALID_RUN_INPUT: Final = "InvalidRunInput"
FORGED_CARRIED_STATE: Final = "ForgedCarriedState"
RUN_NOT_ALLOWED: Final = "RunNotAllowed"
NOT_THE_CONTROL_WORKFLOW: Final = "NotTheControlWorkflow"
UNKNOWN_WORKSPACE: Final = "UnknownWorkspace"

NOT_STARTED: Final = "NotStarted"
NOT_REGISTERED: Final = "NotRegistered"
UNKNOWN_QUERY: Final = "UnknownQuery"
UNKNOWN_UPDATE: Final = "UnknownUpdate"
MALFORMED_QUERY: Final = "MalformedQuery"
MALFORMED_UPDATE: Final = "MalformedUpdate"

UNDO_NOT_POSSIBLE: Final = "UndoNotPossible"

MODEL_UNAVAILABLE: Final = "ModelUnavailable"
MODEL_REQUEST_REJECTED: Final = "ModelRequestRejected"
MODEL_NOT_CONFIGURED: Final = "ModelNotConfigured"
MODEL_PRICE_UNKNOWN: Final = "ModelPriceUnknown"

DATABASE_UNAVAILABLE: Final = "DatabaseUnavailable"
DATABASE_REFUSED: Final = "DatabaseRefused"
DATABASE_ERROR: Final = "DatabaseError"
CONTROL_STORE_MISSING: Final = "ControlStoreMissing"

# Every type above: a test checks that each ApplicationError Airlock raises names one of them.
ALL: Final = frozenset(
    {
        INVALID_RUN_INPUT,
        FORGED_CARRIED_STATE,
        RUN_NOT_ALLOWED,
        NOT_THE_CONTROL_WORKFLOW,
        UNKNOWN_WORKSPACE,
        NOT_STARTED,
        NOT_REGISTERED,
        UNKNOWN_QUERY,
        UNKNOWN_UPDATE,
        MALFORMED_QUERY,
        MALFORMED_UPDATE,
        UNDO_NOT_POSSIBLE,
        MODEL_UNAVAILABLE,
        MODEL_REQUEST_REJECTED,
        MODEL_NOT_CONFIGURED,
        MODEL_PRICE_UNKNOWN,
        DATABASE_UNAVAILABLE,
        DATABASE_REFUSED,
        DATABASE_ERROR,
        CONTROL_STORE_MISSING,
    }
)
