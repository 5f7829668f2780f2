"""The shipping business functions: each calls the unreliable outside world (flaky_call), then
records what happened in PostgreSQL.

Every write is idempotent, because Temporal retries a step whenever an attempt fails or times
out, including attempts whose write committed just before the worker lost track of it (see
orchestration/records.py). The write happens only after flaky_call returned, i.e. after the
side effect succeeded, and it always runs to its end (orchestration/attempts.py `record`).
A package is prepared once per shipping attempt; the carrier is dispatched once per order,
whichever attempt achieved it.

The carrier is called only under the order's dispatch decision: one event row per order
(`<order>:dispatch_decision`, unique like every event key), claimed by the first dispatch
attempt as `dispatch_started` before it calls out, or by a cancel as `dispatch_withdrawn`.
Whichever comes first stands, so a cancel never stands while goods may be leaving: not even
those of a worker that stalled past its workflow task timeout, woke, and ran its stale copy of
the shipping attempt on (the fault test's stalls found that).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from orchestration.attempts import outside_call_starts, record
from orchestration.flaky import flaky_call
from orchestration.models import (
    CANCELLED,
    CHARGED,
    DISPATCH_DONE,
    DISPATCH_STARTED,
    DISPATCH_WITHDRAWN,
    DISPATCHED,
    FAILED,
    SHIPPING,
    Address,
)
from orchestration.records import BusinessRuleViolation, advance_with_event, refuse_if_closed, utc_now
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
    order_state, decision, dispatched = await _claim_dispatch(order_id, shipping_attempt)
    if dispatched:
        return "Dispatched"
    refuse_if_closed(order_id, order_state, "its goods are not dispatched")
    if decision == WITHDRAWN_EVENT:
        raise BusinessRuleViolation(
            f"the shipment of order {order_id} was withdrawn by a cancel; its goods are not dispatched"
        )
    if decision != STARTED_EVENT:
        # Another attempt's claim, committed after this statement's snapshot: ask again.
        raise RuntimeError(f"the dispatch decision of order {order_id} is not visible yet")
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


STARTED_EVENT = "dispatch_started"
WITHDRAWN_EVENT = "dispatch_withdrawn"
# After a claim (a CTE named `claim`): the decision that stands, this claim's or the one before
# it (the statement's snapshot does not see its own insert), and whether the goods are on
# record. Parameters: the decision key, the dispatch key.
DECISION_STANDING = (
    "COALESCE((SELECT type FROM claim), (SELECT type FROM events WHERE event_key = {})) AS decision,"
    " EXISTS (SELECT 1 FROM events WHERE event_key = {}) AS dispatched"
)


def _decision_key(order_id: str) -> str:
    return f"{order_id}:dispatch_decision"


def _dispatch_key(order_id: str) -> str:
    return f"{order_id}:carrier_dispatched"


async def _claim_dispatch(order_id: str, shipping_attempt: int) -> tuple[Optional[str], Optional[str], bool]:
    """Claim the dispatch decision for the carrier unless the order is closed, in one round trip:
    the order's state, the decision that stands (the claim's, an earlier attempt's, or a
    cancel's) and whether the dispatch is on record."""
    [row] = await Event.raw(
        "WITH claim AS (INSERT INTO events (event_key, order_id, type, payload_json, ts)"
        " SELECT {}, {}, {}, {}::jsonb, {}"
        " WHERE NOT EXISTS (SELECT 1 FROM orders WHERE id = {} AND state IN ({}, {}))"
        " ON CONFLICT (event_key) DO NOTHING RETURNING type)"
        " SELECT (SELECT state FROM orders WHERE id = {}) AS order_state, " + DECISION_STANDING,
        _decision_key(order_id),
        order_id,
        STARTED_EVENT,
        json.dumps({"shipping_attempt": shipping_attempt}),
        utc_now(),
        order_id,
        CANCELLED,
        FAILED,
        order_id,
        _decision_key(order_id),
        _dispatch_key(order_id),
    )
    return row["order_state"], row["decision"], row["dispatched"]


async def dispatch_withdrawn(order_id: str, shipping_attempt: int) -> str:
    """Withdraw the order's dispatch for a cancel, unless a dispatch was started first:
    DISPATCH_WITHDRAWN (the cancel stands), DISPATCH_STARTED (a carrier call may be under way)
    or DISPATCH_DONE (the goods left). Bookkeeping: no outside call."""
    [row] = await Event.raw(
        "WITH claim AS (INSERT INTO events (event_key, order_id, type, payload_json, ts)"
        " VALUES ({}, {}, {}, {}::jsonb, {}) ON CONFLICT (event_key) DO NOTHING RETURNING type)"
        " SELECT " + DECISION_STANDING,
        _decision_key(order_id),
        order_id,
        WITHDRAWN_EVENT,
        json.dumps({"shipping_attempt": shipping_attempt}),
        utc_now(),
        _decision_key(order_id),
        _dispatch_key(order_id),
    )
    if row["dispatched"]:
        return DISPATCH_DONE
    if row["decision"] == WITHDRAWN_EVENT:
        return DISPATCH_WITHDRAWN
    if row["decision"] == STARTED_EVENT:
        return DISPATCH_STARTED
    raise RuntimeError(f"the dispatch decision of order {order_id} is not visible yet")


async def dispatched_on_record(order_id: str) -> bool:
    """Whether the carrier was dispatched for the order. A dispatch can be on record that the
    shipping workflow does not know of: one made in a workflow task whose worker died before
    completing it, after which the workflow ran again from its last completed task and may have
    taken another path (a cancel now seen before the dispatch)."""
    return await Event.exists().where(Event.event_key == _dispatch_key(order_id))
