"""What a pydantic validation error says, as one bounded line: the text a run records and shows
the agent when untrusted input does not fit a model."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, problems: int = 10, limit: int = 1000) -> str:
    """One line per problem, each naming the argument: what the agent needs to fix its call.

    Bounded, since the input is untrusted and the text is recorded: the first `problems` problems,
    each location part and message cut short, how many more there were, at most `limit` chars.
    """
    errors = error.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for e in errors[:problems]:
        where = ".".join(_cut(str(p), 40) for p in e["loc"][:8]) or "(arguments)"
        parts.append(f"{where}: {_cut(e['msg'], 200)}")
    more = len(errors) - problems
    return _cut("; ".join(parts) + (f"; and {more} more problem(s)" if more > 0 else ""), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
