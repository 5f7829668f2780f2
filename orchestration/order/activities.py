"""The order queue's activities: thin wrappers that run one attempt of a business function
(orchestration/order/business.py) through the attempt machinery (orchestration/attempts.py)."""

from __future__ import annotations

from temporalio import activity

from orchestration.attempts import StepActivities
from orchestration.metrics import counted
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
    StepResult,
)
from orchestration.order import business
from orchestration.records import record_event


class OrderActivities(StepActivities):
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
        return _payment_result(input.payment_id, payment, errors)

    @activity.defn
    @counted
    async def refund_payment(self, input: RefundPaymentInput) -> PaymentResult:
        refund, errors = await self._attempt(
            input.order_id,
            lambda: business.payment_refunded(input.order_id, input.payment_id, input.reason),
        )
        return _payment_result(input.payment_id, refund, errors)

    @activity.defn
    @counted
    async def mark_shipped(self, input: OrderRef) -> StepResult:
        detail, errors = await self._attempt(
            input.order_id, lambda: business.order_shipped(input.order_id)
        )
        return StepResult(attempt=activity.info().attempt, detail=detail, errors=errors)

    @activity.defn
    @counted
    async def record_address(self, input: RecordAddressInput) -> None:
        await self._bookkeep(business.record_address(input.order_id, input.address, input.version))

    @activity.defn
    @counted
    async def close_order(self, input: CloseOrderInput) -> None:
        await self._bookkeep(
            business.close_order(
                input.order_id, input.state, input.reason, input.payment_id, input.items, input.started_at
            )
        )

    @activity.defn
    @counted
    async def charged_on_record(self, input: ChargePaymentInput) -> bool:
        return await self._bookkeep(business.charged_on_record(input.order_id, input.payment_id))

    @activity.defn
    @counted
    async def record_event(self, input: RecordEventInput) -> None:
        await self._bookkeep(
            record_event(input.order_id, input.event_type, input.event_key, input.payload)
        )

    def activities(self) -> list:
        return [
            self.receive_order,
            self.validate_order,
            self.charge_payment,
            self.refund_payment,
            self.charged_on_record,
            self.mark_shipped,
            self.record_address,
            self.close_order,
            self.record_event,
        ]


def _payment_result(payment_id: str, payment: dict, errors: list[ErrorRecord]) -> PaymentResult:
    return PaymentResult(
        payment_id=payment_id,
        status=payment["status"],
        amount=payment["amount"],
        already_processed=payment.get("already_processed", False),
        attempt=activity.info().attempt,
        errors=errors,
    )
