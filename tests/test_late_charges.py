"""A charge recorded after its order closed (a worker that stalled past its workflow task timeout
in the middle of a charge) is found by the order worker's sweep and refunded
(orchestration/order/late_charges.py). On real parts: the Temporal dev server, PostgreSQL, the
session's workers, and the real flaky_call for the refund."""

from __future__ import annotations

from datetime import datetime, timedelta

from orchestration.models import CANCELLED, CHARGED, SHIPPED, CancelOrder, LateCharge
from orchestration.order import business
from orchestration.order.late_charges import (
    LateChargeRefundWorkflow,
    refund_late_charges,
    refund_workflow_id,
)
from orchestration.order.workflow import OrderWorkflow
from orchestration.records import utc_now
from orchestration.settings import get_settings
from orchestration.tables import Event, Order, Payment
from tests.test_integration import start_order


async def cancelled_in_review(client, order_id: str) -> None:
    handle = await start_order(client, order_id)
    await handle.signal(OrderWorkflow.cancel_order, CancelOrder("customer called"))
    assert (await handle.result()).state == CANCELLED


async def late_charges_of(order_id: str) -> list[LateCharge]:
    since = utc_now() - timedelta(hours=1)
    return [charge for charge in await business.late_charges(since) if charge.order_id == order_id]


async def test_a_charge_recorded_after_its_order_was_cancelled_is_refunded(workers, order_id):
    """Worker A stalls in ChargePayment after it found the order open and called the provider;
    Temporal gives the order to worker B, which sees an operator's cancel first and closes the
    order with no charge on record. Then A wakes, the provider's answer is in, and A records the
    charge: money taken for a cancelled order, and no workflow left to give it back. Before the
    sweep existed, nothing ever refunded it."""
    payment_id = f"pay-{order_id}"
    await cancelled_in_review(workers, order_id)
    assert await Payment.count().where(Payment.order_id == order_id) == 0
    # What A does once the provider has answered (business.payment_charged after flaky_call).
    assert (await business._insert_payment(order_id, payment_id))["status"] == "charged"
    assert await late_charges_of(order_id) == [LateCharge(order_id, payment_id, CANCELLED)]

    started = await refund_late_charges(workers, get_settings())
    assert LateCharge(order_id, payment_id, CANCELLED) in started
    refund = await workers.get_workflow_handle_for(
        LateChargeRefundWorkflow.run, refund_workflow_id(order_id)
    ).result()

    assert refund.status == "refunded" and refund.amount == 2
    assert await Payment.select(Payment.status).where(Payment.order_id == order_id) == [{"status": "refunded"}]
    [event] = await Event.select(Event.payload_json).where(
        (Event.order_id == order_id) & (Event.type == "payment_refunded")
    ).output(load_json=True)
    assert event["payload_json"]["reason"] == "charged after the order was cancelled"
    assert await Order.select(Order.state).where(Order.id == order_id) == [{"state": CANCELLED}]
    assert await late_charges_of(order_id) == []
    assert order_id not in [charge.order_id for charge in await refund_late_charges(workers, get_settings())]


async def test_only_charges_of_closed_orders_are_late(database, order_id):
    """A shipped order keeps its charge, an order in flight is still the workflow's to settle,
    and a refunded charge is settled: none is a late charge."""
    now = utc_now()
    rows = {
        f"{order_id}-shipped": (SHIPPED, now, "charged"),
        f"{order_id}-open": (CHARGED, None, "charged"),
        f"{order_id}-refunded": (CANCELLED, now, "refunded"),
        f"{order_id}-late": (CANCELLED, now, "charged"),
        f"{order_id}-long-ago": (CANCELLED, now - timedelta(days=2), "charged"),
    }
    for id_, (state, finished_at, payment_status) in rows.items():
        await insert_order_with_payment(id_, state, finished_at, payment_status, now)

    found = [c for c in await business.late_charges(now - timedelta(days=1)) if c.order_id.startswith(order_id)]
    assert found == [LateCharge(f"{order_id}-late", f"pay-{order_id}-late", CANCELLED)]


async def insert_order_with_payment(
    order_id: str, state: str, finished_at: datetime | None, payment_status: str, now: datetime
) -> None:
    await Order.insert(
        Order(id=order_id, state=state, payment_id=f"pay-{order_id}", items_json=[{"sku": "ABC", "qty": 2}],
              created_at=now, updated_at=now, started_at=now, finished_at=finished_at)
    )
    await Payment.insert(
        Payment(payment_id=f"pay-{order_id}", order_id=order_id, status=payment_status, amount=2, created_at=now)
    )
