"""The order's business functions: each calls the unreliable outside world (flaky_call), then
records what happened in PostgreSQL.

Every write is idempotent, because Temporal retries a step whenever an attempt fails or times
out, including attempts whose write committed just before the worker lost track of it (see
orchestration/records.py). The write happens only after flaky_call returned, i.e. after the
side effect succeeded, and it always runs to its end (orchestration/attempts.py `record`).
- Orders are inserted with ON CONFLICT DO NOTHING and only move forward.
- A payment is keyed by the caller's payment_id (INSERT ... ON CONFLICT DO NOTHING), and the
  record is checked before the provider is called: a payment id is never charged, nor
  refunded, twice.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Optional

from orchestration.attempts import outside_call_starts, record
from orchestration.database import transaction
from orchestration.flaky import flaky_call
from orchestration.models import (
    CANCELLED,
    CHARGED,
    DISPATCHED,
    FAILED,
    RECEIVED,
    SHIPPED,
    TERMINAL_STATES,
    VALIDATED,
    Address,
    Item,
    LateCharge,
)
from orchestration.records import (
    BusinessRuleViolation,
    advance_state,
    advance_with_event,
    fetch_order,
    insert_order_with_event,
    insert_once,
    parsed_time,
    record_event,
    refuse_if_closed,
    record_fact,
    utc_now,
)
from orchestration.tables import Order, Payment


async def order_received(
    order_id: str,
    payment_id: str,
    items: list[Item],
    address: Optional[Address],
    started_at: Optional[str] = None,
) -> dict[str, Any]:
    outside_call_starts()
    await flaky_call()
    return await record(_insert_order(order_id, payment_id, items, address, started_at))


async def _insert_order(
    order_id: str,
    payment_id: str,
    items: list[Item],
    address: Optional[Address],
    started_at: Optional[str],
) -> dict[str, Any]:
    items_json = [dataclasses.asdict(item) for item in items]
    address_json = dataclasses.asdict(address) if address else None
    now = utc_now()
    order = Order(
        id=order_id,
        state=RECEIVED,
        payment_id=payment_id,
        items_json=items_json,
        address_json=address_json,
        created_at=now,
        updated_at=now,
        started_at=parsed_time(started_at) or now,
    )
    await insert_order_with_event(
        order, "order_received", {"payment_id": payment_id, "items": items_json, "address": address_json}
    )
    return {"order_id": order_id, "items": items_json}


async def order_validated(order_id: str) -> bool:
    outside_call_starts()
    await flaky_call()
    return await record(_validate_order(order_id))


async def _validate_order(order_id: str) -> bool:
    order = await fetch_order(order_id)
    items = order["items_json"] or []
    if not items:
        raise BusinessRuleViolation("No items to validate")
    bad = [item for item in items if int(item.get("qty", 0)) < 1]
    if bad:
        raise BusinessRuleViolation(f"every item needs a quantity of at least 1: {bad}")
    await advance_with_event(order_id, VALIDATED, [RECEIVED], "order_validated", {}, only_if_moved=True)
    return True


async def payment_charged(order_id: str, payment_id: str) -> dict[str, Any]:
    """Charge once per payment_id. The payment record is checked first: a payment id already
    charged is never sent to the provider again (a step re-run after a crash or a lost answer),
    and the stored payment comes back, marked as a duplicate. The insert after the charge is
    keyed by payment_id too, so two attempts racing past the check still record one charge."""
    order_state, stored = await _before_charge(order_id, payment_id)
    if stored is not None:
        return stored
    refuse_if_closed(order_id, order_state, "its payment is not charged")
    outside_call_starts()
    await flaky_call()
    return await record(_insert_payment(order_id, payment_id))


async def _before_charge(order_id: str, payment_id: str) -> tuple[Optional[str], Optional[dict[str, Any]]]:
    """The order's state and the payment on record (None when there is none), in one round trip."""
    [row] = await Payment.raw(
        "SELECT o.state AS order_state, p.order_id, p.status, p.amount FROM (SELECT 1) AS one"
        " LEFT JOIN orders o ON o.id = {} LEFT JOIN payments p ON p.payment_id = {}",
        order_id,
        payment_id,
    )
    return row["order_state"], None if row["order_id"] is None else _stored(order_id, payment_id, row)


async def _stored_payment(order_id: str, payment_id: str) -> Optional[dict[str, Any]]:
    stored = await Payment.select().where(Payment.payment_id == payment_id).first()
    return None if stored is None else _stored(order_id, payment_id, stored)


def _stored(order_id: str, payment_id: str, stored: dict[str, Any]) -> dict[str, Any]:
    if stored["order_id"] != order_id:
        raise BusinessRuleViolation(
            f"payment id {payment_id} already belongs to order {stored['order_id']}"
        )
    return {"status": stored["status"], "amount": stored["amount"], "already_processed": True}


