"""Charges recorded after their order closed, refunded: the sweep that finds them and the
workflow that refunds each one.

An order refunds before it closes, and asks the database for a charge it does not know of
(orchestration/order/workflow.py). One case is beyond the workflow: a worker that stalls,
rather than dies, past the workflow task timeout in the middle of a charge. Temporal hands the
order to another worker, which may cancel or fail it and close it with no charge on record; the
stalled worker then wakes, the provider's answer comes in, and the charge is recorded against a
closed order that no workflow is left to refund. So the order worker looks for such charges
every few seconds and starts a workflow that refunds each one, with the steps' retry policy.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio import workflow
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from orchestration.models import LateCharge, LateChargeRefundInput, PaymentStatus, RefundPaymentInput
    from orchestration.order import business
    from orchestration.order.activities import OrderActivities
    from orchestration.policy import MUST_COMPLETE_TIMEOUT, retry_policy
    from orchestration.records import utc_now
    from orchestration.settings import Settings

logger = logging.getLogger(__name__)

# A late charge comes from a worker that stalled for seconds during a charge, so it is recorded
# seconds after its order closed: every few seconds is soon enough, and a look back of a day
# covers a worker paused far longer while keeping each sweep a small indexed read.
SWEEP_INTERVAL_SECONDS = 5.0
SWEEP_LOOKBACK = timedelta(days=1)
REFUND_REASON = "charged after the order was {order_state}"
"""The refund's reason, as its payment_refunded event records it."""


def refund_workflow_id(order_id: str) -> str:
    return f"order-{order_id}-late-charge-refund"


@workflow.defn
class LateChargeRefundWorkflow:
    """Refund one charge recorded after its order closed."""

    @workflow.run
    async def run(self, input: LateChargeRefundInput) -> PaymentStatus:
        charge = input.charge
        refund = await workflow.execute_local_activity_method(
            OrderActivities.refund_payment,
            RefundPaymentInput(
                charge.order_id,
                charge.payment_id,
                REFUND_REASON.format(order_state=charge.order_state),
            ),
            # The refund must happen however long the provider takes to answer: as the order's
            # own refund, its budget only bounds a database outage.
            schedule_to_close_timeout=MUST_COMPLETE_TIMEOUT,
            retry_policy=retry_policy(input.policy),
        )
        workflow.logger.info(
            "late charge refunded",
            extra={
                "event": "late_charge_refunded",
                "order_id": charge.order_id,
                "step": "refund_payment",
                "attempt": refund.attempt,
                "payment_id": charge.payment_id,
            },
        )
        return PaymentStatus(refund.payment_id, refund.status, refund.amount)


async def refund_late_charges(client: Client, settings: Settings) -> list[LateCharge]:
    """One sweep: start a refund for each late charge on record; returns those started. A
    refund already running (started by an earlier sweep, or by another worker's) is left to
    finish; one that failed is started again."""
    started = []
    for charge in await business.late_charges(utc_now() - SWEEP_LOOKBACK):
        workflow_id = refund_workflow_id(charge.order_id)
        try:
            handle = await client.start_workflow(
                LateChargeRefundWorkflow.run,
                LateChargeRefundInput(charge, settings.order_policy),
                id=workflow_id,
                task_queue=settings.temporal.orders_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        except WorkflowAlreadyStartedError:
            continue
        logger.warning(
            "a charge was recorded after its order closed; refunding it",
            extra={
                "event": "late_charge_found",
                "order_id": charge.order_id,
                "workflow_id": workflow_id,
                "run_id": handle.result_run_id,
                "payment_id": charge.payment_id,
                "order_state": charge.order_state,
            },
        )
        started.append(charge)
    return started


async def sweep_late_charges(client: Client, settings: Settings) -> None:
    """Sweep every SWEEP_INTERVAL_SECONDS until cancelled. A sweep that fails (the database
    or Temporal away) is logged, and the next one tries again."""
    while True:
        try:
            await refund_late_charges(client, settings)
        except Exception as err:  # any failure: the next sweep retries
            logger.warning(
                "late-charge sweep failed; trying again",
                extra={"event": "late_charge_sweep_failed", "error": str(err) or type(err).__name__},
            )
        await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
