"""An order as a board row sees it: its status and the steps retrying now, served from a cache
so that rows polling every second do not each wait for Temporal (see web/summary_cache.py)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from orchestration.models import COMPENSATION_STEPS, ORDER_STEPS, SHIPPING_STEPS, OrderStatus
from web import read_model
from web.problems import DependencyUnavailable, OrderNotFound
from web.summary_cache import RefreshingCache
from web.temporal_gateway import TemporalGateway, workflow_id_for

# A closed order's summary never changes; this many are kept so that a board asks Temporal about
# a finished order once, not on every page view.
FINAL_SUMMARIES_KEPT = 2000
# A board row shows the status Temporal gave, refreshed behind the requests once older than
# LIVE_SUMMARY_REFRESH_SECONDS; rows poll every second, so what a row shows is about a second
# old. When the machine is overloaded a refresh can take seconds: the row then still answers at
# once, saying how old its status is, up to LIVE_SUMMARY_MAX_AGE_SECONDS, past which a request
# waits for a fresh status or its error.
LIVE_SUMMARY_REFRESH_SECONDS = 0.5
LIVE_SUMMARY_MAX_AGE_SECONDS = 30.0
LIVE_SUMMARIES_KEPT = 2000
# Background refreshes asked of Temporal at once; rows wait for their turn rather than flood it.
LIVE_SUMMARY_REFRESHES = 16
# One page of the board asks Temporal about this many orders at a time, so that a page full of
# orders in flight does not flood the server.
SUMMARY_CONCURRENCY = 8
# Steps run by an activity (ship_order runs the shipping workflow, manual_review waits).
ACTIVITY_STEPS = frozenset(ORDER_STEPS + COMPENSATION_STEPS + SHIPPING_STEPS) - {
    "ship_order",
    "manual_review",
}


@dataclass(frozen=True)
class RetryingStep:
    """A step still running after failed attempts. The steps are local activities, which
    Temporal's describe() does not list, so this comes from the `attempt_failed` events each
    failed attempt writes."""

    workflow_id: str
    step: str
    attempt: int
    """The attempt running now: the failed ones so far, plus one."""
    last_failure: str
    last_failed_at: str


@dataclass
class OrderSummary:
    """What one board row needs: the workflow's status and the steps retrying right now."""

    status: OrderStatus
    closed: bool
    """The workflow has ended, so `status` is final."""
    retrying: list[RetryingStep]


def retrying_steps(
    status: OrderStatus, failures: list[dict[str, Any]], shipping_step: Optional[str] = None
) -> list[RetryingStep]:
    """The running steps of an order (its own, and its shipping attempt's) that have failed
    attempts, from `failures` (the order's attempt_failed payloads with their times, oldest
    first). The shipping attempt's running step is `shipping_step` when the caller asked the
    attempt; otherwise the step of its newest failure."""
    running: set[tuple[str, str]] = set()
    if status.current_step and status.current_step in ACTIVITY_STEPS:
        running.add((workflow_id_for(status.order_id), status.current_step))
    if status.shipping_workflow_id:
        step = shipping_step or next(
            (f["step"] for f in reversed(failures) if f["workflow_id"] == status.shipping_workflow_id),
            None,
        )
        if step:
            running.add((status.shipping_workflow_id, step))
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for failure in failures:
        key = (failure["workflow_id"], failure["step"])
        if key in running:
            newest[key] = failure
    return [
        RetryingStep(workflow_id, step, failure["attempt"] + 1, failure["error"], failure["at"])
        for (workflow_id, step), failure in newest.items()
    ]


class Summaries:
    """Order summaries: an open order's from the live cache, a closed order's kept for good."""

    def __init__(self, gateway: TemporalGateway) -> None:
        self._gateway = gateway
        self._final: OrderedDict[str, OrderSummary] = OrderedDict()
        self._live: RefreshingCache[str, OrderSummary] = RefreshingCache(
            self._load,
            refresh_after=LIVE_SUMMARY_REFRESH_SECONDS,
            max_age=LIVE_SUMMARY_MAX_AGE_SECONDS,
            max_entries=LIVE_SUMMARIES_KEPT,
            max_concurrent_refreshes=LIVE_SUMMARY_REFRESHES,
        )

    async def get(
        self, order_id: str, *, fresh: bool = False, wait: Optional[float] = None
    ) -> OrderSummary:
        """At most LIVE_SUMMARY_MAX_AGE_SECONDS old, usually about one row poll, unless `fresh`
        (after an operator action the row must show its effect). Once the workflow has closed
        its summary is final and kept, so a finished order costs Temporal nothing afterwards.
        With `wait`, NotLoadedYet when no summary is kept and none came within `wait` seconds
        (see RefreshingCache.get)."""
        if (final := self._final.get(order_id)) is not None:
            self._final.move_to_end(order_id)
            return final
        return await self._live.get(order_id, fresh=fresh, wait=wait)

    def age(self, order_id: str) -> Optional[float]:
        """Seconds since the live summary of an open order was asked of Temporal; 0 for a
        closed order (its summary is final); None when none is kept."""
        if order_id in self._final:
            return 0.0
        return self._live.age(order_id)

    async def many(self, order_ids: Iterable[str]) -> dict[str, Optional[OrderSummary]]:
        """Summaries of several orders, a few at a time. An order Temporal cannot report on now
        (unavailable, or its history already deleted) maps to None, so that a page can still
        show what the database knows."""
        limit = asyncio.Semaphore(SUMMARY_CONCURRENCY)

        async def summary(order_id: str) -> Optional[OrderSummary]:
            async with limit:
                try:
                    return await self.get(order_id)
                except (OrderNotFound, DependencyUnavailable):
                    return None

        ids = list(order_ids)
        return dict(zip(ids, await asyncio.gather(*(summary(order_id) for order_id in ids))))

    def keep(self, summary: OrderSummary) -> OrderSummary:
        """Keep a closed order's summary for good."""
        if summary.closed:
            self._final[summary.status.order_id] = summary
            while len(self._final) > FINAL_SUMMARIES_KEPT:
                self._final.popitem(last=False)
        return summary

    async def _load(self, order_id: str) -> OrderSummary:
        """The status with the order's failed attempts from the database, read together."""
        (status, closed), failures = await asyncio.gather(
            self._gateway.status(order_id), read_model.failed_attempts(order_id)
        )
        if closed:
            return self.keep(OrderSummary(status, True, []))
        return OrderSummary(status, False, retrying_steps(status, failures))
