"""The records of failed attempts, written behind the attempts, many rows to one INSERT.

A step fails about two attempts in three, so these records are most of a worker's writes. Each
one written on its own cost a pooled connection, a round trip and the SQL built anew: a fifth
of the order worker's busy time under load. They are diagnostics (the status and the board read
retrying steps from them; no decision depends on them), so an attempt does not wait for its
record: the record joins the next write, which takes every record that came in while the one
before it ran. When idle, a record is written at once; under load, one write carries many.
A worker killed meanwhile loses the records not yet written, as it could lose a write in flight.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional

from orchestration.policy import FAILURE_RECORD_TIMEOUT_SECONDS
from orchestration.records import utc_now
from orchestration.tables import Event

logger = logging.getLogger(__name__)

ATTEMPT_FAILED = "attempt_failed"


class FailedAttemptLog:
    """The `attempt_failed` events of one worker process, queued and written in batches."""

    def __init__(self, write_timeout: float = FAILURE_RECORD_TIMEOUT_SECONDS) -> None:
        self._write_timeout = write_timeout
        self._queued: list[Event] = []
        self._queued_written: Optional[asyncio.Future[None]] = None
        """Resolved once the queued records have been written (or given up)."""
        self._in_flight_written: Optional[asyncio.Future[None]] = None
        self._writer: Optional[asyncio.Task[None]] = None

    def add(self, order_id: str, event_key: str, payload: dict) -> None:
        """Queue one failed attempt's record; it is written once, however often it is added."""
        if not self._queued:
            self._queued_written = asyncio.get_running_loop().create_future()
        self._queued.append(
            Event(
                event_key=event_key, order_id=order_id, type=ATTEMPT_FAILED, payload_json=payload, ts=utc_now()
            )
        )
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())

    async def written(self) -> None:
        """Return once every record added so far has been written, or given up on."""
        pending = self._queued_written if self._queued else self._in_flight_written
        if pending is not None:
            await asyncio.shield(pending)

    async def _write_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            done = self._in_flight_written = self._queued_written
            try:
                async with asyncio.timeout(self._write_timeout):
                    await Event.insert(*batch).on_conflict(target=Event.event_key, action="DO NOTHING")
            except Exception as err:  # a lost diagnostic must not stop the next batch
                logger.warning(
                    "could not record failed attempts",
                    extra={
                        "event": "failure_not_recorded",
                        "order_ids": sorted({event.order_id for event in batch}),
                        "records": len(batch),
                        "error": repr(err),
                    },
                )
            finally:
                if done is not None and not done.done():
                    done.set_result(None)
