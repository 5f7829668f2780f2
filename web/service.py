"""What the web layer can do with orders: the one service the JSON API and the board call.

It composes the parts, each in its module: Temporal (web/temporal_gateway.py), admission
(web/admission.py), the database read model (web/read_model.py) and the row summaries
(web/summaries.py). It knows nothing about HTTP; failures come out as the exceptions of
web/problems.py, which each front end turns into its own responses.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timezone
from typing import Any, Collection, Iterable, Optional

from orchestration.models import Address, Item
from orchestration.settings import Settings
from web import read_model
from web.admission import Admission
from web.overview import Overview, overview_from_rows
from web.problems import CALL_TIMEOUT, DependencyUnavailable
from web.read_model import OrderRecord
from web.summaries import OrderSummary, Summaries, retrying_steps
from web.summary_cache import RefreshingCache
from web.temporal_gateway import (
    ActionOutcome,
    StartedOrder,
    TemporalConnection,
    TemporalGateway,
    workflow_id_for,
)

# The overview is computed at most this often, however many boards ask for it (one database
# query each time); a board polls it every 2 s.
OVERVIEW_REFRESH_SECONDS = 1.0
OVERVIEW_MAX_AGE_SECONDS = 10.0
# The overview's admission figures are counted afresh with it, unless Temporal takes longer
# than this to count (then the last count is shown).
OVERVIEW_RECOUNT_WAIT_SECONDS = 0.5


class OrderService:
    def __init__(self, settings: Settings, temporal: TemporalConnection) -> None:
        self._settings = settings
        self._gateway = TemporalGateway(settings, temporal)
        self._admission = Admission(settings.web)
        self.summaries = Summaries(self._gateway)
        self._overview: RefreshingCache[str, Overview] = RefreshingCache(
            lambda _: self._load_overview(),
            refresh_after=OVERVIEW_REFRESH_SECONDS,
            max_age=OVERVIEW_MAX_AGE_SECONDS,
            max_entries=1,
            max_concurrent_refreshes=1,
        )

    async def start_order(
        self, order_id: str, payment_id: str, items: list[Item], address: Optional[Address]
    ) -> StartedOrder:
        client = await self._gateway.connection.client()
        await read_model.check_unused(order_id, payment_id)
        await self._admission.admit(client)
        return await self._gateway.start(order_id, payment_id, items, address)

    async def approve(self, order_id: str) -> ActionOutcome:
        return await self._gateway.approve(order_id)

    async def cancel(self, order_id: str, reason: Optional[str]) -> ActionOutcome:
        return await self._gateway.cancel(order_id, reason)

    async def update_address(self, order_id: str, address: Address) -> ActionOutcome:
        return await self._gateway.update_address(order_id, address)

    async def order_status(self, order_id: str, wait_seconds: float = 0) -> dict[str, Any]:
        """The status the API answers: the workflow's own (and its running shipping
        attempt's), plus the attempts of the steps still retrying, from the database. With
        `wait_seconds`, first wait that long at most for the order to end."""
        _, answer = await self.order_view(order_id, wait_seconds)
        return answer

    async def order_view(
        self, order_id: str, wait_seconds: float = 0
    ) -> tuple[OrderSummary, dict[str, Any]]:
        """One reading of the order, as a row summary and as the full status answer: the
        order page shows both, and they must agree."""
        status, closed = await self._gateway.status(order_id, wait_seconds)
        shipping = None
        if not closed and status.shipping_workflow_id:
            shipping = await self._gateway.shipping_attempt_status(status.shipping_workflow_id)
        failures = [] if closed else await read_model.failed_attempts(order_id)
        retrying = retrying_steps(status, failures, shipping["current_step"] if shipping else None)
        answer = dataclasses.asdict(status)
        answer["live"] = {
            "workflow_id": workflow_id_for(order_id),
            "execution_status": "COMPLETED" if closed else "RUNNING",
            "retrying": [dataclasses.asdict(step) for step in retrying],
        }
        answer["shipping"] = shipping
        return self.summaries.keep(OrderSummary(status, closed, retrying)), answer

    async def shipping_attempt_status(self, workflow_id: str) -> Optional[dict[str, Any]]:
        return await self._gateway.shipping_attempt_status(workflow_id)

    async def order_summary(
        self, order_id: str, *, fresh: bool = False, wait: Optional[float] = None
    ) -> OrderSummary:
        return await self.summaries.get(order_id, fresh=fresh, wait=wait)

    def summary_age(self, order_id: str) -> Optional[float]:
        return self.summaries.age(order_id)

    async def order_summaries(self, order_ids: Iterable[str]) -> dict[str, Optional[OrderSummary]]:
        return await self.summaries.many(order_ids)

    async def overview(self) -> Overview:
        """How the desk is doing now (web/overview.py), at most OVERVIEW_REFRESH_SECONDS old."""
        return await self._overview.get("overview")

    async def _recount_admission(self) -> None:
        await self._admission.recount(await self._gateway.connection.client())

    async def _load_overview(self) -> Overview:
        window = self._settings.web.overview_window_seconds
        now = datetime.now(timezone.utc)
        try:
            await asyncio.wait_for(self._recount_admission(), OVERVIEW_RECOUNT_WAIT_SECONDS)
        except (DependencyUnavailable, asyncio.TimeoutError):
            pass  # The admission figures stay those of the last count; the rest still comes.
        rows = await read_model.overview_rows(now)
        return overview_from_rows(
            rows,
            now,
            window,
            self._settings.order_policy.deadline_seconds,
            self._admission.snapshot(window),
        )

    async def recent_orders(
        self, states: Optional[Collection[str]], limit: int
    ) -> list[dict[str, Any]]:
        """Orders from the database, newest first, in any of `states` (None: in any state)."""
        return await read_model.recent_orders(states, limit)

    async def order_record(self, order_id: str) -> OrderRecord:
        return await read_model.order_record(order_id)

    async def order_row(self, order_id: str) -> Optional[dict[str, Any]]:
        """The order as the database holds it; None until ReceiveOrder succeeded."""
        return await read_model.order(order_id)

    async def health(self) -> dict[str, dict[str, Any]]:
        """Whether each dependency answers now, with the error when it does not."""
        database, temporal = await asyncio.gather(
            read_model.database_health(), self._temporal_health()
        )
        return {"database": database, "temporal": temporal}

    async def _temporal_health(self) -> dict[str, Any]:
        try:
            client = await self._gateway.connection.client()
            await client.service_client.check_health(timeout=CALL_TIMEOUT)
        except Exception as err:  # any failure means unhealthy, and is reported as such
            return {"ok": False, "error": str(err) or type(err).__name__}
        return {"ok": True}
