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
    if address is None:
        raise BusinessRuleViolation("the order has no shipping address")
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
