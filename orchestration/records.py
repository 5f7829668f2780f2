"""The order records every step writes, and the rules they keep: idempotent writes that only
move an order forward, and facts recorded once each (events keyed by what they record)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from piccolo.columns import Column
from piccolo.table import Table

from orchestration.database import transaction
from orchestration.models import TERMINAL_STATES
from orchestration.tables import Event, Order


class BusinessRuleViolation(Exception):
    """A request that no retry can fix (for example an order without items)."""


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
) -> None:
    """Move the order forward and record the fact once, in one transaction."""
    async with transaction():
        await advance_state(order_id, new_state, from_states)
        await record_fact(order_id, event_type, payload, key_suffix)
