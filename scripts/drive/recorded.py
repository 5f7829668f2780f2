"""What the system recorded for a set of orders: PostgreSQL's rows and each workflow's result."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional, Sequence

import asyncpg
from temporalio.client import Client, WorkflowExecutionStatus

from orchestration.models import CANCELLED, FAILED
from orchestration.order.late_charges import REFUND_REASON

WORKFLOW_CHECK_CONCURRENCY = 10
LATE_CHARGE_REFUND_LIKE = REFUND_REASON.format(order_state="%")


@dataclass
class DatabaseRecords:
    order_states: dict[str, str]
    payments: dict[str, list[str]]
    """Order id -> the status of each of its payments."""
    event_counts: dict[str, Counter[str]]
    """Order id -> events recorded per type, attempt_failed left out (once per failed attempt)."""
    unique_key_index: int
    """Unique indexes on events.event_key."""
    repeated_keys: int
    """Event keys recorded more than once, over every order."""
    late_charge_refunds: set[str] = field(default_factory=set)
    """Orders whose payment the late-charge sweep refunded: charged after the order closed, which
    the workflow never knew of (orchestration/order/late_charges.py)."""


async def read_database(database_url: str, order_ids: Sequence[str]) -> DatabaseRecords:
    connection = await asyncpg.connect(database_url)
    try:
        order_states = dict(await connection.fetch(
            "SELECT id, state FROM orders WHERE id = ANY($1)", order_ids))
        payments: dict[str, list[str]] = {}
        for row in await connection.fetch(
                "SELECT order_id, status FROM payments WHERE order_id = ANY($1)", order_ids):
            payments.setdefault(row["order_id"], []).append(row["status"])
        event_counts: dict[str, Counter[str]] = {}
        for row in await connection.fetch(
                "SELECT order_id, type, count(*) AS n FROM events "
                "WHERE order_id = ANY($1) AND type <> 'attempt_failed' GROUP BY order_id, type", order_ids):
            event_counts.setdefault(row["order_id"], Counter())[row["type"]] = row["n"]
        unique_key_index = await connection.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'events' "
            "AND indexdef ILIKE 'CREATE UNIQUE INDEX%(event_key)%'")
        repeated_keys = await connection.fetchval(
            "SELECT count(*) FROM (SELECT event_key FROM events GROUP BY event_key HAVING count(*) > 1) AS d")
        late_charge_refunds = {row["order_id"] for row in await connection.fetch(
            "SELECT order_id FROM events WHERE order_id = ANY($1) AND type = 'payment_refunded' "
            "AND payload_json->>'reason' LIKE $2", order_ids, LATE_CHARGE_REFUND_LIKE)}
    finally:
        await connection.close()
    return DatabaseRecords(
        order_states, payments, event_counts, unique_key_index, repeated_keys, late_charge_refunds
    )


async def unrefunded_late_charges(database_url: str, order_ids: Sequence[str]) -> list[str]:
    """Orders cancelled or failed with a payment still charged: late charges the sweep has not
    refunded yet (or, should they stay, orders left charged)."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT o.id FROM orders o JOIN payments p ON p.order_id = o.id WHERE o.id = ANY($1) "
            "AND o.state IN ($2, $3) AND p.status = 'charged'", order_ids, CANCELLED, FAILED)
    finally:
        await connection.close()
    return [row["id"] for row in rows]


@dataclass
class WorkflowOutcome:
    execution_status: str
    state: Optional[str] = None
    reason: str = ""
    payment_status: Optional[str] = None
    shipping_attempts: int = 0
    seconds: Optional[float] = None
    """Start to end, as the workflow recorded them."""
    deadline_seconds: Optional[float] = None


async def workflow_outcomes(temporal_address: str, order_ids: Sequence[str]) -> dict[str, WorkflowOutcome]:
    client = await Client.connect(temporal_address)
    slots = asyncio.Semaphore(WORKFLOW_CHECK_CONCURRENCY)

    async def outcome(order_id: str) -> WorkflowOutcome:
        handle = client.get_workflow_handle(f"order-{order_id}")
        async with slots:
            try:
                description = await handle.describe()
            except Exception as err:  # never started, or the server did not answer
                return WorkflowOutcome(f"unknown ({type(err).__name__})")
            if description.status != WorkflowExecutionStatus.COMPLETED:
                return WorkflowOutcome(description.status.name if description.status else "unknown")
            result: dict[str, Any] = await handle.result()
        started, finished, deadline = (
            datetime.fromisoformat(result[key]) for key in ("started_at", "finished_at", "deadline_at")
        )
        return WorkflowOutcome(
            "COMPLETED", result["state"], result["reason"], result["payment"]["status"],
            result["shipping_attempts"], (finished - started).total_seconds(),
            (deadline - started).total_seconds(),
        )

    outcomes = await asyncio.gather(*(outcome(order_id) for order_id in order_ids))
    return dict(zip(order_ids, outcomes))
