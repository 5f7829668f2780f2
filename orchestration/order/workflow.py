"""OrderWorkflow: ReceiveOrder -> ValidateOrder -> ManualReview -> ChargePayment ->
ShippingWorkflow (child, own task queue) -> MarkShipped, all inside the order's deadline.

Time budget (orchestration/policy.py). The order must be shipped, cancelled or failed
`deadline_seconds` after it started. Forward steps may use the time up to `deadline -
compensation_reserve`; each step gets a budget ending there, so Temporal retries it as often as
that time allows. The reserve is left for refund and close-out, which must run even when the
forward steps ran out. The steps are local activities (orchestration/attempts.py).

Review. The payment is charged only once the order is approved AND has a shipping address;
until both are there the order is parked (`awaiting_approval`, `awaiting_address`), and review
ending first cancels it, naming what was missing. So money is never taken for an order that
cannot ship. The operator actions live in orchestration/order/actions.py.

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

# The sandbox (used by the tests) re-runs every import that is not passed through for each new
# workflow instance; re-creating these modules' dataclasses took a third of the worker's CPU.
# They are deterministic and free of side effects, so every instance can share them.
with workflow.unsafe.imports_passed_through():
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
        SHIPPING_ADDRESS,
        STARTED,
        VALIDATED,
        ChargePaymentInput,
        CloseOrderInput,
        DispatchFailure,
        OrderInput,
        OrderRef,
        OrderStatus,
        PaymentStatus,
        ReceiveOrderInput,
        RefundPaymentInput,
        review_ended_reason,
    )
    from orchestration.order.actions import OrderActions
    from orchestration.order.shipping import OrderShipping
    from orchestration.order.stopped import OrderStopped
    from orchestration.order.activities import OrderActivities
    from orchestration.policy import COMMIT_DELAY, MUST_COMPLETE_TIMEOUT, retry_policy
    from orchestration.steps import (
        STEP_FAILURES,
        StepBook,
        bookkeeping,
        failure_message,
        is_deadline,
        time_left,
    )

DURABLE_CLOSE_PATCH = "durable-close"
"""Closing an order first commits the decision to close, then asks the database for a charge
this run never made (markers in the history); histories recorded before it replay without."""


@workflow.defn
class OrderWorkflow(OrderActions, OrderShipping):
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

    async def _close(self, state: str, reason: str) -> None:
        self._closing = True
        # A worker killed in the middle of a workflow task takes that task's local activities
        # out of the history, their effects staying real, and with them the updates the task
        # accepted. The next run starts from the last completed task and may take another path.
        if workflow.patched(DURABLE_CLOSE_PATCH):
            # Make the decision to close durable before acting on it: a cancel accepted in a task
            # that is then lost must not have refunded or closed an order the next run ships.
            await workflow.sleep(COMMIT_DELAY, summary="commit the decision to close")
            if not self._charge_started:
                # This run never charged, but the run before it may have, before a cancel that
                # now comes first: ask the database rather than this run's memory.
                self._charge_started = await bookkeeping(
                    OrderActivities.charged_on_record,
                    ChargePaymentInput(self._input.order_id, self._input.payment_id),
                )
                if self._charge_started:
                    self._book.log(
                        "a charge made in a workflow task lost with its worker is on record; refunding it",
                        "lost_charge_found",
                    )
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
        await bookkeeping(
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
