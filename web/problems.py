"""What can go wrong for the web layer, as exceptions both front ends answer in their own way,
and the translation of Temporal's and PostgreSQL's failures into them."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import AsyncIterator, Optional

import asyncpg
from temporalio.service import RPCError, RPCStatusCode

logger = logging.getLogger(__name__)

# A web request waits this long for one dependency call; beyond that it answers 503 instead of
# keeping the caller (and a server slot) waiting.
CALL_TIMEOUT = timedelta(seconds=5)
# An outage the system rides out by itself (PostgreSQL restarting, a worker coming back) passes
# within seconds, and after a failed connect to Temporal the next attempt waits a pause anyway
# (web/temporal_gateway.py): a caller asking again sooner only adds load.
OUTAGE_RETRY_AFTER_SECONDS = 2


class OrderNotFound(Exception):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"Order {order_id} does not exist.")
        self.order_id = order_id


class OrderConflict(Exception):
    """The request contradicts what exists already (duplicate order or payment id)."""


class ActionNotAllowed(Exception):
    """The order does not accept this operator action in its current state."""


class DependencyUnavailable(Exception):
    """Temporal or PostgreSQL did not answer, or the system is full; the request may be sent
    again after `retry_after_seconds`. The message is a sentence for the person waiting."""

    def __init__(
        self, component: str, message: str, retry_after_seconds: int = OUTAGE_RETRY_AFTER_SECONDS
    ) -> None:
        super().__init__(message)
        self.component = component
        self.retry_after_seconds = retry_after_seconds

    def log(self) -> None:
        """The message is written for the person waiting; what actually failed is for the log."""
        logger.warning(
            "dependency unavailable",
            extra={
                "event": "dependency_unavailable",
                "component": self.component,
                "error": str(self),
                "cause": repr(self.__cause__) if self.__cause__ else None,
            },
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


_TEMPORAL_TIMED_OUT = (
    f"Temporal did not answer within {CALL_TIMEOUT.total_seconds():g} s (a worker may be "
    "restarting, or the system is busy)"
)
# Temporal's failures that pass by themselves, each with the start of a sentence for the person
# waiting; the technical message goes to the log with the error's cause.
_TEMPORAL_OUTAGES = {
    RPCStatusCode.UNAVAILABLE: "Temporal cannot be reached",
    # A query the server held until our deadline because no worker took it ("query timed out
    # before a worker could process it"), or any call cut at our rpc_timeout ("Timeout
    # expired"): what a status query gets while no order worker runs.
    RPCStatusCode.DEADLINE_EXCEEDED: _TEMPORAL_TIMED_OUT,
    RPCStatusCode.CANCELLED: _TEMPORAL_TIMED_OUT,
    # The server shedding queries under load ("consistent query buffer is full").
    RPCStatusCode.RESOURCE_EXHAUSTED: "Temporal is too busy to answer",
    # A query while the workflow's task is failing and being retried, e.g. after a worker died.
    RPCStatusCode.FAILED_PRECONDITION: "The order's workflow cannot answer while it recovers",
}


@asynccontextmanager
async def temporal_call(order_id: Optional[str] = None) -> AsyncIterator[None]:
    """Turn Temporal's RPC failures into the exceptions above."""
    try:
        yield
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND and order_id is not None:
            raise OrderNotFound(order_id) from err
        if (reason := _TEMPORAL_OUTAGES.get(err.status)) is not None:
            raise DependencyUnavailable(
                "temporal", f"{reason}; try again in {OUTAGE_RETRY_AFTER_SECONDS} seconds."
            ) from err
        raise


@asynccontextmanager
async def database_call() -> AsyncIterator[None]:
    """Turn losing PostgreSQL into DependencyUnavailable: refused connections while it is down
    (OSError), "the database system is shutting down / starting up" (OperatorInterventionError),
    and a pooled connection closed under a running query by a restart or pg_terminate_backend
    (ConnectionDoesNotExistError, a PostgresConnectionError; InterfaceError once closed)."""
    try:
        yield
    except (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.OperatorInterventionError,
        asyncpg.exceptions.InternalClientError,
    ) as err:
        raise DependencyUnavailable(
            "database",
            "The database did not answer (it may be restarting); "
            f"try again in {OUTAGE_RETRY_AFTER_SECONDS} seconds.",
        ) from err
