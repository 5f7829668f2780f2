"""The business functions: each calls the unreliable outside world (flaky_call), then records
what happened in PostgreSQL.

Every write is idempotent, because Temporal retries an activity whenever an attempt fails or
times out, including attempts whose write committed just before the worker lost track of it:
- orders are inserted with ON CONFLICT DO NOTHING and only move forward through guarded
  state transitions, so a late retry can never undo a cancellation;
- a payment is keyed by the caller's payment_id (INSERT ... ON CONFLICT DO NOTHING); a second
  charge with the same id returns the stored payment instead of charging again;
- every event has a deterministic key with a unique constraint, so a fact is recorded once.
The write happens only after flaky_call returned, i.e. after the side effect succeeded, and it
always runs to its end (see `_record`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Awaitable, Iterable, Iterator, Optional, TypeVar

from orchestration.database import transaction
from orchestration.flaky import flaky_call
from orchestration.models import (
    CANCELLED,
    CHARGED,
    DISPATCHED,
    FAILED,
    RECEIVED,
    SHIPPED,
    SHIPPING,
    TERMINAL_STATES,
    VALIDATED,
    Address,
    Item,
)
from orchestration.tables import Event, Order, Payment


T = TypeVar("T")

logger = logging.getLogger(__name__)


class BusinessRuleViolation(Exception):
    """A request that no retry can fix (for example an order without items)."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _parsed(moment: Optional[str]) -> Optional[datetime]:
    return datetime.fromisoformat(moment) if moment else None


def _log_unobserved_failure(write: asyncio.Task) -> None:
    if not write.cancelled() and write.exception() is not None:
        logger.warning(
            "database write failed after its attempt was cancelled",
            extra={"event": "write_failed", "error": repr(write.exception())},
        )


@dataclass
class AttemptTracker:
    """What an attempt's calls have done so far, for its cut-off (see activities.py)."""

    outside_call_started_at: Optional[float] = None
    """When the outside call (flaky_call) began, on the event loop's clock; None before."""
    writes: list[asyncio.Task] = field(default_factory=list)
    """The record writes started after the outside call returned."""


_tracker: ContextVar[Optional[AttemptTracker]] = ContextVar("attempt_tracker", default=None)


@contextmanager
def tracking_attempt() -> Iterator[AttemptTracker]:
    """Follow the calls started inside this block (in this task): their outside call, and the
    writes that record it."""
    tracker = AttemptTracker()
    token = _tracker.set(tracker)
    try:
        yield tracker
    finally:
        _tracker.reset(token)


def _outside_call_starts() -> None:
    """Mark the outside call's start: the attempt's cut-off counts from here, so reading the
    record first (the payment checks) never counts against it."""
    if (tracker := _tracker.get()) is not None:
        tracker.outside_call_started_at = asyncio.get_running_loop().time()


async def _record(write: Awaitable[T]) -> T:
    """Run the database write that records an outside effect to its end, even when the attempt
    is cancelled meanwhile.

    Once flaky_call has returned, the effect is real and must be recorded: the activity's cut-off
    is for a hung outside call, so it waits for this write (see `tracking_attempt`) instead of
    abandoning it. Shielding also keeps a cancellation from tearing a transaction halfway
    (during BEGIN, COMMIT or ROLLBACK), where Piccolo would never return the connection to the
    pool; every write is idempotent, so a retry after a lost result finds it done."""
    task = asyncio.ensure_future(write)
    task.add_done_callback(_log_unobserved_failure)
    if (tracker := _tracker.get()) is not None:
        tracker.writes.append(task)
    return await asyncio.shield(task)


async def record_event(order_id: str, event_type: str, event_key: str, payload: dict) -> bool:
    """Insert an event once; returns False when an event with that key already exists."""
    inserted = (
        await Event.insert(
            Event(
                event_key=event_key,
                order_id=order_id,
                type=event_type,
                payload_json=payload,
                ts=_now(),
            )
        )
        .on_conflict(target=Event.event_key, action="DO NOTHING")
        .returning(Event.id)
    )
    return bool(inserted)


