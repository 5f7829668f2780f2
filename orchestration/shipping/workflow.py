"""ShippingWorkflow: one shipping attempt of a paid order, on its own task queue.

PreparePackage, then DispatchCarrier. A dispatch that runs out of its time budget asks the parent
(signal `dispatch_failed`) for another shipping attempt; a dispatch refused by a business rule
ends the attempt as `rejected` instead, since another attempt would be refused too. Once the
carrier call is under way it is never interrupted: a cancel that arrives meanwhile waits for the
call to settle, because only the outcome of that call says whether the goods left. An address
change is taken until then, and acknowledged to the parent (`address_applied`), so that the
operator's answer says whether the carrier got it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Optional

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

# The sandbox re-runs every import that is not passed through for each new workflow
# instance; re-creating these modules' dataclasses took a third of the worker's CPU. They are
# deterministic and free of side effects, so every instance can share them.
with workflow.unsafe.imports_passed_through():
    from orchestration.shipping.activities import ShippingActivities
    from orchestration.models import (
        DISPATCH_STARTED,
        DISPATCH_WITHDRAWN,
        SHIPPING_STEPS,
        AddressApplied,
        AddressUpdate,
        CancelOrder,
        DispatchFailure,
        ShippingInput,
        ShippingResult,
        ShippingStatus,
        ShippingStepInput,
    )
    from orchestration.policy import COMMIT_DELAY, DEADLINE_EXCEEDED_ERROR, retry_policy
    from orchestration.steps import (
        STEP_FAILURES,
        StepBook,
        bookkeeping,
        failure_message,
        is_deadline,
        is_rejection,
        time_left,
    )

CHECK_DISPATCH_ON_CANCEL_PATCH = "check-dispatch-on-cancel"
"""A shipping attempt cancelled before this run dispatched asks the database whether the goods
left all the same (a marker in the history); histories recorded before it replay without."""
WITHDRAW_DISPATCH_PATCH = "withdraw-dispatch-on-cancel"
"""Instead of asking, it claims the order's dispatch decision for the cancel, which a dispatch
started first (even by a stalled worker's stale run) refuses; histories recorded before it take
the branch above."""

# Signals to the parent, by name: the parent's module imports this one.
DISPATCH_FAILED_SIGNAL = "dispatch_failed"
ADDRESS_APPLIED_SIGNAL = "address_applied"
REJECTED = "ShippingRejected"


@workflow.defn
class ShippingWorkflow:
    @workflow.init
    def __init__(self, input: ShippingInput) -> None:
        self._input = input
        self._deadline_at = datetime.fromisoformat(input.deadline_at)
        self._address = input.address
        self._address_version = input.address_version
        self._cancel_reason: Optional[str] = None
        self._dispatching = False
        self._dispatch: Optional[workflow.ActivityHandle] = None
        self._outcome: Optional[str] = None
        self._book = StepBook(
            SHIPPING_STEPS,
            {"order_id": input.order_id, "shipping_attempt": input.shipping_attempt},
        )

    @workflow.run
    async def run(self, input: ShippingInput) -> ShippingResult:
        try:
            result = await self._ship()
        except asyncio.CancelledError:
            # Cancelled through Temporal itself (CLI, or the parent giving up): same as a cancel
            # signal. A dispatch in flight still settles first.
            self._cancel_reason = self._cancel_reason or "shipping workflow cancelled"
            result = await self._ship_after_cancellation()
        self._outcome = result.outcome
        if self._dispatching:
            await self._commit_dispatch()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _commit_dispatch(self) -> None:
        """Make the carrier call's outcome durable before the attempt completes.

        A local activity's result reaches the history as a marker, with the commands of the
        workflow task that ran it. If that task also completes the workflow and a signal (a
        cancel, a new address) arrived meanwhile, Temporal rejects the completion, the marker is
        lost with it, and the replay calls the carrier again, now with the signal applied first:
        the goods would go twice, or to the new address after a refusal. Waiting on a timer
        completes this task with the marker and no completion, so it always stands."""
        await workflow.sleep(COMMIT_DELAY, summary="commit the carrier call")

    async def _ship(self) -> ShippingResult:
        prepare = self._start(
            "prepare_package", ShippingActivities.prepare_package, self._deadline_at - workflow.now()
        )
        await workflow.wait_condition(lambda: prepare.done() or self._cancel_reason is not None)
        if not prepare.done():
            prepare.cancel()
            self._book.fail("prepare_package", self._cancel_reason, status="cancelled")
            return await self._cancelled_unless_dispatched()
        await self._finish("prepare_package", prepare)
        if self._cancel_reason is not None:
            return await self._cancelled_unless_dispatched()
        return await self._dispatch_and_settle()

    async def _dispatch_and_settle(self) -> ShippingResult:
        self._dispatch = self._start("dispatch_carrier", ShippingActivities.dispatch_carrier, self._dispatch_budget())
        self._dispatching = True
        try:
            await asyncio.shield(self._dispatch)
        except STEP_FAILURES:
            pass  # _settle_dispatch reads the outcome, failure included
        return await self._settle_dispatch()

    async def _ship_after_cancellation(self) -> ShippingResult:
        if not self._dispatching:
            return await self._cancelled_unless_dispatched()
        return await self._settle_dispatch()

    async def _settle_dispatch(self) -> ShippingResult:
        try:
            await self._finish("dispatch_carrier", self._dispatch)
        except ApplicationError as err:
            if self._cancel_reason is not None:
                return self._cancelled()
            if err.type == REJECTED:
                reason = f"dispatch refused: {err.message}"
                self._book.log("the carrier dispatch was refused", "dispatch_rejected", error=reason)
                return self._result("rejected", reason)
            reason = f"dispatch failed: {err.message}"
            await workflow.get_external_workflow_handle(self._input.parent_workflow_id).signal(
                DISPATCH_FAILED_SIGNAL, DispatchFailure(self._input.shipping_attempt, reason)
            )
            self._book.log("asked the order for another shipping attempt", "dispatch_failed", error=reason)
            return self._result("dispatch_failed", reason)
        return self._dispatched()

    def _dispatched(self) -> ShippingResult:
        if self._cancel_reason is not None:
            self._book.note_refusal("cancel_order", "the carrier was dispatched before the cancel took effect")
        return self._result("dispatched")

    async def _cancelled_unless_dispatched(self) -> ShippingResult:
        """Cancelled, unless a dispatch was started all the same. This run has not called the
        carrier, but another may have: the run before it, in a workflow task lost with its
        killed worker (a local activity's effect outlives its marker), then a cancel arrived
        and now comes first; or a worker that stalled past its task timeout and, waking, runs
        its stale copy of this attempt on. So the cancel claims the order's dispatch decision
        in the database, and stands only if no dispatch claimed it first."""
        step_input = ShippingStepInput(self._input.order_id, self._input.shipping_attempt, self._address)
        if workflow.patched(WITHDRAW_DISPATCH_PATCH):
            decision = await bookkeeping(ShippingActivities.withdraw_dispatch, step_input)
            if decision == DISPATCH_WITHDRAWN:
                return self._cancelled()
            if decision == DISPATCH_STARTED:
                # The goods may be leaving: see the dispatch through (the carrier is not called
                # again for goods on record) and refuse the cancel if it succeeds.
                self._book.log("a dispatch started elsewhere may be under way; seeing it through", "dispatch_under_way")
                return await self._dispatch_and_settle()
        elif not (
            workflow.patched(CHECK_DISPATCH_ON_CANCEL_PATCH)
            and await bookkeeping(ShippingActivities.dispatched_on_record, step_input)
        ):
            return self._cancelled()
        self._book.log("a dispatch this run did not make is on record; the goods have left", "lost_dispatch_found")
        return self._dispatched()

    def _result(self, outcome: str, reason: str = "") -> ShippingResult:
        return ShippingResult(
            outcome=outcome, address=self._address, reason=reason, address_version=self._address_version
        )

    def _dispatch_budget(self) -> timedelta:
        return min(
            timedelta(seconds=self._input.policy.dispatch_budget_seconds),
            time_left(self._deadline_at),
        )

    def _start(self, step: str, activity, budget: timedelta):
        self._book.start(step)
        if budget <= timedelta(0):
            budget = timedelta(milliseconds=1)
        # A local activity, like the order's steps (see orchestration/activities.py).
        return workflow.start_local_activity_method(
            activity,
            ShippingStepInput(self._input.order_id, self._input.shipping_attempt, self._address),
            schedule_to_close_timeout=budget,
            retry_policy=retry_policy(self._input.policy),
        )

    async def _finish(self, step: str, handle) -> None:
        try:
            result = await handle
        except STEP_FAILURES as err:
            message = failure_message(err)
            self._book.fail(step, message)
            if is_rejection(err):
                raise ApplicationError(message, type=REJECTED, non_retryable=True) from err
            if step == "prepare_package" and is_deadline(err):
                raise ApplicationError(
                    "deadline exceeded while preparing the package", type=DEADLINE_EXCEEDED_ERROR
                ) from err
            raise ApplicationError(message, type="ShippingStepFailed") from err
        self._book.complete(step, result.attempt, result.errors)

    def _cancelled(self) -> ShippingResult:
        self._book.log("shipping cancelled", "cancellation", reason=self._cancel_reason)
        return self._result("cancelled", self._cancel_reason or "")

    @workflow.signal
    def cancel_shipping(self, request: CancelOrder) -> None:
        if self._cancel_reason is None:
            self._cancel_reason = request.reason

    @workflow.signal
    async def update_address(self, update: AddressUpdate) -> None:
        if self._dispatching:
            self._book.note_refusal("update_address", "the carrier dispatch had already started")
            return
        self._address, self._address_version = update.address, update.version
        try:
            await workflow.get_external_workflow_handle(self._input.parent_workflow_id).signal(
                ADDRESS_APPLIED_SIGNAL, AddressApplied(self._input.shipping_attempt, update.version)
            )
        except FailureError as err:
            # The parent waits for this attempt's result, which carries the address too.
            self._book.log("could not acknowledge the address", "signal_not_delivered", error=failure_message(err))

    @workflow.query
    def status(self) -> ShippingStatus:
        return ShippingStatus(
            order_id=self._input.order_id,
            shipping_attempt=self._input.shipping_attempt,
            current_step=self._book.current,
            steps=self._book.listed(),
            errors=self._book.errors,
            outcome=self._outcome,
        )
