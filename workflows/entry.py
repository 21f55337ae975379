"""What arrives at a workflow's entry points, decoded without ever failing the workflow task.

Anyone with write access to the namespace can start a workflow or send it a signal, update or
query with any number of arguments, in any encoding, of any size. Temporal decodes a handler's
arguments inside the workflow task, and a decoding error there (a missing argument, one too many,
an unknown encoding) fails that task, which Temporal retries forever. So every entry point of
Airlock's workflows takes `*args: RawValue` (or is a dynamic handler) and decodes here:

- `single(args)` — exactly one argument, decoded; or a `Refusal` saying what is wrong.
- `message(args, type_hint, max_bytes)` — the same, refused first when the argument weighs more
  than `max_bytes`: what a long-lived workflow keeps must not grow with what it is sent.
- `start_args(args, workflow, carried_type)` — a run's start: one argument, or two where the second
  is state carried across continue-as-new; anything else raises a non-retryable
  `ApplicationError` (type `InvalidRunInput`) naming the problem, so the run fails at once.
- `decode(value, type_hint)` — one argument: a `RawValue` is decoded with the workflow's payload
  converter, anything already decoded is validated against the hint.
- `bounded(text)`, `bounded_json(value)` — text derived from untrusted input, cut to a limit.
- `tally(counts, reason)` — counts refusals by the kind of reason, in a bounded number of keys, so
  a flood is summarised rather than kept whole.

Arguments reach a handler either decoded (JSON, null, bytes: what the data converter could read
without a type hint) or as a `RawValue` (what it could not: see `runtime.converter`). Both are
handled here alike. Nothing in this module raises except `start_args`, by design.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from contracts import errors
from contracts.hashing import canonical_json
from contracts.validation import describe_validation_error

# How long a reason, a name or a shown payload may be in anything a run records.
REASON_CHARS = 1000
NAME_CHARS = 200
SHOWN_PAYLOAD_CHARS = 1000
# How many kinds of refusal reason are counted apart; the rest are counted under "other".
REASON_KEYS = 20
REASON_KEY_CHARS = 60


@dataclass(frozen=True)
class Refusal:
    """Why an entry point could not use what it was sent; `reason` is bounded."""

    reason: str


def bounded(text: str, limit: int = REASON_CHARS) -> str:
    """The text, cut to `limit` characters (the cut marked with an ellipsis)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_raw(raw: RawValue) -> str:
    """A payload named by its encoding and size, for messages that must not quote it."""
    encoding = raw.payload.metadata.get("encoding", b"").decode("utf-8", "replace") or "(none)"
    return f"a payload of {len(raw.payload.data)} bytes with encoding {bounded(encoding, 60)!r}"


def bounded_json(value: Any, limit: int = SHOWN_PAYLOAD_CHARS) -> str:
    """A received value as (bounded) text: evidence to keep, never a way to bloat a run.

    A `RawValue` is shown by its encoding, size and the start of its bytes; it is never decoded
    here, so a 2 MB payload costs no more than its first `limit` bytes.
    """
    if isinstance(value, RawValue):
        head = value.payload.data[:limit].decode("utf-8", "replace")
        return bounded(f"<{describe_raw(value)}> {head}", limit)
    if isinstance(value, bytes):
        return bounded(f"<{len(value)} bytes> " + value[:limit].decode("utf-8", "replace"), limit)
    try:
        text = canonical_json(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)[: limit + 1]
    return bounded(text, limit)


def shown_args(args: Sequence[Any], limit: int = SHOWN_PAYLOAD_CHARS) -> str:
    """The arguments of a message as (bounded) text: the one argument as it came, or how many
    there were and the first of them."""
    if len(args) == 1:
        return bounded_json(args[0], limit)
    if not args:
        return "<no argument>"
    return bounded(f"<{len(args)} arguments> " + bounded_json(args[0], limit), limit)


def decode(value: Any, type_hint: Any = Any) -> Any | Refusal:
    """One argument as `type_hint`, or why it cannot be.

    A `RawValue` is decoded with the workflow's payload converter; a value already decoded (the
    data converter read it as JSON, null or bytes) is validated against the hint, unless the hint
    is `Any`. Validation errors come back as a Refusal with a bounded reason.
    """
    if isinstance(value, RawValue):
        try:
            return workflow.payload_converter().from_payload(value.payload, type_hint)
        except Exception as e:
            return Refusal(bounded(f"malformed payload: {describe_raw(value)} could not be read: {e}", REASON_CHARS))
    if type_hint is Any:
        return value
    try:
        if isinstance(type_hint, type) and issubclass(type_hint, BaseModel):
            return type_hint.model_validate(value)  # the model's own validator, built once
        return TypeAdapter(type_hint).validate_python(value)
    except ValidationError as e:
        return Refusal("malformed payload: " + describe_validation_error(e))
    except Exception as e:
        return Refusal(bounded(f"malformed payload: {type(e).__name__}: {e}"))


