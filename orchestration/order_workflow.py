"""OrderWorkflow: ReceiveOrder -> ValidateOrder -> ManualReview -> ChargePayment ->
ShippingWorkflow (child, own task queue) -> MarkShipped, all inside the order's deadline.

Time budget. The order must be shipped, cancelled or failed `deadline_seconds` after it started.
Forward steps may use the time up to `deadline - compensation_reserve`; each activity gets a
schedule-to-close timeout ending there, so Temporal retries it as often as that time allows. The
reserve is left for refund and close-out, which must run even when the forward steps ran out.

Review. The payment is charged only once the order is approved AND has a shipping address;
until both are there the order is parked (`awaiting_approval`, `awaiting_address`), and review
ending first cancels it, naming what was missing. So money is never taken for an order that
cannot ship.

Operator actions. approve, cancel_order and update_address are each a signal (the assignment's
interface, and `temporal workflow signal`) and an update of the same name (the API's: a
validator refuses what is too late before anything is written, and the answer says what really
happened). Both share one body; a signal that comes too late is recorded as a refusal.

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
from temporalio.exceptions import ApplicationError, ChildWorkflowError, FailureError

# The sandbox re-runs every import that is not passed through for each new workflow
# instance; re-creating these modules' dataclasses took a third of the worker's CPU. They are
# deterministic and free of side effects, so every instance can share them.
with workflow.unsafe.imports_passed_through():
    from orchestration.activities import OrderActivities
    from orchestration.models import (
        APPROVAL,
        APPROVED,
        AWAITING_ADDRESS,
        AWAITING_APPROVAL,
        CANCELLED,
        CHARGED,
        COMPENSATION_STEPS,
        DEADLINE_EXCEEDED,
        DISPATCHED,
        FAILED,
        ORDER_PARKED_ATTRIBUTE,
        ORDER_STEPS,
        PARKED_STATES,
        RECEIVED,
        SHIPPED,
        SHIPPING,
        SHIPPING_ADDRESS,
        STARTED,
        TERMINAL_STATES,
        VALIDATED,
        ActionResult,
        Address,
        AddressApplied,
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
        review_ended_reason,
    )
    from orchestration.progress import (
        STEP_FAILURES,
        StepBook,
        bookkeeping_retry_policy,
        failure_message,
        is_deadline,
        retry_policy,
        time_left,
    )
    from orchestration.shipping_workflow import ShippingWorkflow

# Bookkeeping writes and compensation must happen however long they take; this only bounds a
# database outage. They do not call flaky_call, so they normally take milliseconds.
MUST_COMPLETE_TIMEOUT = timedelta(minutes=10)


ACTION_REFUSED = "ActionRefused"


def refused(message: str) -> ApplicationError:
    """Rejects an update (validator) or fails it (handler) without failing the workflow."""
    return ApplicationError(message, type=ACTION_REFUSED, non_retryable=True)


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
        self._address = input.address
        self._address_version = 0
        self._address_lock = asyncio.Lock()
        self._payment = PaymentStatus(payment_id=input.payment_id, status="pending")
        self._shipping_attempt = 0
        self._shipping: Optional[workflow.ChildWorkflowHandle] = None
        self._shipping_active = False
        """A shipping attempt is being started or runs (`_shipping` is set once it started)."""
        self._forward_lock = asyncio.Lock()
        self._forwarded_version = 0
        """The newest address version the running shipping attempt has been sent."""
        self._applied_version = 0
        """The newest address version the running shipping attempt has acknowledged."""
        self._dispatched = False
        self._dispatched_version = 0
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
                self._input.order_id,
                self._input.payment_id,
                self._input.items,
                self._address,
                self._started_at.isoformat(),
            ),
        )
        self._order_recorded = True
        self._transition(RECEIVED)
        await self._run_step("validate_order", OrderActivities.validate_order, OrderRef(self._input.order_id))
        self._transition(VALIDATED)
        await self._manual_review()

        # A cancel that came with (or after) the approval stops the order before money moves.
        self._stop_if_cancelled()
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

    def _review_passes(self) -> bool:
        return self._approved and self._address is not None

    def _waiting_for(self) -> list[str]:
        return ([] if self._approved else [APPROVAL]) + (
            [] if self._address is not None else [SHIPPING_ADDRESS]
        )

    async def _manual_review(self) -> None:
        """Wait for a person: the approval and, when the order has none, a shipping address."""
        self._book.start("manual_review")
        if not self._review_passes():
            self._transition(AWAITING_ADDRESS if self._approved else AWAITING_APPROVAL)
        review_ends = min(
            workflow.now() + timedelta(seconds=self._input.policy.review_timeout_seconds),
            self._forward_deadline,
        )
        try:
            await workflow.wait_condition(
                lambda: self._review_passes() or self._cancel_reason is not None,
                timeout=max(time_left(review_ends), timedelta(milliseconds=1)),
                timeout_summary="manual review",
            )
        except asyncio.TimeoutError:
            self._review_over = True
            reason = review_ended_reason(self._waiting_for())
            self._book.fail("manual_review", reason, status="timed_out")
            raise OrderStopped(CANCELLED, reason) from None
        self._review_over = True
        if self._cancel_reason is not None:
            self._book.fail("manual_review", self._cancel_reason, status="cancelled")
            self._stop_if_cancelled()
        self._book.complete("manual_review", attempts=1)
        self._transition(APPROVED)

    async def _ship(self) -> ShippingResult:
        self._book.start("ship_order")
        self._transition(SHIPPING)
        while True:
            if time_left(self._forward_deadline) <= timedelta(0):
                self._book.fail("ship_order", DEADLINE_EXCEEDED)
                raise OrderStopped(FAILED, DEADLINE_EXCEEDED)
            assert self._address is not None, "review lets no order without an address through"
            self._shipping_attempt += 1
            failures_before = len(self._dispatch_failures)
            # An address that arrives while the attempt is being started is forwarded once it
            # has started (_forward_address), not lost with the input captured here.
            self._shipping_active = True
            self._forwarded_version = self._applied_version = self._address_version
            try:
                self._shipping = await workflow.start_child_workflow(
                    ShippingWorkflow.run,
                    ShippingInput(
                        order_id=self._input.order_id,
                        parent_workflow_id=workflow.info().workflow_id,
                        shipping_attempt=self._shipping_attempt,
                        address=self._address,
                        policy=self._input.policy,
                        deadline_at=self._forward_deadline.isoformat(),
                        address_version=self._address_version,
                    ),
                    id=f"{workflow.info().workflow_id}-shipping-{self._shipping_attempt}",
                    task_queue=self._input.shipping_task_queue,
                    task_timeout=timedelta(seconds=self._input.policy.workflow_task_timeout_seconds),
                    # The child watches the same deadline itself. This timeout only ends a child
                    # whose worker is gone, early enough to leave time for the refund.
                    execution_timeout=time_left(self._forward_deadline)
                    + timedelta(seconds=self._input.policy.compensation_reserve_seconds / 2),
                )
                if self._cancel_reason is not None:
                    await self._signal_shipping(ShippingWorkflow.cancel_shipping, CancelOrder(self._cancel_reason))
                await self._forward_address()
                result = await self._shipping
            except ChildWorkflowError as err:
                self._shipping, self._shipping_active = None, False
                reason = DEADLINE_EXCEEDED if is_deadline(err) else failure_message(err)
                self._book.fail("ship_order", reason)
                raise OrderStopped(FAILED, reason) from err
            # All set before anything awaits: a waiting address update sees the outcome whole.
            self._shipping, self._shipping_active = None, False
            if result.outcome == "dispatched":
                self._dispatched, self._dispatched_version = True, result.address_version
                await self._reconcile_address(result)
                self._book.complete("ship_order", attempts=self._shipping_attempt)
                return result
            if result.outcome == "cancelled":
                self._book.fail("ship_order", result.reason, status="cancelled")
                self._stop_if_cancelled()
            if result.outcome == "rejected":
                # A business rule refused the dispatch: another attempt would be refused too.
                self._book.fail("ship_order", result.reason)
                raise OrderStopped(FAILED, result.reason)
            # The child asked for another attempt with dispatch_failed; it has been counted.
            await workflow.wait_condition(lambda: len(self._dispatch_failures) > failures_before)
            self._stop_if_cancelled()

    async def _signal_shipping(self, signal, arg: Any) -> bool:
        """Signal the running shipping attempt; False when it has closed meanwhile (its result
        then says what happened). Never raises: a handler must not fail the order."""
        shipping = self._shipping
        if shipping is None:
            return False
        try:
            await shipping.signal(signal, arg)
        except FailureError as err:
            self._book.log(
                "shipping attempt closed before the signal reached it",
                "signal_not_delivered",
                signal=getattr(signal, "__name__", str(signal)),
                error=failure_message(err),
            )
            return False
        return True

    async def _forward_address(self) -> None:
        """Send the running shipping attempt the newest address, once per version."""
        async with self._forward_lock:
            if self._shipping is None or self._forwarded_version >= self._address_version:
                return
            self._forwarded_version = self._address_version
            assert self._address is not None
            await self._signal_shipping(
                ShippingWorkflow.update_address, AddressUpdate(self._address, self._address_version)
            )

    async def _reconcile_address(self, result: ShippingResult) -> None:
        """The address the carrier got is the truth; a change that came too late is refused."""
        if result.address_version < self._address_version:
            await self._record_refusal(
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
        await self._bookkeeping(
            OrderActivities.close_order,
            CloseOrderInput(
                self._input.order_id,
                state,
                reason,
                self._input.payment_id,
                self._input.items,
                self._started_at.isoformat(),
            ),
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
        # A local activity: retried in this worker, one marker in the history per step. No
        # start-to-close timeout (see orchestration/activities.py): the attempt bounds itself.
        handle = workflow.start_local_activity_method(
            activity,
            arg,
            schedule_to_close_timeout=budget,
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
        except STEP_FAILURES as err:
            reason = DEADLINE_EXCEEDED if is_deadline(err) else failure_message(err)
            self._book.fail(name, failure_message(err))
            raise OrderStopped(FAILED, reason) from err
        self._book.complete(name, result.attempt, result.errors)
        return result

    def _stop_if_cancelled(self, applies: bool = True) -> None:
        if applies and self._cancel_reason is not None and not self._closing:
            raise OrderStopped(CANCELLED, self._cancel_reason)

    def _transition(self, state: str, reason: str = "") -> None:
        previous, self._state = self._state, state
        if (previous in PARKED_STATES) != (state in PARKED_STATES):
            workflow.upsert_search_attributes([ORDER_PARKED_ATTRIBUTE.value_set(state in PARKED_STATES)])
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
        await self._bookkeeping(
            OrderActivities.record_event,
            RecordEventInput(
                self._input.order_id,
                f"{what}_refused",
                f"{self._input.order_id}:refused:{self._refusals}",
                {"reason": message},
            ),
        )

    async def _bookkeeping(self, activity, arg: Any) -> None:
        """A write with no outside call (a local activity too): it must happen however long it
        takes, so its budget only bounds a database outage, retried with backoff."""
        await workflow.execute_local_activity_method(
            activity,
            arg,
            schedule_to_close_timeout=MUST_COMPLETE_TIMEOUT,
            retry_policy=bookkeeping_retry_policy(),
        )

    async def _persist_address(self, address: Address, version: int) -> None:
        # Versions are written in order, and only once the order row exists (ReceiveOrder
        # creates it with whatever address was current when it was scheduled).
        async with self._address_lock:
            await workflow.wait_condition(lambda: self._order_recorded or self._closing)
            if not self._order_recorded:
                return
            await self._bookkeeping(
                OrderActivities.record_address, RecordAddressInput(self._input.order_id, address, version)
            )

    # Operator actions. Each refusal check answers why an action is too late (None: it is
    # accepted); validators and signal handlers both use it, so the two paths agree.

    def _too_late(self) -> Optional[str]:
        if self._state in TERMINAL_STATES:
            return f"it is already {self._state}"
        if self._closing:
            return "it is being closed"
        if self._dispatched:
            return "the carrier has already been dispatched"
        return None

    def _approve_refusal(self) -> Optional[str]:
        if self._approved:
            return "it is already approved"
        if too_late := self._too_late():
            return too_late
        if self._cancel_reason is not None:
            return "it is being cancelled"
        if self._review_over:
            return "manual review is over"
        return None

    def _address_refusal(self) -> Optional[str]:
        if too_late := self._too_late():
            return too_late
        if self._cancel_reason is not None:
            return "it is being cancelled"
        return None

    def _approve(self) -> str:
        self._approved = True
        self._book.log("order approved", "approved")
        if self._address is not None:
            return "approved"
        if self._state == AWAITING_APPROVAL:
            self._transition(AWAITING_ADDRESS)
        return "approved; the order waits for its shipping address before it is charged"

    def _request_cancel(self, reason: str) -> bool:
        """Accept a cancel unless it is too late; returns whether it was accepted."""
        if self._too_late():
            return False
        if self._cancel_reason is None:
            self._cancel_reason = reason
            self._book.log("cancel requested", "cancellation", reason=reason)
            if self._shipping is not None:
                asyncio.create_task(
                    self._signal_shipping(ShippingWorkflow.cancel_shipping, CancelOrder(reason))
                )
        return True

    async def _change_address(self, address: Address) -> int:
        """Make `address` the order's address; returns its version. Repeating the current
        address changes nothing (an update and its fallback signal may both arrive)."""
        if address == self._address:
            return self._address_version
        self._address = address
        self._address_version += 1
        version = self._address_version
        self._book.log("address updated", "address_updated", version=version)
        await self._forward_address()
        await self._persist_address(address, version)
        return version

    async def _review_settled(self) -> None:
        """When an action completed the review, wait for the review to end (in this same
        activation), so that the answer shows the state the order moved to."""
        if self._state in PARKED_STATES and self._review_passes():
            await workflow.wait_condition(lambda: self._review_over)

    def _result(self, action: str, message: str) -> ActionResult:
        return ActionResult(
            action=action,
            message=message,
            state=self._state,
            waiting_for=self._waiting_for() if self._state in PARKED_STATES else [],
            allowed_actions=self._allowed_actions(),
            reason=self._reason,
            address=self._address,
        )

    @workflow.signal
    async def approve(self) -> None:
        if self._approved:
            self._book.log("approve repeated; already approved", "duplicate_signal", signal="approve")
            return
        if refusal := self._approve_refusal():
            await self._record_refusal("approve", refusal)
            return
        self._approve()

    @workflow.update(name="approve")
    async def approve_update(self) -> ActionResult:
        message = self._approve()
        await self._review_settled()
        return self._result("approve", message)

    @approve_update.validator
    def _validate_approve(self) -> None:
        if refusal := self._approve_refusal():
            raise refused(refusal)

    @workflow.signal
    async def cancel_order(self, request: CancelOrder) -> None:
        if too_late := self._too_late():
            await self._record_refusal("cancel_order", too_late)
            return
        if self._cancel_reason is not None:
            self._book.log("cancel repeated; already cancelling", "duplicate_signal", signal="cancel_order")
            return
        self._request_cancel(request.reason or CancelOrder().reason)

    @workflow.update(name="cancel_order")
    async def cancel_update(self, request: CancelOrder) -> ActionResult:
        """Answers once the cancel has taken effect: the order is closed and refunded, or the
        carrier was dispatched first (then the update fails with that reason)."""
        self._request_cancel(request.reason or CancelOrder().reason)
        await workflow.wait_condition(lambda: self._state in TERMINAL_STATES or self._dispatched)
        if self._dispatched:
            raise refused("the carrier was dispatched before the cancel took effect")
        if self._state != CANCELLED:
            return self._result(
                "cancel", f"the order ended {self._state} ({self._reason}) before the cancel took effect"
            )
        refunded = self._payment.status == "refunded"
        return self._result("cancel", "cancelled; the payment was refunded" if refunded else "cancelled")

    @cancel_update.validator
    def _validate_cancel(self, request: CancelOrder) -> None:
        if too_late := self._too_late():
            raise refused(too_late)

    @workflow.signal
    async def update_address(self, update: AddressUpdate) -> None:
        if refusal := self._address_refusal():
            await self._record_refusal("update_address", refusal)
            return
        await self._change_address(update.address)

    @workflow.update(name="update_address")
    async def update_address_update(self, update: AddressUpdate) -> ActionResult:
        """While a shipping attempt runs, answers once the attempt has taken the address, or
        has ended (dispatched to the previous address: the update fails with that reason)."""
        version = await self._change_address(update.address)
        if self._shipping_active:
            await workflow.wait_condition(
                lambda: self._applied_version >= version or not self._shipping_active
            )
            if self._dispatched and self._dispatched_version < version:
                raise refused("the carrier had already been dispatched to the previous address")
        await self._review_settled()
        return self._result("update_address", "address updated")

    @update_address_update.validator
    def _validate_update_address(self, update: AddressUpdate) -> None:
        if refusal := self._address_refusal():
            raise refused(refusal)

    @workflow.signal
    def address_applied(self, applied: AddressApplied) -> None:
        """From the shipping attempt: it took this address before calling the carrier."""
        if applied.shipping_attempt == self._shipping_attempt:
            self._applied_version = max(self._applied_version, applied.version)

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
            waiting_for=self._waiting_for() if self._state in PARKED_STATES else [],
        )

    def _allowed_actions(self) -> list[str]:
        if self._address_refusal():
            return []
        actions = [] if self._approve_refusal() else ["approve"]
        return actions + ["cancel", "update_address"]
