"""OrderWorkflow: ReceiveOrder -> ValidateOrder -> ManualReview -> ChargePayment ->
ShippingWorkflow (child, own task queue) -> MarkShipped, all inside the order's deadline.

Time budget. The order must be shipped, cancelled or failed `deadline_seconds` after it started.
Forward steps may use the time up to `deadline - compensation_reserve`; each activity gets a
schedule-to-close timeout ending there, so Temporal retries it as often as that time allows. The
reserve is left for refund and close-out, which must run even when the forward steps ran out.

Cancellation. `cancel_order` is accepted until the carrier is dispatched. Steps with nothing to
undo (receive, validate, review, package preparation) are interrupted at once. Steps that move
money or goods (charge, dispatch) are never interrupted: an attempt that completes in the same
instant as a cancel would be lost to the workflow while its effect is real. They settle first,
then the order is compensated. The refund asks the database whether money moved, so it is right
whichever way a charge settled.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Optional

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

# The sandbox re-runs every import that is not passed through for each new workflow
# instance; re-creating these modules' dataclasses took a third of the worker's CPU. They are
# deterministic and free of side effects, so every instance can share them.
with workflow.unsafe.imports_passed_through():
    from orchestration.activities import OrderActivities
    from orchestration.models import (
        AWAITING_APPROVAL,
        CANCELLED,
        CHARGED,
        COMPENSATION_STEPS,
        DEADLINE_EXCEEDED,
        DISPATCHED,
        FAILED,
        ORDER_STEPS,
        RECEIVED,
        REVIEW_TIMED_OUT,
        SHIPPED,
        SHIPPING,
        STARTED,
        TERMINAL_STATES,
        VALIDATED,
        AddressUpdate,
        CancelOrder,
        ChargePaymentInput,
        CloseOrderInput,
        DispatchFailure,
        ErrorRecord,
        OrderInput,
        OrderRef,
        OrderStatus,
        PaymentStatus,
        ReceiveOrderInput,
        RecordAddressInput,
        RecordEventInput,
        RefundPaymentInput,
        ShippingInput,
        ShippingResult,
    )
    from orchestration.progress import StepBook, failure_message, is_deadline, retry_policy, time_left
    from orchestration.shipping_workflow import ShippingWorkflow

# Bookkeeping writes and compensation must happen however long they take; this only bounds a
# database outage. They do not call flaky_call, so they normally take milliseconds.
MUST_COMPLETE_TIMEOUT = timedelta(minutes=10)


class OrderStopped(ApplicationError):
    """Ends the forward path: the order is to be cancelled or failed for `reason`."""

    def __init__(self, state: str, reason: str) -> None:
        super().__init__(reason, type="OrderStopped", non_retryable=True)
        self.state = state
        self.reason = reason


@workflow.defn
class OrderWorkflow:
    @workflow.init
    def __init__(self, input: OrderInput) -> None:
        self._input = input
        policy = input.policy
        self._started_at = workflow.info().start_time
        self._deadline_at = self._started_at + timedelta(seconds=policy.deadline_seconds)
        self._forward_deadline = self._deadline_at - timedelta(
            seconds=policy.compensation_reserve_seconds
        )
        self._state = STARTED
        self._reason = ""
        self._finished_at = None
        self._approved = False
        self._review_over = False
        self._cancel_reason: Optional[str] = None
        self._closing = False
        self._order_recorded = False
        self._charge_started = False
        self._dispatched = False
        self._address = input.address
        self._address_version = 0
        self._address_lock = asyncio.Lock()
        self._payment = PaymentStatus(payment_id=input.payment_id, status="pending")
        self._shipping_attempt = 0
        self._shipping: Optional[workflow.ChildWorkflowHandle] = None
        self._dispatch_failures: list[DispatchFailure] = []
        self._refusals = 0
        self._book = StepBook(ORDER_STEPS + COMPENSATION_STEPS, {"order_id": input.order_id})

    @workflow.run
    async def run(self, input: OrderInput) -> OrderStatus:
        self._book.log(
            "order started", "state_transition", to_state=STARTED, deadline_at=self._deadline_at.isoformat()
        )
        workflow.metric_meter().create_counter("orders_started", "Orders whose workflow started").add(1)
        lifecycle = asyncio.create_task(self._lifecycle())
        while not lifecycle.done():
            try:
                await workflow.wait_condition(lifecycle.done)
            except asyncio.CancelledError:
                # Cancelling the workflow through Temporal means the same as cancel_order, and
                # gets the same compensation; the lifecycle task itself is never torn down.
                self._request_cancel("workflow cancellation requested")
        lifecycle.result()
        await workflow.wait_condition(workflow.all_handlers_finished)
        finished_at = workflow.now()
        self._finished_at = finished_at.isoformat()
        self._count_finished(finished_at)
        return self.status()

    def _count_finished(self, finished_at: datetime) -> None:
        """Publish the outcome on the worker's metrics endpoint. The SDK's workflow meter skips
        replays, so an order is counted once however often its history is replayed."""
        meter = workflow.metric_meter()
        seconds = (finished_at - self._started_at).total_seconds()
        meter.create_counter("orders_finished", "Orders that reached a terminal state").add(
            1, {"state": self._state}
        )
        meter.create_histogram_float(
            "order_duration_seconds", "Start to terminal state of each order", "s"
        ).record(seconds, {"state": self._state})
        if finished_at > self._deadline_at:
            meter.create_counter(
                "order_deadline_missed", "Orders that ended after their deadline"
            ).add(1, {"state": self._state})

    async def _lifecycle(self) -> None:
        try:
            await self._forward()
        except OrderStopped as stop:
            await self._close(stop.state, stop.reason)

    async def _forward(self) -> None:
        await self._run_step(
            "receive_order",
            OrderActivities.receive_order,
            ReceiveOrderInput(
                self._input.order_id, self._input.payment_id, self._input.items, self._address
            ),
        )
        self._order_recorded = True
        self._transition(RECEIVED)
        await self._run_step("validate_order", OrderActivities.validate_order, OrderRef(self._input.order_id))
        self._transition(VALIDATED)
        await self._manual_review()

        self._charge_started = True
        payment = await self._run_step(
            "charge_payment",
            OrderActivities.charge_payment,
            ChargePaymentInput(self._input.order_id, self._input.payment_id),
            interruptible=False,
        )
        self._payment = PaymentStatus(payment.payment_id, payment.status, payment.amount)
        if payment.already_processed:
            self._book.log("payment id already charged; not charging again", "duplicate_payment")
        self._transition(CHARGED)
        self._stop_if_cancelled()

        await self._ship()
        self._dispatched = True
        self._transition(DISPATCHED)
        # The goods have left: recording it must succeed, even after the deadline.
        await self._run_step(
            "mark_shipped",
            OrderActivities.mark_shipped,
            OrderRef(self._input.order_id),
            interruptible=False,
            must_complete=True,
        )
        self._transition(SHIPPED)

    async def _manual_review(self) -> None:
        self._book.start("manual_review")
        self._transition(AWAITING_APPROVAL)
        review_ends = min(
            workflow.now() + timedelta(seconds=self._input.policy.review_timeout_seconds),
            self._forward_deadline,
        )
        try:
            await workflow.wait_condition(
                lambda: self._approved or self._cancel_reason is not None,
                timeout=max(time_left(review_ends), timedelta(milliseconds=1)),
                timeout_summary="manual review",
            )
        except asyncio.TimeoutError:
            self._review_over = True
            self._book.fail("manual_review", REVIEW_TIMED_OUT, status="timed_out")
            raise OrderStopped(CANCELLED, REVIEW_TIMED_OUT) from None
        self._review_over = True
        if not self._approved:
            self._book.fail("manual_review", self._cancel_reason, status="cancelled")
            self._stop_if_cancelled()
        self._book.complete("manual_review", attempts=1)

    async def _ship(self) -> ShippingResult:
        self._book.start("ship_order")
        self._transition(SHIPPING)
        while True:
            if time_left(self._forward_deadline) <= timedelta(0):
                self._book.fail("ship_order", DEADLINE_EXCEEDED)
                raise OrderStopped(FAILED, DEADLINE_EXCEEDED)
            self._shipping_attempt += 1
            failures_before = len(self._dispatch_failures)
            self._shipping = await workflow.start_child_workflow(
                ShippingWorkflow.run,
                ShippingInput(
                    order_id=self._input.order_id,
                    parent_workflow_id=workflow.info().workflow_id,
                    shipping_attempt=self._shipping_attempt,
                    address=self._address,
                    policy=self._input.policy,
                    deadline_at=self._forward_deadline.isoformat(),
                ),
                id=f"{workflow.info().workflow_id}-shipping-{self._shipping_attempt}",
                task_queue=self._input.shipping_task_queue,
                # The child watches the same deadline itself. This timeout only ends a child
                # whose worker is gone, early enough to leave time for the refund.
                execution_timeout=time_left(self._forward_deadline)
                + timedelta(seconds=self._input.policy.compensation_reserve_seconds / 2),
            )
            if self._cancel_reason is not None:
                await self._shipping.signal(ShippingWorkflow.cancel_shipping, CancelOrder(self._cancel_reason))
            try:
                result = await self._shipping
            except ChildWorkflowError as err:
                reason = DEADLINE_EXCEEDED if is_deadline(err) else failure_message(err)
                self._book.fail("ship_order", reason)
                raise OrderStopped(FAILED, reason) from err
            finally:
                self._shipping = None
            if result.outcome == "dispatched":
                await self._reconcile_address(result)
                self._book.complete("ship_order", attempts=self._shipping_attempt)
                return result
            if result.outcome == "cancelled":
                self._book.fail("ship_order", result.reason, status="cancelled")
                self._stop_if_cancelled()
            # The child asked for another attempt with dispatch_failed; it has been counted.
            await workflow.wait_condition(lambda: len(self._dispatch_failures) > failures_before)
            self._stop_if_cancelled()

    async def _reconcile_address(self, result: ShippingResult) -> None:
        """The address the carrier got is the truth; an update that came too late is refused."""
        if result.address != self._address:
            self._book.note_refusal(
                "update_address", "the carrier had already been dispatched to the previous address"
            )
            self._address = result.address
            self._address_version += 1
            await self._persist_address(result.address, self._address_version)

    async def _close(self, state: str, reason: str) -> None:
        self._closing = True
        if self._charge_started:
            refund = await self._run_step(
                "refund_payment",
                OrderActivities.refund_payment,
                RefundPaymentInput(self._input.order_id, self._input.payment_id, reason),
                interruptible=False,
                must_complete=True,
            )
            self._payment = PaymentStatus(refund.payment_id, refund.status, refund.amount)
        self._book.start("close_order")
        await workflow.execute_activity_method(
            OrderActivities.close_order,
            CloseOrderInput(
                self._input.order_id, state, reason, self._input.payment_id, self._input.items
            ),
            start_to_close_timeout=timedelta(seconds=self._input.policy.attempt_backstop_seconds),
            schedule_to_close_timeout=MUST_COMPLETE_TIMEOUT,
            retry_policy=retry_policy(self._input.policy),
        )
        self._book.complete("close_order", attempts=1)
        self._reason = reason
        self._transition(state, reason=reason)

    async def _run_step(
        self,
        name: str,
        activity,
        arg: Any,
        *,
        interruptible: bool = True,
        must_complete: bool = False,
    ) -> Any:
        """Run one activity with the order's retry policy and deadline; see the module doc for
        which steps a cancel may interrupt."""
        self._stop_if_cancelled(interruptible)
        self._book.start(name)
        budget = MUST_COMPLETE_TIMEOUT if must_complete else time_left(self._forward_deadline)
        if budget <= timedelta(0):
            self._book.fail(name, DEADLINE_EXCEEDED)
            raise OrderStopped(FAILED, DEADLINE_EXCEEDED)
        handle = workflow.start_activity_method(
            activity,
            arg,
            schedule_to_close_timeout=budget,
            start_to_close_timeout=timedelta(seconds=self._input.policy.attempt_backstop_seconds),
            retry_policy=retry_policy(self._input.policy),
        )
        if interruptible:
            await workflow.wait_condition(lambda: handle.done() or self._cancel_reason is not None)
            if not handle.done():
                handle.cancel()
                self._book.fail(name, self._cancel_reason, status="cancelled")
                self._stop_if_cancelled()
        try:
            result = await handle
        except ActivityError as err:
            reason = DEADLINE_EXCEEDED if is_deadline(err) else failure_message(err)
            self._book.fail(name, failure_message(err))
            raise OrderStopped(FAILED, reason) from err
        self._book.complete(name, result.attempt, result.errors)
        return result

    def _stop_if_cancelled(self, applies: bool = True) -> None:
        if applies and self._cancel_reason is not None and not self._closing:
            raise OrderStopped(CANCELLED, self._cancel_reason)

    def _request_cancel(self, reason: str) -> bool:
        """Accept a cancel unless it is too late; returns whether it was accepted."""
        if self._state in TERMINAL_STATES or self._closing:
            return False
        if self._dispatched:
            return False
        if self._cancel_reason is None:
            self._cancel_reason = reason
            self._book.log("cancel requested", "cancellation", reason=reason)
            if self._shipping is not None:
                shipping = self._shipping
                asyncio.create_task(shipping.signal(ShippingWorkflow.cancel_shipping, CancelOrder(reason)))
        return True

    def _transition(self, state: str, reason: str = "") -> None:
        previous, self._state = self._state, state
        self._book.log(
            f"order {previous} -> {state}",
            "state_transition",
            from_state=previous,
            to_state=state,
            reason=reason,
        )

    async def _record_refusal(self, what: str, message: str) -> None:
        self._book.note_refusal(what, message)
        self._refusals += 1
        await workflow.execute_activity_method(
            OrderActivities.record_event,
            RecordEventInput(
                self._input.order_id,
                f"{what}_refused",
                f"{self._input.order_id}:refused:{self._refusals}",
                {"reason": message},
            ),
            start_to_close_timeout=timedelta(seconds=self._input.policy.attempt_backstop_seconds),
            schedule_to_close_timeout=MUST_COMPLETE_TIMEOUT,
            retry_policy=retry_policy(self._input.policy),
        )

    def _too_late(self) -> Optional[str]:
        if self._state in TERMINAL_STATES or self._closing:
            return f"the order is already {self._state if self._state in TERMINAL_STATES else 'closing'}"
        if self._dispatched:
            return "the carrier has already been dispatched"
        return None

    @workflow.signal
    async def approve(self) -> None:
        if self._approved:
            self._book.log("approve repeated; already approved", "duplicate_signal", signal="approve")
            return
        if self._review_over or self._too_late():
            await self._record_refusal("approve", self._too_late() or "manual review is over")
            return
        self._approved = True
        self._book.log("order approved", "approved")

    @workflow.signal
    async def cancel_order(self, request: CancelOrder) -> None:
        too_late = self._too_late()
        if too_late:
            await self._record_refusal("cancel_order", too_late)
            return
        if self._cancel_reason is not None:
            self._book.log("cancel repeated; already cancelling", "duplicate_signal", signal="cancel_order")
            return
        self._request_cancel(request.reason or "cancelled by operator")

    @workflow.signal
    async def update_address(self, update: AddressUpdate) -> None:
        too_late = self._too_late()
        if too_late:
            await self._record_refusal("update_address", too_late)
            return
        self._address = update.address
        self._address_version += 1
        self._book.log("address updated", "address_updated", version=self._address_version)
        if self._shipping is not None:
            await self._shipping.signal(ShippingWorkflow.update_address, update)
        await self._persist_address(update.address, self._address_version)

    async def _persist_address(self, address, version: int) -> None:
        # Versions are written in order, and only once the order row exists (ReceiveOrder
        # creates it with whatever address was current when it was scheduled).
        async with self._address_lock:
            await workflow.wait_condition(lambda: self._order_recorded or self._closing)
            if not self._order_recorded:
                return
            await workflow.execute_activity_method(
                OrderActivities.record_address,
                RecordAddressInput(self._input.order_id, address, version),
                start_to_close_timeout=timedelta(seconds=self._input.policy.attempt_backstop_seconds),
                schedule_to_close_timeout=MUST_COMPLETE_TIMEOUT,
                retry_policy=retry_policy(self._input.policy),
            )

    @workflow.signal
    def dispatch_failed(self, failure: DispatchFailure) -> None:
        self._dispatch_failures.append(failure)
        self._book.add_error(
            ErrorRecord(
                step="dispatch_carrier",
                attempt=failure.shipping_attempt,
                message=failure.reason,
                at=workflow.now().isoformat(),
            )
        )
        self._book.log(
            "shipping attempt failed; retrying shipping while the deadline allows",
            "retry",
            step="ship_order",
            attempt=failure.shipping_attempt,
        )

    @workflow.query
    def status(self) -> OrderStatus:
        return OrderStatus(
            order_id=self._input.order_id,
            state=self._state,
            current_step=self._book.current,
            approved=self._approved,
            address=self._address,
            payment=self._payment,
            steps=self._book.listed(),
            errors=self._book.errors,
            shipping_attempts=self._shipping_attempt,
            shipping_workflow_id=self._shipping.id if self._shipping is not None else None,
            started_at=self._started_at.isoformat(),
            deadline_at=self._deadline_at.isoformat(),
            finished_at=self._finished_at,
            reason=self._reason,
            allowed_actions=self._allowed_actions(),
        )

    def _allowed_actions(self) -> list[str]:
        if self._too_late() or self._cancel_reason is not None:
            return []
        actions = [] if self._approved or self._review_over else ["approve"]
        return actions + ["cancel", "update_address"]
