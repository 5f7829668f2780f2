"""The order's operator actions and what they touch: approve, cancel_order, update_address.

Each is a signal (the assignment's interface, and `temporal workflow signal`) and an update of
the same name (the API's: a validator refuses what is too late before anything is written, and
the answer says what really happened). Both share one body and one refusal check, so the two
paths agree; a signal that comes too late is recorded as a refusal. An address change reaches a
running shipping attempt, which acknowledges it (`address_applied`) unless the carrier call has
begun. Mixed into OrderWorkflow (orchestration/order/workflow.py), whose state it reads.
"""

from __future__ import annotations

import asyncio
from typing import Optional

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from orchestration.models import (
        AWAITING_ADDRESS,
        AWAITING_APPROVAL,
        CANCELLED,
        PARKED_STATES,
        TERMINAL_STATES,
        ActionResult,
        Address,
        AddressApplied,
        AddressUpdate,
        CancelOrder,
        DispatchFailure,
        ErrorRecord,
        RecordAddressInput,
        RecordEventInput,
    )
    from orchestration.order.activities import OrderActivities
    from orchestration.policy import COMMIT_DELAY
    from orchestration.steps import bookkeeping
    from orchestration.shipping.workflow import ShippingWorkflow

DURABLE_ADDRESS_PATCH = "durable-address"
"""A new address is recorded in the database only after the task that took it has completed (a
marker in the history); histories recorded before it replay without."""

ACTION_REFUSED = "ActionRefused"



def refused(message: str) -> ApplicationError:
    """Rejects an update (validator) or fails it (handler) without failing the workflow."""
    return ApplicationError(message, type=ACTION_REFUSED, non_retryable=True)


class OrderActions:
    """Operator actions of OrderWorkflow. Each refusal check answers why an action is too late
    (None: it is accepted); validators and signal handlers both use it."""

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

    async def _persist_address(self, address: Address, version: int) -> None:
        # Versions are written in order, and only once the order row exists (ReceiveOrder
        # creates it with whatever address was current when it was scheduled).
        async with self._address_lock:
            await workflow.wait_condition(lambda: self._order_recorded or self._closing)
            if not self._order_recorded:
                return
            if workflow.patched(DURABLE_ADDRESS_PATCH):
                # The update that brought the address is in the history only once this task
                # completes; a worker killed before that loses the update, so its record waits.
                await workflow.sleep(COMMIT_DELAY, summary="commit the new address")
            await bookkeeping(
                OrderActivities.record_address, RecordAddressInput(self._input.order_id, address, version)
            )

    async def _record_refusal(self, what: str, message: str) -> None:
        self._book.note_refusal(what, message)
        self._refusals += 1
        await bookkeeping(
            OrderActivities.record_event,
            RecordEventInput(
                self._input.order_id,
                f"{what}_refused",
                f"{self._input.order_id}:refused:{self._refusals}",
                {"reason": message},
            ),
        )

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

    async def _refused_signal(self, what: str, refusal: Optional[str]) -> bool:
        """Record a signal that came too late (there is no caller to answer); True if it did."""
        if refusal:
            await self._record_refusal(what, refusal)
        return bool(refusal)

    @workflow.signal
    async def approve(self) -> None:
        if self._approved:
            self._book.log("approve repeated; already approved", "duplicate_signal", signal="approve")
        elif not await self._refused_signal("approve", self._approve_refusal()):
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
        if await self._refused_signal("cancel_order", self._too_late()):
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
        if not await self._refused_signal("update_address", self._address_refusal()):
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

    def _allowed_actions(self) -> list[str]:
        if self._address_refusal():
            return []
        actions = [] if self._approve_refusal() else ["approve"]
        return actions + ["cancel", "update_address"]
