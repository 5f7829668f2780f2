"""Temporal activities: thin wrappers around the business functions.

The workflows run them as local activities: each attempt runs in the worker that runs the
workflow, and Temporal's retry policy retries it there, writing one marker per step into the
history instead of an activity task, a timer and several events per attempt (a step fails two
attempts in three). An activity makes one attempt; what it adds is the attempt's own deadline.
flaky_call can hang for 300 s, so a hung outside call is cut off inside the worker after
`attempt_timeout` seconds. A local activity cannot carry a start-to-close timeout here (with
one, temporalio 1.35's core panics when the activity is retried: "receive half not dropped",
seen 131 times in 300 orders), so the attempt as a whole, database writes included, is bounded
by `backstop` in the worker too. An outside call that returned is never cut off while its record
is being written (see `_cut_off_if_hung`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Awaitable, Callable, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from orchestration import business
from orchestration.metrics import ATTEMPT_TIMED_OUT_ERROR, ActivityCounter, counted
from orchestration.models import (
    ChargePaymentInput,
    CloseOrderInput,
    ErrorRecord,
    OrderRef,
    PaymentResult,
    ReceiveOrderInput,
    RecordAddressInput,
    RecordEventInput,
    RefundPaymentInput,
    ShippingStepInput,
    StepResult,
)
from orchestration.progress import BUSINESS_RULE_VIOLATION, DEADLINE_EXCEEDED_ERROR
from orchestration.tables import Event

T = TypeVar("T")

# Failed attempts are expected (flaky_call fails two in three) and are logged here as one JSON
# line each; BENIGN stops the SDK from logging a traceback for every one of them.
BENIGN = ApplicationErrorCategory.BENIGN

ATTEMPT_FAILED = "attempt_failed"
# Recording a failed attempt is diagnostics; it must never stretch the attempt by much.
FAILURE_RECORD_TIMEOUT_SECONDS = 1.0


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


class OrderActivities:
    """Activities of both task queues; one instance per worker process."""

    def __init__(
        self, attempt_timeout: float, counter: ActivityCounter | None = None, *, backstop: float = 2.0
    ) -> None:
        self.attempt_timeout = attempt_timeout
        self.backstop = backstop
        self.counter = counter or ActivityCounter()

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
            await self._record_failure(order_id, message, "timeout")
            raise ApplicationError(message, type=ATTEMPT_TIMED_OUT_ERROR, category=BENIGN) from None
        except business.BusinessRuleViolation as err:
            await self._record_failure(order_id, str(err), "rejected")
            raise ApplicationError(str(err), type=BUSINESS_RULE_VIOLATION, non_retryable=True) from err
        except Exception as err:
            message = f"{type(err).__name__}: {err}"
            await self._record_failure(order_id, message, "error")
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
        with business.tracking_attempt() as tracker:
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

    async def _record_failure(self, order_id: str, message: str, kind: str) -> None:
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
        try:
            async with asyncio.timeout(FAILURE_RECORD_TIMEOUT_SECONDS):
                await business.record_event(
                    order_id,
                    ATTEMPT_FAILED,
                    f"{info.workflow_id}:{info.activity_id}:{info.attempt}",
                    {
                        "step": info.activity_type,
                        "attempt": info.attempt,
                        "error": message,
                        "workflow_id": info.workflow_id,
                        "activity_id": info.activity_id,
                    },
                )
        except Exception as err:  # the attempt's own error matters more than its record
            activity.logger.warning(
                "could not record failed attempt",
                extra={"event": "failure_not_recorded", "order_id": order_id, "error": repr(err)},
            )

    async def _earlier_failures(self, order_id: str) -> list[ErrorRecord]:
        info = activity.info()
        rows = (
            await Event.select(Event.payload_json, Event.ts)
            .where(
                (Event.order_id == order_id)
                & (Event.type == ATTEMPT_FAILED)
                & Event.event_key.like(f"{info.workflow_id}:{info.activity_id}:%")
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

    # Order queue.

    @activity.defn
    @counted
    async def receive_order(self, input: ReceiveOrderInput) -> StepResult:
        _, errors = await self._attempt(
            input.order_id,
            lambda: business.order_received(
                input.order_id, input.payment_id, input.items, input.address, input.started_at
            ),
        )
        return StepResult(attempt=activity.info().attempt, errors=errors)

    @activity.defn
    @counted
    async def validate_order(self, input: OrderRef) -> StepResult:
        _, errors = await self._attempt(
            input.order_id, lambda: business.order_validated(input.order_id)
        )
        return StepResult(attempt=activity.info().attempt, errors=errors)

    @activity.defn
    @counted
    async def charge_payment(self, input: ChargePaymentInput) -> PaymentResult:
        payment, errors = await self._attempt(
            input.order_id, lambda: business.payment_charged(input.order_id, input.payment_id)
        )
        return PaymentResult(
            payment_id=input.payment_id,
            status=payment["status"],
            amount=payment["amount"],
            already_processed=payment["already_processed"],
            attempt=activity.info().attempt,
            errors=errors,
        )

    @activity.defn
    @counted
    async def refund_payment(self, input: RefundPaymentInput) -> PaymentResult:
        refund, errors = await self._attempt(
            input.order_id,
            lambda: business.payment_refunded(input.order_id, input.payment_id, input.reason),
        )
        return PaymentResult(
            payment_id=input.payment_id,
            status=refund["status"],
            amount=refund["amount"],
            attempt=activity.info().attempt,
            errors=errors,
        )

    @activity.defn
    @counted
    async def mark_shipped(self, input: OrderRef) -> StepResult:
        detail, errors = await self._attempt(
            input.order_id, lambda: business.order_shipped(input.order_id)
        )
        return StepResult(attempt=activity.info().attempt, detail=detail, errors=errors)

    # Bookkeeping: writes with no outside call, bounded like an attempt.

    @activity.defn
    @counted
    async def record_address(self, input: RecordAddressInput) -> None:
        check_step_budget()
        async with asyncio.timeout(self.backstop):
            await business.record_address(input.order_id, input.address, input.version)

    @activity.defn
    @counted
    async def close_order(self, input: CloseOrderInput) -> None:
        check_step_budget()
        async with asyncio.timeout(self.backstop):
            await business.close_order(
                input.order_id, input.state, input.reason, input.payment_id, input.items, input.started_at
            )

    @activity.defn
    @counted
    async def record_event(self, input: RecordEventInput) -> None:
        check_step_budget()
        async with asyncio.timeout(self.backstop):
            await business.record_event(
                input.order_id, input.event_type, input.event_key, input.payload
            )

    # Shipping queue.

    @activity.defn
    @counted
    async def prepare_package(self, input: ShippingStepInput) -> StepResult:
        detail, errors = await self._attempt(
            input.order_id,
            lambda: business.package_prepared(input.order_id, input.shipping_attempt),
        )
        return StepResult(attempt=activity.info().attempt, detail=detail, errors=errors)

    @activity.defn
    @counted
    async def dispatch_carrier(self, input: ShippingStepInput) -> StepResult:
        detail, errors = await self._attempt(
            input.order_id,
            lambda: business.carrier_dispatched(
                input.order_id, input.shipping_attempt, input.address
            ),
        )
        return StepResult(attempt=activity.info().attempt, detail=detail, errors=errors)

    def order_queue_activities(self) -> list:
        return [
            self.receive_order,
            self.validate_order,
            self.charge_payment,
            self.refund_payment,
            self.mark_shipped,
            self.record_address,
            self.close_order,
            self.record_event,
        ]

    def shipping_queue_activities(self) -> list:
        return [self.prepare_package, self.dispatch_carrier]
