"""The guard the tool activities and `model.decide` put around secrets (see `tools.secrets`).

Around each call of a tool with secrets it opens a sealing scope, and searches what comes back
(errors, diffs, facts, results, compensations) for the clear values the call handled; it seals
what a model proposes at the secret paths of the tool named, before the workflow sees it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from temporalio.exceptions import ApplicationError

from contracts.activity_io import AlreadyExecuted, Executed, Prepared, Rejected
from contracts.model_io import ModelDecision, TranscriptItem
from contracts.models import SECRET_TOKEN_KEY, Compensation, FieldChange
from runtime import sealing
from tools.registry import ToolRegistry
from tools.secrets import Path, seal_at, secret_change, secret_paths

R = TypeVar("R")
# Tokens read back from one conversation to scrub a decision with: bounded, as everything derived
# from what a model wrote is.
MAX_KNOWN_TOKENS = 1000


@dataclass(frozen=True)
class _ToolSecrets:
    args: tuple[Path, ...]
    results: tuple[Path, ...]
    # Field names of the tool's secrets, to catch a diff line a tool wrote about one in clear.
    names: frozenset[str]
    # The compensating tool's secret arguments: a compensation carries them sealed.
    compensation_args: tuple[Path, ...]

    @property
    def any(self) -> bool:
        return bool(self.args or self.results or self.compensation_args)


def _tokens_in(item: TranscriptItem) -> Iterator[dict[str, Any]]:
    """The sealed secrets a turn of the conversation holds (its arguments, its tool result)."""
    values: list[Any] = [item.args or {}]
    if SECRET_TOKEN_KEY in item.content:
        with contextlib.suppress(ValueError):
            values.append(json.loads(item.content))
    while values:
        value = values.pop()
        if sealing.is_token(value):
            yield value
        elif isinstance(value, dict):
            values.extend(value.values())
        elif isinstance(value, list):
            values.extend(value)


def _normal(name: str) -> str:
    return name.strip().lower()


class ToolSecrets:
    """The secret paths of every tool of a registry, and sealing done with the worker's keyring."""

    def __init__(self, registry: ToolRegistry, keyring: sealing.Keyring) -> None:
        self.keyring = keyring
        found: dict[str, _ToolSecrets] = {}
        plain = {t.name: (secret_paths(t.input_model), secret_paths(t.output_model)) for t in registry}
        for tool in registry:
            args, results = plain[tool.name]
            comp = plain.get(tool.compensation_tool or "", ((), ()))[0]
            entry = _ToolSecrets(args, results, frozenset(p[-1] for p in (*args, *results)), comp)
            if entry.any:
                found[tool.name] = entry
        self._tools = found
        # Lookups for sealing proposals forgive case and spaces: a model that misspells the tool's
        # name that way still has its secret sealed before the call is refused as unknown.
        self._by_normal = {_normal(n): e for n, e in found.items()}

    def __contains__(self, tool: object) -> bool:
        return tool in self._tools

    def arg_paths(self, tool: str) -> tuple[Path, ...]:
        entry = self._tools.get(tool) or self._by_normal.get(_normal(tool))
        return entry.args if entry else ()

    def seal_proposals(
        self, workspace: str, decision: ModelDecision, transcript: Sequence[TranscriptItem] = ()
    ) -> ModelDecision:
        """The model's proposals with their secret arguments sealed, and every clear secret the
        run has handled (this decision's, and those sealed in the conversation so far) taken out
        of its answer and its other arguments: what the workflow records and runs from here on
        holds tokens only. A model that knows a secret cannot write it into an email body."""
        known = list(itertools.islice((t for item in transcript for t in _tokens_in(item)), MAX_KNOWN_TOKENS))
        if not known and not any(self.arg_paths(c.tool) for c in decision.calls):
            return decision
        with sealing.sealing(self.keyring, workspace) as sealer:
            for token in known:
                with contextlib.suppress(sealing.SecretError):
                    sealer.unseal(token)
            calls = [
                c.model_copy(update={"args": seal_at(c.args, paths, sealer.seal)})
                if (paths := self.arg_paths(c.tool))
                else c
                for c in decision.calls
            ]
        secrets = sealer.clear_values
        return decision.model_copy(
            update={
                "calls": [c.model_copy(update={"args": sealing.scrub(c.args, secrets)}) for c in calls],
                "answer": sealing.scrub(decision.answer, secrets),
            }
        )

    def call(self, workspace: str, tool: str, run: Callable[[], R]) -> R:
        """Runs one tool call (prepare or execute) in a sealing scope and returns its outcome
        with no clear secret left in it; an exception that quotes one is replaced by one that
        does not. A tool without secrets runs as it is."""
        entry = self._tools.get(tool)
        if entry is None:
            return run()
        with sealing.sealing(self.keyring, workspace) as sealer:
            try:
                outcome = run()
            except Exception as e:
                if not _chain_mentions(e, sealer.clear_values):
                    raise
                raise _scrubbed(e, sealer.clear_values) from None
            redacted: R = self._redact(entry, outcome, sealer)
            return redacted

    def _redact(self, entry: _ToolSecrets, outcome: Any, sealer: sealing.Sealer) -> Any:
        secrets = sealer.clear_values
        if isinstance(outcome, Prepared):
            return outcome.model_copy(
                update={
                    "args": sealing.scrub(seal_at(outcome.args, entry.args, sealer.seal), secrets),
                    "diff": [_redact_change(c, entry.names, secrets) for c in outcome.diff],
                    "facts": sealing.scrub(outcome.facts, secrets),
                }
            )
        if isinstance(outcome, Rejected):
            return outcome.model_copy(update={"error": sealing.scrub_text(outcome.error, secrets)})
        if isinstance(outcome, Executed):
            comp = outcome.compensation
            if comp is not None:
                comp = Compensation(
                    tool=comp.tool,
                    args=sealing.scrub(seal_at(comp.args, entry.compensation_args, sealer.seal), secrets),
                    note=sealing.scrub_text(comp.note, secrets),
                )
            diff = outcome.diff
            return outcome.model_copy(
                update={
                    "result": sealing.scrub(seal_at(outcome.result, entry.results, sealer.seal), secrets),
                    "compensation": comp,
                    "diff": None if diff is None else [_redact_change(c, entry.names, secrets) for c in diff],
                    "facts": None if outcome.facts is None else sealing.scrub(outcome.facts, secrets),
                }
            )
        if isinstance(outcome, AlreadyExecuted):
            # The ledger's copy of a write that committed before a crash: as guarded as the first.
            return outcome.model_copy(
                update={
                    "args": sealing.scrub(seal_at(outcome.args, entry.args, sealer.seal), secrets),
                    "executed": self._redact(entry, outcome.executed, sealer),
                }
            )
        return outcome


