"""The records of failed attempts, written behind the attempts, many rows to one INSERT.

A step fails about two attempts in three, so these records are most of a worker's writes. Each
one written on its own cost a pooled connection, a round trip and the SQL built anew: 15 % of
the order worker's busy time under load (py-spy). They are diagnostics (the status and the
board read retrying steps from them; no decision depends on them), so an attempt does not wait
for its record: the record joins the next write, which takes every record that came in while
the one before it ran. When idle, a record is written at once; under load, one write carries
many.
A worker killed meanwhile loses the records not yet written, as it could lose a write in flight.

A local activity retries in the worker that runs it, so the attempt that finally succeeds finds
its step's earlier failures here, kept in memory, and reads the table only when this process
did not see them all (it started after they happened).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Optional

from orchestration.models import ErrorRecord
from orchestration.policy import FAILURE_RECORD_TIMEOUT_SECONDS
from orchestration.records import utc_now
from orchestration.tables import Event

logger = logging.getLogger(__name__)

ATTEMPT_FAILED = "attempt_failed"
# Steps whose failures are kept in memory; a step that never succeeds leaves its entry behind,
# so the oldest go first. Far more than the steps running at once.
STEPS_REMEMBERED = 10_000


def step_key_of(workflow_id: str, activity_id: str) -> str:
    """What names one run of a step: its events' keys start with it."""
    return f"{workflow_id}:{activity_id}"


class FailedAttemptLog:
    """The `attempt_failed` events of one worker process, queued and written in batches."""

    def __init__(self, write_timeout: float = FAILURE_RECORD_TIMEOUT_SECONDS) -> None:
        self._write_timeout = write_timeout
        self._queued: list[Event] = []
        self._queued_written: Optional[asyncio.Future[None]] = None
        """Resolved once the queued records have been written (or given up)."""
        self._in_flight_written: Optional[asyncio.Future[None]] = None
        self._writer: Optional[asyncio.Task[None]] = None
        self._by_step: OrderedDict[str, list[ErrorRecord]] = OrderedDict()
        """Failed attempts per step (its key, below), in the order they were added."""

    def add(self, order_id: str, workflow_id: str, activity_id: str, step: str, attempt: int, message: str) -> None:
        """Queue the record of one failed attempt of a step (one run of an activity, named by
        its workflow and activity ids); it is written once, however often it is added."""
        if not self._queued:
            self._queued_written = asyncio.get_running_loop().create_future()
        now = utc_now()
        step_key = step_key_of(workflow_id, activity_id)
        payload = {
            "step": step, "attempt": attempt, "error": message, "workflow_id": workflow_id, "activity_id": activity_id,
        }
        self._queued.append(
            Event(event_key=f"{step_key}:{attempt}", order_id=order_id, type=ATTEMPT_FAILED, payload_json=payload, ts=now)
        )
        self._by_step.setdefault(step_key, []).append(ErrorRecord(step, attempt, message, now.isoformat()))
        self._by_step.move_to_end(step_key)
        while len(self._by_step) > STEPS_REMEMBERED:
            self._by_step.popitem(last=False)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())

    def take_earlier_failures(self, step_key: str, attempt: int) -> Optional[list[ErrorRecord]]:
        """The failures of attempts 1 to `attempt - 1` of a step, forgotten once taken; None when
        this process did not see them all."""
        # An attempt re-run after a lost workflow task adds its failure again: the last one counts.
        by_attempt = {failure.attempt: failure for failure in self._by_step.pop(step_key, [])}
        if sorted(by_attempt) != list(range(1, attempt)):
            return None
        return [by_attempt[n] for n in sorted(by_attempt)]

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