async def _advance_state(order_id: str, new_state: str, from_states: Iterable[str]) -> bool:
    """Move an order forward; a stale or repeated transition changes nothing."""
    now = _now()
    values = {Order.state: new_state, Order.updated_at: now}
    if new_state in TERMINAL_STATES:
        values[Order.finished_at] = now
    updated = (
        await Order.update(values)
        .where((Order.id == order_id) & Order.state.is_in(list(from_states)))
        .returning(Order.id)
    )
    return bool(updated)


async def _fetch_order(order_id: str) -> dict[str, Any]:
    order = await Order.select().where(Order.id == order_id).first().output(load_json=True)
    if order is None:
        raise BusinessRuleViolation(f"order {order_id} has not been received")
    return order


async def order_received(
    order_id: str,
    payment_id: str,
    items: list[Item],
    address: Optional[Address],
    started_at: Optional[str] = None,
) -> dict[str, Any]:
    _outside_call_starts()
    await flaky_call()
    return await _record(_insert_order(order_id, payment_id, items, address, started_at))


async def _insert_order(
    order_id: str,
    payment_id: str,
    items: list[Item],
    address: Optional[Address],
    started_at: Optional[str],
) -> dict[str, Any]:
    items_json = [dataclasses.asdict(item) for item in items]
    address_json = dataclasses.asdict(address) if address else None
    now = _now()
    async with transaction():
        inserted = (
            await Order.insert(
                Order(
                    id=order_id,
                    state=RECEIVED,
                    payment_id=payment_id,
                    items_json=items_json,
                    address_json=address_json,
                    created_at=now,
                    updated_at=now,
                    started_at=_parsed(started_at) or now,
                )
            )
            .on_conflict(target=Order.id, action="DO NOTHING")
            .returning(Order.id)
        )
        if inserted:
            await record_event(
                order_id,
                "order_received",
                f"{order_id}:order_received",
                {"payment_id": payment_id, "items": items_json, "address": address_json},
            )
    return {"order_id": order_id, "items": items_json}


async def order_validated(order_id: str) -> bool:
    _outside_call_starts()
    await flaky_call()
    return await _record(_validate_order(order_id))


async def _validate_order(order_id: str) -> bool:
    order = await _fetch_order(order_id)
    items = order["items_json"] or []
    if not items:
        raise BusinessRuleViolation("No items to validate")
    bad = [item for item in items if int(item.get("qty", 0)) < 1]
    if bad:
        raise BusinessRuleViolation(f"every item needs a quantity of at least 1: {bad}")
    async with transaction():
        if await _advance_state(order_id, VALIDATED, [RECEIVED]):
            await record_event(order_id, "order_validated", f"{order_id}:order_validated", {})
    return True


async def payment_charged(order_id: str, payment_id: str) -> dict[str, Any]:
    """Charge once per payment_id. The payment record is checked first: a payment id already
    charged is never sent to the provider again (a step re-run after a crash or a lost answer),
    and the stored payment comes back, marked as a duplicate. The insert after the charge is
    keyed by payment_id too, so two attempts racing past the check still record one charge."""
    if (stored := await _stored_payment(order_id, payment_id)) is not None:
        return stored
    _outside_call_starts()
    await flaky_call()
    return await _record(_insert_payment(order_id, payment_id))


async def _stored_payment(order_id: str, payment_id: str) -> Optional[dict[str, Any]]:
    stored = await Payment.select().where(Payment.payment_id == payment_id).first()
    if stored is None:
        return None
    if stored["order_id"] != order_id:
        raise BusinessRuleViolation(
            f"payment id {payment_id} already belongs to order {stored['order_id']}"
        )
    return {"status": stored["status"], "amount": stored["amount"], "already_processed": True}


async def _insert_payment(order_id: str, payment_id: str) -> dict[str, Any]:
    order = await _fetch_order(order_id)
    amount = sum(int(item.get("qty", 1)) for item in order["items_json"] or [])
    async with transaction():
        inserted = (
            await Payment.insert(
                Payment(
                    payment_id=payment_id,
                    order_id=order_id,
                    status="charged",
                    amount=amount,
                    created_at=_now(),
                )
            )
            .on_conflict(target=Payment.payment_id, action="DO NOTHING")
            .returning(Payment.payment_id)
        )
        if inserted:
            await record_event(
                order_id,
                "payment_charged",
                f"{order_id}:payment_charged",
                {"payment_id": payment_id, "amount": amount},
            )
            await _advance_state(order_id, CHARGED, [VALIDATED, RECEIVED])
            return {"status": "charged", "amount": amount, "already_processed": False}
    stored = await _stored_payment(order_id, payment_id)
    assert stored is not None, "the insert found the payment"
    return stored


