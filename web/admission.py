"""Admission control: a new order starts only while the machine has room for it.

Past what the machine can carry, every order would be late; holding the newest back keeps the
15-second promise for the ones already accepted. Two bounds: orders doing work
(MAX_ORDERS_IN_FLIGHT), where orders parked at review, waiting for a person (an approval or an
address), cost the machine nothing and hold no place; and all running orders (MAX_ORDERS_OPEN),
parked ones included, since each approval brings one back to work with what is left of its 15 s
(orchestration/policy.py says how both are derived). A start waits up to
ADMISSION_WAIT_SECONDS for a free place, first come first, and is then refused with
Retry-After: a burst is absorbed without the caller retrying, and callers retrying in a loop
cost the busy machine more than callers waiting quietly. The count comes from Temporal's
visibility (the OrderParked search attribute), so it holds across web replicas; starts racing
each other may overshoot it by a few.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass

from temporalio.client import Client

from orchestration.models import ORDER_PARKED_ATTRIBUTE
from orchestration.settings import WebSettings
from web.overview import AdmissionSnapshot
from web.problems import CALL_TIMEOUT, DependencyUnavailable, temporal_call

# Orders doing work: the running ones, less those parked waiting for a person. Asking for the
# unparked ones at once (OrderParked = false) makes SQLite's visibility store scan every order
# that ever ran, since the ended ones keep false: 3.5 ms of server CPU per count with 600 orders
# in its history, 8.3 ms with 5,700, at ten counts a second when starts wait. Each of these two
# counts uses an index: about 1.2 ms, however long the history.
RUNNING_ORDERS_QUERY = "WorkflowType = 'OrderWorkflow' AND ExecutionStatus = 'Running'"
PARKED_ORDERS_QUERY = f"{RUNNING_ORDERS_QUERY} AND {ORDER_PARKED_ATTRIBUTE.name} = true"
IN_FLIGHT_RECOUNT_SECONDS = 0.1
# Orders end within 15 s, and at the limit about one ends every few hundred milliseconds, so a
# refused start may try again almost at once.
AT_CAPACITY_RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class RunningOrders:
    running: int
    parked: int
    """Of the running ones, those waiting for a person at review."""

    @property
    def doing_work(self) -> int:
        return max(self.running - self.parked, 0)

    def plus_one(self) -> RunningOrders:
        """The count once a start just admitted runs (doing work from its first moment)."""
        return RunningOrders(self.running + 1, self.parked)


async def running_orders(client: Client) -> RunningOrders:
    """Orders running and, of those, parked at review, as Temporal's visibility counts them. The
    two counts are not taken at one instant: an order parking in between is off by one for a
    moment."""
    running, parked = await asyncio.gather(
        client.count_workflows(RUNNING_ORDERS_QUERY, rpc_timeout=CALL_TIMEOUT),
        client.count_workflows(PARKED_ORDERS_QUERY, rpc_timeout=CALL_TIMEOUT),
    )
    return RunningOrders(running.count, parked.count)


class Admission:
    """The admission places of this web process, counted in Temporal."""

    def __init__(self, settings: WebSettings) -> None:
        self._settings = settings
        self._counted: tuple[float, RunningOrders] = (-math.inf, RunningOrders(0, 0))
        """(monotonic time of the last count, running orders then plus starts since)."""
        self._recount = asyncio.Lock()
        self._waiting_starts: list[object] = []
        """Starts waiting for a free place, first come first."""
        self._refused_at: deque[float] = deque()
        """When starts were refused at capacity (monotonic), for the overview."""

    async def admit(self, client: Client) -> None:
        """Return once a new order may start; raise DependencyUnavailable when no place came
        free within ADMISSION_WAIT_SECONDS."""
        working_limit = self._settings.max_orders_in_flight
        open_limit = self._settings.max_orders_open
        if working_limit <= 0 and open_limit <= 0:
            return
        turn = object()
        self._waiting_starts.append(turn)
        give_up_at = time.monotonic() + self._settings.admission_wait_seconds
        try:
            while True:
                orders = await self._running_orders(client)
                places = min(
                    working_limit - orders.doing_work if working_limit > 0 else math.inf,
                    open_limit - orders.running if open_limit > 0 else math.inf,
                )
                if self._waiting_starts.index(turn) < places:
                    self._counted = (self._counted[0], orders.plus_one())
                    return
                if time.monotonic() >= give_up_at:
                    self._refused_at.append(time.monotonic())
                    raise DependencyUnavailable(
                        "capacity", self._refusal(orders), retry_after_seconds=AT_CAPACITY_RETRY_AFTER_SECONDS
                    )
                await asyncio.sleep(IN_FLIGHT_RECOUNT_SECONDS)
        finally:
            self._waiting_starts.remove(turn)

    def _refusal(self, orders: RunningOrders) -> str:
        working_limit = self._settings.max_orders_in_flight
        if 0 < working_limit <= orders.doing_work:
            held = (f"{orders.doing_work} orders are being processed, the most this system takes at "
                    f"once ({working_limit})")
        else:
            held = (f"{orders.running} orders are open ({orders.parked} of them waiting for review), "
                    f"the most this system takes at once ({self._settings.max_orders_open}): each "
                    "may be approved and must then finish in time")
        return (f"{held}, and none ended within {self._settings.admission_wait_seconds:g} s; "
                "try again in a moment.")

    async def _running_orders(self, client: Client) -> RunningOrders:
        """Running orders, counted by Temporal at most every IN_FLIGHT_RECOUNT_SECONDS; in
        between, the last count plus the starts this process accepted since. At capacity every
        waiting start asks again and again, and a count per question would add load just when
        there is least room for it. Questions arriving during a count wait for it rather than
        each start one of their own."""
        counted_at, orders = self._counted
        if time.monotonic() - counted_at < IN_FLIGHT_RECOUNT_SECONDS:
            return orders
        async with self._recount:
            counted_at, orders = self._counted
            if time.monotonic() - counted_at < IN_FLIGHT_RECOUNT_SECONDS:
                return orders
            async with temporal_call():
                orders = await running_orders(client)
            self._counted = (time.monotonic(), orders)
            return orders

    async def recount(self, client: Client) -> None:
        """Count the running orders now (unless counted in the last IN_FLIGHT_RECOUNT_SECONDS),
        so that the overview's figures are current between starts too."""
        await self._running_orders(client)

    def snapshot(self, window_seconds: float) -> AdmissionSnapshot:
        """Places in use, starts waiting, and starts refused in the last `window_seconds`."""
        while self._refused_at and self._refused_at[0] < time.monotonic() - window_seconds:
            self._refused_at.popleft()
        counted_at, orders = self._counted
        return AdmissionSnapshot(
            limit=self._settings.max_orders_in_flight,
            in_use=None if counted_at == -math.inf else orders.doing_work,
            open_limit=self._settings.max_orders_open,
            open=None if counted_at == -math.inf else orders.running,
            waiting=len(self._waiting_starts),
            refused_in_window=len(self._refused_at),
        )
