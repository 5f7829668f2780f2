"""The shipping queue's activities: thin wrappers that run one attempt of a business function
(orchestration/shipping/business.py) through the attempt machinery (orchestration/attempts.py)."""

from __future__ import annotations

from temporalio import activity

from orchestration.attempts import StepActivities
from orchestration.metrics import counted
from orchestration.models import ShippingStepInput, StepResult
from orchestration.shipping import business


class ShippingActivities(StepActivities):
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

    @activity.defn
    @counted
    async def dispatched_on_record(self, input: ShippingStepInput) -> bool:
        return await self._bookkeep(business.dispatched_on_record(input.order_id))

    @activity.defn
    @counted
    async def withdraw_dispatch(self, input: ShippingStepInput) -> str:
        return await self._bookkeep(business.dispatch_withdrawn(input.order_id, input.shipping_attempt))

    def activities(self) -> list:
        return [self.prepare_package, self.dispatch_carrier, self.dispatched_on_record, self.withdraw_dispatch]
