"""The order records every step writes, and the rules they keep: idempotent writes that only
move an order forward, and facts recorded once each (events keyed by what they record)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from piccolo.columns import Column
from piccolo.table import Table

from orchestration.models import CANCELLED, FAILED, TERMINAL_STATES
from orchestration.tables import Event, Order


class BusinessRuleViolation(Exception):
    """A request that no retry can fix (for example an order without items)."""


def refuse_if_closed(order_id: str, order_state: Optional[str], refusal: str) -> None:
    """Refuse a call that moves money or goods for an order already cancelled or failed. No
    workflow asks that of a step; a worker that stalled past its workflow task timeout does:
    the order was taken over and closed elsewhere, and the stalled worker, waking, runs its
    stale copy of the workflow on (the fault test's stalls found goods dispatched that way)."""
    if order_state in (CANCELLED, FAILED):
        raise BusinessRuleViolation(f"order {order_id} is already {order_state}; {refusal}")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parsed_time(moment: Optional[str]) -> Optional[datetime]:
    return datetime.fromisoformat(moment) if moment else None


async def insert_once(row: Table, key: Column) -> bool:
    """Insert a row unless one with the same key exists; True when this call inserted it."""
    inserted = await type(row).insert(row).on_conflict(target=key, action="DO NOTHING").returning(key)
    return bool(inserted)


async def record_event(order_id: str, event_type: str, event_key: str, payload: dict) -> bool:
    """Insert an event once; returns False when an event with that key already exists."""
    event = Event(
        event_key=event_key, order_id=order_id, type=event_type, payload_json=payload, ts=utc_now()
    )
    return await insert_once(event, Event.event_key)


async def record_fact(order_id: str, event_type: str, payload: dict, key_suffix: str = "") -> bool:
    """Record a fact that happens once per order (once per suffix): its key is its name."""
    return await record_event(order_id, event_type, f"{order_id}:{event_type}{key_suffix}", payload)


async def advance_state(order_id: str, new_state: str, from_states: Iterable[str]) -> bool:
    """Move an order forward; a stale or repeated transition changes nothing."""
    now = utc_now()
    values = {Order.state: new_state, Order.updated_at: now}
    if new_state in TERMINAL_STATES:
        values[Order.finished_at] = now
    updated = (
        await Order.update(values)
        .where((Order.id == order_id) & Order.state.is_in(list(from_states)))
        .returning(Order.id)
    )
    return bool(updated)


async def fetch_order(order_id: str) -> dict[str, Any]:
    order = await Order.select().where(Order.id == order_id).first().output(load_json=True)
    if order is None:
        raise BusinessRuleViolation(f"order {order_id} has not been received")
    return order


async def advance_with_event(
    order_id: str,
    new_state: str,
    from_states: Iterable[str],
    event_type: str,
    payload: dict,
    key_suffix: str = "",
    *,
    only_if_moved: bool = False,
) -> None:
    """Move the order forward and record the fact once, in one statement: atomic like a
    transaction, but one round trip where BEGIN, UPDATE, INSERT and COMMIT took four (the steps
    write this after every successful call). With `only_if_moved` the fact is recorded only by
    the call that moved the order."""
    now = utc_now()
    finished = ", finished_at = {}" if new_state in TERMINAL_STATES else ""
    await Order.raw(
        "WITH moved AS (UPDATE orders SET state = {}, updated_at = {}" + finished
        + " WHERE id = {} AND state = ANY({}::varchar[]) RETURNING id)"
        " INSERT INTO events (event_key, order_id, type, payload_json, ts)"
        " SELECT {}, {}, {}, {}::jsonb, {}" + (" FROM moved" if only_if_moved else "")
        + " ON CONFLICT (event_key) DO NOTHING",
        new_state,
        now,
        *([now] if finished else []),
        order_id,
        list(from_states),
        f"{order_id}:{event_type}{key_suffix}",
        order_id,
        event_type,
        json.dumps(payload),
        now,
    )


async def insert_order_with_event(order: Order, event_type: str, payload: dict) -> bool:
    """Insert the order unless it exists and, only when this call inserted it, record the fact:
    one statement, like advance_with_event. True when this call inserted it."""
    inserted = await Order.raw(
        "WITH new AS (INSERT INTO orders (id, state, payment_id, items_json, address_json, reason,"
        " created_at, updated_at, started_at) VALUES ({}, {}, {}, {}::jsonb, {}::jsonb, '', {}, {}, {})"
        " ON CONFLICT (id) DO NOTHING RETURNING id)"
        " INSERT INTO events (event_key, order_id, type, payload_json, ts)"
        " SELECT {}, id, {}, {}::jsonb, {} FROM new ON CONFLICT (event_key) DO NOTHING RETURNING order_id",
        order.id,
        order.state,
        order.payment_id,
        json.dumps(order.items_json),
        None if order.address_json is None else json.dumps(order.address_json),
        order.created_at,
        order.updated_at,
        order.started_at,
        f"{order.id}:{event_type}",
        event_type,
        json.dumps(payload),
        order.created_at,
    )
    return bool(inserted)
