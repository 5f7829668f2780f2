"""Orders through the JSON API, whatever the HTTP client: what a start sends, and orders driven C
at a time."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Protocol, Sequence, TypeVar

ADDRESS = {"line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}


def start_body(order_id: str) -> dict[str, Any]:
    """The body of POST /orders/{id}/start: one item, paid with a payment id of the order's own."""
    return {"payment_id": f"pay-{order_id}", "items": [{"sku": "ABC", "qty": 1}], "address": ADDRESS}


class Driven(Protocol):
    error: str


Record = TypeVar("Record", bound=Driven)


async def in_slots(
    records: Sequence[Record], concurrency: int, drive: Callable[[Record], Awaitable[None]],
    caught: type[Exception] | tuple[type[Exception], ...],
) -> None:
    """Drive every record, at most `concurrency` at once. A `caught` exception ends its own
    record only, kept as the record's error, so that one lost order does not end the run."""
    slots = asyncio.Semaphore(concurrency)

    async def in_slot(record: Record) -> None:
        async with slots:
            try:
                await drive(record)
            except caught as err:
                record.error = f"{type(err).__name__}: {err}"

    await asyncio.gather(*(in_slot(record) for record in records))