def single(args: Sequence[Any], type_hint: Any = Any) -> Any | Refusal:
    """Exactly one argument, decoded; no argument, or more than one, is a Refusal."""
    if len(args) != 1:
        return Refusal(f"malformed payload: expected one argument, got {len(args)}")
    return decode(args[0], type_hint)


def weight(value: Any) -> int | None:
    """The bytes of one argument as it travelled (a `RawValue`, bytes) or as JSON; None when it
    cannot be measured."""
    if isinstance(value, RawValue):
        return len(value.payload.data)
    if isinstance(value, bytes):
        return len(value)
    try:
        return len(canonical_json(value).encode())
    except (TypeError, ValueError, RecursionError):
        return None


def message(args: Sequence[Any], type_hint: Any, max_bytes: int) -> Any | Refusal:
    """Exactly one argument of at most `max_bytes`, decoded as `type_hint`; or why not."""
    if len(args) != 1:
        return Refusal(f"malformed payload: expected one argument, got {len(args)}")
    size = weight(args[0])
    if size is None:
        return Refusal("malformed payload: the argument cannot be read as JSON")
    if size > max_bytes:
        return Refusal(f"payload too large: {size} bytes; the limit is {max_bytes}")
    return decode(args[0], type_hint)


# A run's input travels again inside every continue-as-new checkpoint, beside the run's state, and
# all of it must stay under Temporal's 2 MB per payload.
MAX_INPUT_BYTES = 1_400_000


def start_args(
    args: Sequence[Any], workflow_type: str, carried_type: Any = None, max_bytes: int = MAX_INPUT_BYTES
) -> tuple[Any, Any]:
    """A run's start arguments: its input, and (when `carried_type` is given) the state carried
    across continue-as-new, or None. Raises a non-retryable `ApplicationError` of type
    `InvalidRunInput` naming the problem: the run fails at once instead of retrying its first
    workflow task forever. The input is returned as decoded JSON, for the run to validate; an
    input over `max_bytes` (as JSON) is refused before anything reads it."""
    most = 1 if carried_type is None else 2
    if not 1 <= len(args) <= most:
        expected = (
            "one argument (the run input)"
            if most == 1
            else "one argument (the run input), or two from a continue-as-new"
        )
        raise ApplicationError(
            f"invalid run input: {workflow_type} takes {expected}, got {len(args)}",
            type=errors.INVALID_RUN_INPUT,
            non_retryable=True,
        )
    raw = decode(args[0])
    if isinstance(raw, Refusal):
        raise ApplicationError(f"invalid run input: {raw.reason}", type=errors.INVALID_RUN_INPUT, non_retryable=True)
    if isinstance(raw, bytes):
        raise ApplicationError(
            f"invalid run input: {len(raw)} bytes of binary data; expected a JSON object",
            type=errors.INVALID_RUN_INPUT,
            non_retryable=True,
        )
    if len(args) == 1 and (weight := len(canonical_json(raw).encode())) > max_bytes:
        raise ApplicationError(
            f"invalid run input: {weight} bytes; the limit is {max_bytes}",
            type=errors.INVALID_RUN_INPUT,
            non_retryable=True,
        )
    carried = None
    if len(args) == 2 and args[1] is not None:
        carried = decode(args[1], carried_type)
        if isinstance(carried, Refusal):
            raise ApplicationError(
                f"invalid carried state (argument 2): {carried.reason}",
                type=errors.INVALID_RUN_INPUT,
                non_retryable=True,
            )
    return raw, carried


def reason_key(reason: str) -> str:
    """The kind of a refusal: its reason up to the first detail (a colon, a quote, a digit), so
    that refusals differing only in an id or a name are counted together."""
    cut = len(reason)
    for mark in (":", "'", '"', "("):
        at = reason.find(mark)
        if 0 < at < cut:
            cut = at
    return bounded(reason[:cut].strip() or "refused", REASON_KEY_CHARS)


def tally(counts: dict[str, int], reason: str, n: int = 1, keys: int = REASON_KEYS) -> None:
    """Counts `n` refusals under their kind of reason; past `keys` kinds, under "other"."""
    key = reason_key(reason)
    if key not in counts and len(counts) >= keys:
        key = "other"
    counts[key] = counts.get(key, 0) + n
