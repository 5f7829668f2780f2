"""Connecting to Temporal, waiting for it when it is still starting."""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio.client import Client

from orchestration.settings import TemporalSettings

logger = logging.getLogger(__name__)


async def connect(settings: TemporalSettings, wait_seconds: float = 60.0) -> Client:
    """Connect, retrying while the server comes up (honcho starts everything at once)."""
    give_up_at = time.monotonic() + wait_seconds
    while True:
        try:
            return await Client.connect(settings.address, namespace=settings.namespace)
        except Exception as err:
            if time.monotonic() > give_up_at:
                raise
            logger.info(
                "waiting for Temporal",
                extra={"event": "dependency_wait", "address": settings.address, "error": str(err)},
            )
            await asyncio.sleep(1.0)
