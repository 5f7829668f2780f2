"""The shipping business functions: each calls the unreliable outside world (flaky_call), then
records what happened in PostgreSQL.

Every write is idempotent, because Temporal retries a step whenever an attempt fails or times
out, including attempts whose write committed just before the worker lost track of it (see
orchestration/records.py). The write happens only after flaky_call returned, i.e. after the
side effect succeeded, and it always runs to its end (orchestration/attempts.py `record`).
A package is prepared once per shipping attempt; the carrier is dispatched once per order,
whichever attempt achieved it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from orchestration.attempts import outside_call_starts, record
from orchestration.flaky import flaky_call
from orchestration.models import CHARGED, DISPATCHED, SHIPPING, Address
from orchestration.records import BusinessRuleViolation, advance_with_event
from orchestration.tables import Event

async def package_prepared(order_id: str, shipping_attempt: int) -> str:
    outside_call_starts()
    await flaky_call()
    await record(
        advance_with_event(
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
    """Dispatch the order's goods once. The record is checked first: goods already on their way
    (a step run again after its worker died, see dispatched_on_record) are not sent again."""
    if address is None:
        raise BusinessRuleViolation("the order has no shipping address")
    if await dispatched_on_record(order_id):
        return "Dispatched"
    outside_call_starts()
    await flaky_call()
    # One dispatch per order, whichever shipping attempt achieved it.
    await record(
        advance_with_event(
            order_id,
            DISPATCHED,
            [SHIPPING, CHARGED],
            "carrier_dispatched",
            {"shipping_attempt": shipping_attempt, "address": dataclasses.asdict(address)},
        )
    )
    return "Dispatched"


async def dispatched_on_record(order_id: str) -> bool:
    """Whether the carrier was dispatched for the order. A dispatch can be on record that the
    shipping workflow does not know of: one made in a workflow task whose worker died before
    completing it, after which the workflow ran again from its last completed task and may have
    taken another path (a cancel now seen before the dispatch)."""
    return await Event.exists().where(Event.event_key == f"{order_id}:carrier_dispatched")
