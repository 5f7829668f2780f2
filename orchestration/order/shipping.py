"""How an order runs its shipping attempts: a ShippingWorkflow child per attempt, on the
shipping task queue, started again while time remains when the carrier could not be reached.

An address change reaches the running attempt once per version (also one that came while the
attempt was being started), and the attempt's result says which address the carrier got: a
change that came too late is refused then, and the order takes the carrier's address. Mixed
into OrderWorkflow (orchestration/order/workflow.py), whose state it reads.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError, FailureError

with workflow.unsafe.imports_passed_through():
    from orchestration.models import (
        DEADLINE_EXCEEDED,
        FAILED,
        SHIPPING,
        AddressUpdate,
        CancelOrder,
        ShippingInput,
        ShippingResult,
    )
    from orchestration.order.stopped import OrderStopped
    from orchestration.shipping.workflow import ShippingWorkflow
    from orchestration.steps import failure_message, is_deadline, time_left


class OrderShipping:
    """The shipping attempts of OrderWorkflow."""

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