async def payment_refunded(order_id: str, payment_id: str, reason: str) -> dict[str, Any]:
    """Refund a charged payment once. The record is checked first: with no charge on record, or
    one already refunded, nothing is sent to the provider."""
    stored = (
        await Payment.select()
        .where((Payment.payment_id == payment_id) & (Payment.order_id == order_id))
        .first()
    )
    if stored is None:
        return {"status": "not_charged", "amount": 0}
    if stored["status"] != "charged":
        return {"status": stored["status"], "amount": stored["amount"]}
    _outside_call_starts()
    await flaky_call()
    return await _record(_refund_payment(order_id, payment_id, reason))


async def _refund_payment(order_id: str, payment_id: str, reason: str) -> dict[str, Any]:
    async with transaction():
        refunded = (
            await Payment.update({Payment.status: "refunded", Payment.refunded_at: _now()})
            .where(
                (Payment.payment_id == payment_id)
                & (Payment.order_id == order_id)
                & (Payment.status == "charged")
            )
            .returning(Payment.amount)
        )
        if refunded:
            amount = refunded[0]["amount"]
            await record_event(
                order_id,
                "payment_refunded",
                f"{order_id}:payment_refunded",
                {"payment_id": payment_id, "amount": amount, "reason": reason},
            )
            return {"status": "refunded", "amount": amount}
    stored = (
        await Payment.select()
        .where((Payment.payment_id == payment_id) & (Payment.order_id == order_id))
        .first()
    )
    if stored is None:
        return {"status": "not_charged", "amount": 0}
    return {"status": stored["status"], "amount": stored["amount"]}


async def order_shipped(order_id: str) -> str:
    _outside_call_starts()
    await flaky_call()
    await _record(_mark_shipped(order_id))
    return "Shipped"


async def _mark_shipped(order_id: str) -> None:
    async with transaction():
        if await _advance_state(order_id, SHIPPED, [DISPATCHED]):
            await record_event(order_id, "order_shipped", f"{order_id}:order_shipped", {})


async def package_prepared(order_id: str, shipping_attempt: int) -> str:
    _outside_call_starts()
    await flaky_call()
    await _record(
        _advance_with_event(
            order_id,
            SHIPPING,
            [CHARGED],
            "package_prepared",
            {"shipping_attempt": shipping_attempt},
            key_suffix=f":{shipping_attempt}",
        )
    )
    return "Package ready"


async def carrier_dispatched(
    order_id: str, shipping_attempt: int, address: Optional[Address]
) -> str:
    if address is None:
        raise BusinessRuleViolation("the order has no shipping address")
    _outside_call_starts()
    await flaky_call()
    # One dispatch per order, whichever shipping attempt achieved it.
    await _record(
        _advance_with_event(
            order_id,
            DISPATCHED,
            [SHIPPING, CHARGED],
            "carrier_dispatched",
            {"shipping_attempt": shipping_attempt, "address": dataclasses.asdict(address)},
        )
    )
    return "Dispatched"


async def _advance_with_event(
    order_id: str,
    new_state: str,
    from_states: Iterable[str],
    event_type: str,
    payload: dict,
    key_suffix: str = "",
) -> None:
    """Move the order forward and record the fact once, in one transaction."""
    async with transaction():
        await _advance_state(order_id, new_state, from_states)
        await record_event(order_id, event_type, f"{order_id}:{event_type}{key_suffix}", payload)

async def record_address(order_id: str, address: Address, version: int) -> None:
    """Store the newest shipping address (bookkeeping: no outside call involved)."""
    address_json = dataclasses.asdict(address)
    async with transaction():
        await Order.update({Order.address_json: address_json, Order.updated_at: _now()}).where(
            Order.id == order_id
        )
        await record_event(
            order_id,
            "address_updated",
            f"{order_id}:address_updated:{version}",
            {"address": address_json, "version": version},
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
    now = _now()
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
                started_at=_parsed(started_at) or now,
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
