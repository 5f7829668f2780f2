"""The Piccolo engine's connection pool, opened and closed by each process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import AsyncIterator

import asyncpg

from orchestration.settings import DatabaseSettings
from orchestration.tables import Order

logger = logging.getLogger(__name__)


class PooledConnection(asyncpg.Connection):
    """A connection the pool takes back without asyncpg's reset query.

    On every release asyncpg resets the session (advisory locks, cursors, LISTEN, SET), which is
    one more round trip per query here: 6 % of the order worker's busy time under load. This
    code keeps no session state (no LISTEN, locks, cursors or SET), and an open transaction is
    still rolled back on release, as asyncpg always does."""

    def get_reset_query(self) -> str:
        return ""


async def open_pool(settings: DatabaseSettings, wait_seconds: float = 60.0) -> None:
    """Open the pool, retrying while PostgreSQL comes up."""
    engine = Order._meta.db
    give_up_at = time.monotonic() + wait_seconds
    while True:
        try:
            await engine.start_connection_pool(
                min_size=1, max_size=settings.pool_max_size, connection_class=PooledConnection
            )
            await Order.raw("SELECT 1")
            return
        except Exception as err:
            await engine.close_connection_pool()
            if time.monotonic() > give_up_at:
                raise
            logger.info("waiting for PostgreSQL", extra={"event": "dependency_wait", "error": str(err)})
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def transaction() -> AsyncIterator[None]:
    """Piccolo's transaction, with its connection always given back to the pool.

    When PostgreSQL goes away under a transaction (a restart), Piccolo's BEGIN or ROLLBACK
    raises before Piccolo releases the connection, so the pool loses that slot for good: one
    restart under load cost 8 of 20 slots, and a few restarts leave a worker without any."""
    engine = Order._meta.db
    piccolo_transaction = engine.transaction()
    try:
        async with piccolo_transaction:
            yield
    finally:
        connection = getattr(piccolo_transaction, "connection", None)  # unset if never acquired
        if connection is not None and engine.pool is not None:
            # A no-op when Piccolo released it; a broken connection is closed and its slot freed.
            with contextlib.suppress(Exception):
                await engine.pool.release(connection)
        # Piccolo also skips this after a failed ROLLBACK; later queries of this task would
        # otherwise run on the released connection.
        if engine.current_transaction.get() is piccolo_transaction:
            engine.current_transaction.reset(piccolo_transaction.context)


CLOSE_WAIT_SECONDS = 10.0


def connections_in_use() -> int:
    """Pooled connections currently lent out (0 when the process is idle)."""
    pool = Order._meta.db.pool
    return 0 if pool is None else pool.get_size() - pool.get_idle_size()


async def close_pool(wait_seconds: float = CLOSE_WAIT_SECONDS) -> None:
    """Close the pool, waiting a bounded time for lent connections to come back.

    asyncpg's close() waits for every connection to be released, forever; a process must still
    stop when one never is, so after `wait_seconds` the rest are terminated."""
    engine = Order._meta.db
    pool = engine.pool
    if pool is None:
        return
    try:
        await asyncio.wait_for(pool.close(), wait_seconds)
    except TimeoutError:
        logger.warning(
            "connections still in use at shutdown; terminating them",
            extra={"event": "pool_terminated", "connections_in_use": connections_in_use()},
        )
        pool.terminate()
    engine.pool = None
