"""The Piccolo engine's connection pool, opened and closed by each process."""

from __future__ import annotations

import asyncio
import logging
import time

from orchestration.settings import DatabaseSettings
from orchestration.tables import Order

logger = logging.getLogger(__name__)


async def open_pool(settings: DatabaseSettings, wait_seconds: float = 60.0) -> None:
    """Open the pool, retrying while PostgreSQL comes up."""
    engine = Order._meta.db
    give_up_at = time.monotonic() + wait_seconds
    while True:
        try:
            await engine.start_connection_pool(min_size=1, max_size=settings.pool_max_size)
            await Order.raw("SELECT 1")
            return
        except Exception as err:
            await engine.close_connection_pool()
            if time.monotonic() > give_up_at:
                raise
            logger.info("waiting for PostgreSQL", extra={"event": "dependency_wait", "error": str(err)})
            await asyncio.sleep(1.0)


async def close_pool() -> None:
    await Order._meta.db.close_connection_pool()