async def _insert_payment(order_id: str, payment_id: str) -> dict[str, Any]:
    order = await fetch_order(order_id)
    amount = sum(int(item.get("qty", 1)) for item in order["items_json"] or [])
    payment = Payment(
        payment_id=payment_id, order_id=order_id, status="charged", amount=amount, created_at=utc_now()
    )
    async with transaction():
        if await insert_once(payment, Payment.payment_id):
            await record_fact(order_id, "payment_charged", {"payment_id": payment_id, "amount": amount})
            await advance_state(order_id, CHARGED, [VALIDATED, RECEIVED])
            return {"status": "charged", "amount": amount, "already_processed": False}
    stored = await _stored_payment(order_id, payment_id)
    assert stored is not None, "the insert found the payment"
    return stored


async def payment_refunded(order_id: str, payment_id: str, reason: str) -> dict[str, Any]:
    """Refund a charged payment once. The record is checked first: with no charge on record, or
    one already refunded, nothing is sent to the provider."""
    stored = await _refund_state(order_id, payment_id)
    if stored["status"] != "charged":
        return stored
    outside_call_starts()
    await flaky_call()
    return await record(_refund_payment(order_id, payment_id, reason))


async def _refund_payment(order_id: str, payment_id: str, reason: str) -> dict[str, Any]:
    async with transaction():
        refunded = (
            await Payment.update({Payment.status: "refunded", Payment.refunded_at: utc_now()})
            .where(
                (Payment.payment_id == payment_id)
                & (Payment.order_id == order_id)
                & (Payment.status == "charged")
            )
            .returning(Payment.amount)
        )
        if refunded:
            amount = refunded[0]["amount"]
            await record_fact(
                order_id,
                "payment_refunded",
                {"payment_id": payment_id, "amount": amount, "reason": reason},
            )
            return {"status": "refunded", "amount": amount}
    return await _refund_state(order_id, payment_id)


async def charged_on_record(order_id: str, payment_id: str) -> bool:
    """Whether the order's payment is on record as charged and not refunded. A charge can be
    on record that the workflow does not know of: one made by a workflow task whose worker died
    before completing it, after which the workflow ran again from its last completed task and
    may have taken another path (a cancel now seen before the charge)."""
    return (await _refund_state(order_id, payment_id))["status"] == "charged"


async def late_charges(closed_since: datetime) -> list[LateCharge]:
    """Charges on record, not refunded, of orders cancelled or failed since `closed_since`. An
    order refunds before it closes, so each of these was recorded after its order closed (see
    orchestration/order/late_charges.py)."""
    rows = await Payment.raw(
        "SELECT p.order_id, p.payment_id, o.state AS order_state FROM orders o"
        " JOIN payments p ON p.order_id = o.id"
        " WHERE o.state IN ({}, {}) AND o.finished_at >= {} AND p.status = 'charged'"
        " ORDER BY o.finished_at",
        CANCELLED,
        FAILED,
        closed_since,
    )
    return [LateCharge(**row) for row in rows]


async def _refund_state(order_id: str, payment_id: str) -> dict[str, Any]:
    """The order's payment as a refund sees it: its status and amount, or not charged."""
    stored = (
        await Payment.select()
        .where((Payment.payment_id == payment_id) & (Payment.order_id == order_id))
        .first()
    )
    if stored is None:
        return {"status": "not_charged", "amount": 0}
    return {"status": stored["status"], "amount": stored["amount"]}


async def order_shipped(order_id: str) -> str:
    outside_call_starts()
    await flaky_call()
    await record(advance_with_event(order_id, SHIPPED, [DISPATCHED], "order_shipped", {}, only_if_moved=True))
    return "Shipped"


async def record_address(order_id: str, address: Address, version: int) -> None:
    """Store the newest shipping address (bookkeeping: no outside call involved)."""
    address_json = dataclasses.asdict(address)
    async with transaction():
        await Order.update({Order.address_json: address_json, Order.updated_at: utc_now()}).where(
            Order.id == order_id
        )
        await record_fact(
            order_id, "address_updated", {"address": address_json, "version": version}, f":{version}"
        )


async def close_order(
    order_id: str,
    state: str,
    reason: str,
    payment_id: str,
    items: list[Item],
    started_at: Optional[str] = None,
) -> None:
    """Record a cancelled or failed order, creating its row if it never got received."""
    if state not in (CANCELLED, FAILED):
        raise ValueError(f"close_order only records cancelled or failed orders, not {state!r}")
    now = utc_now()
    async with transaction():
        closed = await Order.insert(
            Order(
                id=order_id,
                state=state,
                reason=reason,
                payment_id=payment_id,
                items_json=[dataclasses.asdict(item) for item in items],
                created_at=now,
                updated_at=now,
                started_at=parsed_time(started_at) or now,
                finished_at=now,
            )
        ).on_conflict(
            target=Order.id,
            action="DO UPDATE",
            values=[Order.state, Order.reason, Order.updated_at, Order.finished_at],
            where=Order.state.not_in(list(TERMINAL_STATES)),
        ).returning(Order.id)
        if closed:
            await record_event(order_id, f"order_{state}", f"{order_id}:closed", {"reason": reason})
