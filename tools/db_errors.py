"""Database errors, classified once where a tool's activity meets the database.

A driver's error text carries the SQL and its parameters (the arguments an agent wrote, values
from the rows); none of it may reach a report, a history or a log. What crosses the boundary is
one line naming the tool and the kind of failure, as an `ApplicationError` whose `type` says
whether Temporal's retry policy should try again:

    DatabaseUnavailable   retryable: connection lost, lock or statement timeout, deadlock,
                          serialization failure, pool exhausted
    DatabaseRefused       not retryable: the database refused a value or a constraint
                          (the schemas of the tools' inputs should have refused it first)
    DatabaseError         not retryable: anything else the driver raised (a missing table, ...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from temporalio.exceptions import ApplicationError

from contracts import errors


def classify(tool: str, error: SQLAlchemyError) -> ApplicationError:
    if isinstance(error, OperationalError | PoolTimeout) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    ):
        return ApplicationError(
            f"{tool}: the database is unavailable ({type(error).__name__})", type=errors.DATABASE_UNAVAILABLE
        )
    if isinstance(error, DataError | IntegrityError):
        return ApplicationError(
            f"{tool}: the database refused a value ({type(error).__name__})",
            type=errors.DATABASE_REFUSED,
            non_retryable=True,
        )
    return ApplicationError(
        f"{tool}: the database failed the call ({type(error).__name__})", type=errors.DATABASE_ERROR, non_retryable=True
    )


@contextlib.contextmanager
def database_errors(tool: str) -> Iterator[None]:
    """Turns a driver's error into its one-line classification, without the original attached."""
    try:
        yield
    except SQLAlchemyError as e:
        # `from None`: the original (SQL, parameters) is not sent as the failure's cause either.
        raise classify(tool, e) from None
