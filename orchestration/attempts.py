"""One attempt of a business step in the worker: its deadline, its cut-off and its record.

The workflows run the steps as local activities: each attempt runs in the worker that runs the
workflow, and Temporal's retry policy retries it there, writing one marker per step into the
history instead of an activity task, a timer and several events per attempt (a step fails two
attempts in three). An activity makes one attempt; this module adds what an attempt needs:
- its cut-off: flaky_call can hang for 300 s, so an outside call still hanging after
  `attempt_timeout` is cancelled in the worker (`_cut_off_if_hung`);
- its backstop: a local activity cannot carry a start-to-close timeout here (with one,
  temporalio 1.35's core panics when the activity is retried: "receive half not dropped", seen
  131 times in 300 orders), so the attempt as a whole, database writes included, is bounded
  in the worker too;
- the step's budget, which temporalio 1.35's core does not enforce for a local activity
  (`check_step_budget`);
- the record of each failed attempt (an `attempt_failed` event: the status reads retrying
  steps from them), queued and written behind the attempt (orchestration/failure_log.py),
  and the write of an effect that happened, which always runs to its end
  even when the attempt is cut off meanwhile (`record`).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable, Iterator, Optional, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from orchestration.metrics import ATTEMPT_TIMED_OUT_ERROR, ActivityCounter
from orchestration.models import ErrorRecord
from orchestration.failure_log import ATTEMPT_FAILED, FailedAttemptLog, step_key_of
from orchestration.policy import ATTEMPT_BACKSTOP_SECONDS, BUSINESS_RULE_VIOLATION, DEADLINE_EXCEEDED_ERROR
from orchestration.records import BusinessRuleViolation
from orchestration.tables import Event

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Failed attempts are expected (flaky_call fails two in three) and are logged here as one JSON
# line each; BENIGN stops the SDK from logging a traceback for every one of them.
BENIGN = ApplicationErrorCategory.BENIGN


def check_step_budget() -> None:
    """End the retries once the step's schedule-to-close budget has run out.

    temporalio 1.35's core does not enforce a local activity's schedule-to-close timeout: it
    retried a failing one for minutes past a 2-s budget. The budget is the activity's own
    (scheduled time + schedule-to-close, the same in every attempt), so the attempt that starts
    past it fails for good, as Temporal would have failed the step."""
    info = activity.info()
    if info.schedule_to_close_timeout and datetime.now(timezone.utc) >= (
        info.scheduled_time + info.schedule_to_close_timeout
    ):
        raise ApplicationError(
            f"the step's {info.schedule_to_close_timeout.total_seconds():g} s budget ran out "
            f"after {info.attempt - 1} attempts",
            type=DEADLINE_EXCEEDED_ERROR,
            non_retryable=True,
        )


class HungCallCutOff(Exception):
    """The outside call hung past the attempt's cut-off and was cancelled."""


@dataclass
class AttemptTracker:
    """What an attempt's calls have done so far, for its cut-off (see activities.py)."""

    outside_call_started_at: Optional[float] = None
    """When the outside call (flaky_call) began, on the event loop's clock; None before."""
    writes: list[asyncio.Task] = field(default_factory=list)
    """The record writes started after the outside call returned."""


_tracker: ContextVar[Optional[AttemptTracker]] = ContextVar("attempt_tracker", default=None)


@contextmanager
def tracking_attempt() -> Iterator[AttemptTracker]:
    """Follow the calls started inside this block (in this task): their outside call, and the
    writes that record it."""
    tracker = AttemptTracker()
    token = _tracker.set(tracker)
    try:
        yield tracker
    finally:
        _tracker.reset(token)


def outside_call_starts() -> None:
    """Mark the outside call's start: the attempt's cut-off counts from here, so reading the
    record first (the payment checks) never counts against it."""
    if (tracker := _tracker.get()) is not None:
        tracker.outside_call_started_at = asyncio.get_running_loop().time()


def _log_unobserved_failure(write: asyncio.Task) -> None:
    if not write.cancelled() and write.exception() is not None:
        logger.warning(
            "database write failed after its attempt was cancelled",
            extra={"event": "write_failed", "error": repr(write.exception())},
        )


async def record(write: Awaitable[T]) -> T:
    """Run the database write that records an outside effect to its end, even when the attempt
    is cancelled meanwhile.

    Once flaky_call has returned, the effect is real and must be recorded: the activity's cut-off
    is for a hung outside call, so it waits for this write (see `tracking_attempt`) instead of
    abandoning it. Shielding also keeps a cancellation from tearing a transaction halfway
    (during BEGIN, COMMIT or ROLLBACK), where Piccolo would never return the connection to the
    pool; every write is idempotent, so a retry after a lost result finds it done."""
    task = asyncio.ensure_future(write)
    task.add_done_callback(_log_unobserved_failure)
    if (tracker := _tracker.get()) is not None:
        tracker.writes.append(task)
    return await asyncio.shield(task)


