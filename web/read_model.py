"""What the web layer reads from PostgreSQL: order lists, one order's record, its failed
attempts, the overview's rows, and whether an order or payment id is taken."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Collection, Optional

from orchestration.failure_log import ATTEMPT_FAILED
from orchestration.tables import Event, Order, Payment
from web.overview import HISTORY as OVERVIEW_HISTORY
from web.overview import OPEN_ORDERS_LOOKBACK
from web.problems import CALL_TIMEOUT, OrderConflict, database_call

# The order page lists at most this many events (each failed attempt is one).
MAX_EVENTS_LISTED = 500
# A status reads at most this many of an order's newest failed attempts (about a dozen is usual).
MAX_FAILURES_READ = 200


@dataclass
class OrderRecord:
    """What the database holds about one order. `order` is None until ReceiveOrder succeeded."""

    order: Optional[dict[str, Any]]
    payments: list[dict[str, Any]]
    events: list[dict[str, Any]]


def _order_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "state": row["state"],
        "reason": row["reason"],
        "payment_id": row["payment_id"],
        "address": row["address_json"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def check_unused(order_id: str, payment_id: str) -> None:
    """Refuse a known order id or payment id. The workflow records both only once it has
    received the order, so a payment id whose order started a moment ago passes here; the
    charge step still never charges one payment id for two orders (the second one fails)."""
    async with database_call():
        if await Order.exists().where(Order.id == order_id):
            raise OrderConflict(f"Order {order_id} already exists.")
        payment_owner = (
            await Payment.select(Payment.order_id).where(Payment.payment_id == payment_id).first()
            or await Order.select(Order.id.as_alias("order_id"))
            .where(Order.payment_id == payment_id)
            .first()
        )
    if payment_owner is not None:
        raise OrderConflict(
            f"Payment id {payment_id} is already used by order {payment_owner['order_id']}."
        )


async def recent_orders(states: Optional[Collection[str]], limit: int) -> list[dict[str, Any]]:
    """Orders, newest first, in any of `states` (None: in any state)."""
    query = Order.select().order_by(Order.created_at, ascending=False).limit(limit)
    if states is not None:
        query = query.where(Order.state.is_in(list(states)))
    async with database_call():
        rows = await query.output(load_json=True)
    return [_order_row(row) for row in rows]


async def order(order_id: str) -> Optional[dict[str, Any]]:
    """The order's row alone; None until ReceiveOrder succeeded."""
    async with database_call():
        row = await Order.select().where(Order.id == order_id).first().output(load_json=True)
    return None if row is None else _order_row(row)


async def order_record(order_id: str) -> OrderRecord:
    async with database_call():
        order = await Order.select().where(Order.id == order_id).first().output(load_json=True)
        payments = await Payment.select().where(Payment.order_id == order_id).order_by(
            Payment.created_at
        )
        events = (
            await Event.select()
            .where(Event.order_id == order_id)
            .order_by(Event.ts)
            .order_by(Event.id)
            .limit(MAX_EVENTS_LISTED)
            .output(load_json=True)
        )
    return OrderRecord(
        order=None if order is None else {**_order_row(order), "items": order["items_json"]},
        payments=payments,
        events=events,
    )


async def failed_attempts(order_id: str) -> list[dict[str, Any]]:
    """The order's recorded failed attempts, oldest first (the newest MAX_FAILURES_READ)."""
    async with database_call():
        rows = (
            await Event.select(Event.payload_json, Event.ts)
            .where((Event.order_id == order_id) & (Event.type == ATTEMPT_FAILED))
            .order_by(Event.id, ascending=False)
            .limit(MAX_FAILURES_READ)
            .output(load_json=True)
        )
    return [{**row["payload_json"], "at": row["ts"].isoformat()} for row in reversed(rows)]


async def overview_rows(now: datetime) -> list[dict[str, Any]]:
    """The orders the overview counts: ended within its history, or open and recent."""
    async with database_call():
        return await Order.raw(
            "SELECT state, address_json IS NULL AS no_address, started_at, finished_at, "
            "created_at FROM orders WHERE finished_at >= {} "
            "OR (finished_at IS NULL AND created_at >= {})",
            now - OVERVIEW_HISTORY,
            now - OPEN_ORDERS_LOOKBACK,
        )


async def database_health() -> dict[str, Any]:
    """Whether PostgreSQL answers now, with the error when it does not."""
    try:
        await asyncio.wait_for(Order.raw("SELECT 1"), CALL_TIMEOUT.total_seconds())
    except Exception as err:  # any failure means unhealthy, and is reported as such
        return {"ok": False, "error": str(err) or type(err).__name__}
    return {"ok": True}