def _redact_change(change: FieldChange, names: frozenset[str], secrets: set[str]) -> FieldChange:
    """A diff line about a secret field keeps only that it changed."""
    last = change.field.rsplit(".", 1)[-1]
    if last in names and (change.before, change.after) != (sealing.REDACTED, sealing.CHANGED):
        return secret_change(sealing.scrub_text(change.field, secrets), had_value=change.before is not None)
    return FieldChange(
        field=sealing.scrub_text(change.field, secrets),
        before=sealing.scrub(change.before, secrets),
        after=sealing.scrub(change.after, secrets),
    )


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _chain_mentions(error: BaseException, secrets: set[str]) -> bool:
    return any(sealing.mentions(f"{e!s} {e!r}", secrets) for e in _chain(error))


def _scrubbed(error: BaseException, secrets: set[str]) -> ApplicationError:
    """The same failure, retried the same way, with every clear secret taken out of its text. The
    original chain is dropped: its messages (a database error quotes its parameters) are what
    must not reach the history, the logs or a trace."""
    text = "; ".join(sealing.scrub_text(str(e), secrets) for e in _chain(error))
    if isinstance(error, ApplicationError):
        return ApplicationError(text, type=error.type or type(error).__name__, non_retryable=error.non_retryable)
    return ApplicationError(text, type=type(error).__name__)