class StepActivities:
    """The attempt machinery both queues' activities share; one instance per worker process."""

    def __init__(
        self, attempt_timeout: float, counter: ActivityCounter | None = None, *, backstop: float = ATTEMPT_BACKSTOP_SECONDS
    ) -> None:
        self.attempt_timeout = attempt_timeout
        self.backstop = backstop
        self.counter = counter or ActivityCounter()
        self.failure_log = FailedAttemptLog()

    async def _attempt(self, order_id: str, call: Callable[[], Awaitable[T]]) -> tuple[T, list[ErrorRecord]]:
        """Run one attempt within its deadline; returns the result and earlier attempts' errors."""
        check_step_budget()
        try:
            async with asyncio.timeout(self.backstop):
                return await self._bounded_attempt(order_id, call)
        except TimeoutError:
            # A database that stopped answering; the write, if one started, finishes on its own.
            message = f"attempt exceeded its {self.backstop:g} s backstop"
            activity.logger.warning(
                "activity attempt failed",
                extra={"event": "attempt_timed_out", "order_id": order_id, "error": message, "next": "retry"},
            )
            raise ApplicationError(message, type=ATTEMPT_TIMED_OUT_ERROR, category=BENIGN) from None

    async def _bounded_attempt(
        self, order_id: str, call: Callable[[], Awaitable[T]]
    ) -> tuple[T, list[ErrorRecord]]:
        info = activity.info()
        try:
            result = await self._cut_off_if_hung(call)
        except HungCallCutOff:
            message = f"attempt timed out after {self.attempt_timeout:g}s"
            self._record_failure(order_id, message, "timeout")
            raise ApplicationError(message, type=ATTEMPT_TIMED_OUT_ERROR, category=BENIGN) from None
        except BusinessRuleViolation as err:
            self._record_failure(order_id, str(err), "rejected")
            raise ApplicationError(str(err), type=BUSINESS_RULE_VIOLATION, non_retryable=True) from err
        except Exception as err:
            message = f"{type(err).__name__}: {err}"
            self._record_failure(order_id, message, "error")
            raise ApplicationError(message, type=type(err).__name__, category=BENIGN) from err
        # No log line here: the workflow logs the step's completion with its attempt.
        errors = await self._earlier_failures(order_id) if info.attempt > 1 else []
        return result, errors

    async def _cut_off_if_hung(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run the call, ending it once the outside call has hung for `attempt_timeout`.

        flaky_call either returns or raises at once, or hangs for 300 s. The cut-off counts
        from the outside call's start (a record read before it is bounded by the backstop
        only). Once the outside call has returned, its effect is real and the call goes on to
        write the record of it: such a call is let finish rather than abandoned, so the cut-off
        only ever ends a hung outside call."""
        loop = asyncio.get_running_loop()
        with tracking_attempt() as tracker:
            attempt = asyncio.ensure_future(call())
        try:
            while not attempt.done():
                started = tracker.outside_call_started_at
                if tracker.writes or started is None:
                    # Recording the effect, or still reading before the outside call.
                    await asyncio.wait({attempt}, timeout=self.attempt_timeout)
                    continue
                remaining = started + self.attempt_timeout - loop.time()
                if remaining <= 0:
                    attempt.cancel()
                    await asyncio.wait({attempt})
                    raise HungCallCutOff
                await asyncio.wait({attempt}, timeout=remaining)
            return await attempt
        finally:
            # A no-op once it is done; ends a hung call when Temporal cancels this activity.
            attempt.cancel()

    def _record_failure(self, order_id: str, message: str, kind: str) -> None:
        info = activity.info()
        will_retry = kind != "rejected"
        activity.logger.warning(
            "activity attempt failed",
            extra={
                "event": "attempt_timed_out" if kind == "timeout" else "attempt_failed",
                "order_id": order_id,
                "error": message,
                "next": "retry" if will_retry else "give up",
            },
        )
        self.failure_log.add(
            order_id, info.workflow_id, info.activity_id, info.activity_type, info.attempt, message
        )

    async def _earlier_failures(self, order_id: str) -> list[ErrorRecord]:
        info = activity.info()
        step_key = step_key_of(info.workflow_id, info.activity_id)
        known = self.failure_log.take_earlier_failures(step_key, info.attempt)
        if known is not None:
            return known
        # Some ran in another process (this one started since): read them, this process's own
        # records written first.
        await self.failure_log.written()
        rows = (
            await Event.select(Event.payload_json, Event.ts)
            .where(
                (Event.order_id == order_id)
                & (Event.type == ATTEMPT_FAILED)
                & Event.event_key.like(f"{step_key}:%")
            )
            .order_by(Event.id)
            .output(load_json=True)
        )
        return [
            ErrorRecord(
                step=info.activity_type,
                attempt=row["payload_json"]["attempt"],
                message=row["payload_json"]["error"],
                at=row["ts"].isoformat(),
            )
            for row in rows
        ]

    async def _bookkeep(self, write: Awaitable[T]) -> T:
        """A write with no outside call (bookkeeping), bounded like an attempt."""
        check_step_budget()
        async with asyncio.timeout(self.backstop):
            return await write
