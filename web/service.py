"""What the web layer can do with orders, over Temporal and PostgreSQL.

The JSON API and the HTML board both call this module; it knows nothing about HTTP. Failures
come out as the exceptions below, which each front end turns into its own responses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import OrderedDict, deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Collection, Iterable, Optional

import asyncpg
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import (
    QueryRejectCondition,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RetryConfig, RPCError, RPCStatusCode

from orchestration.attempts import ATTEMPT_FAILED
from orchestration.models import (
    COMPENSATION_STEPS,
    ORDER_PARKED_ATTRIBUTE,
    ORDER_STEPS,
    SHIPPING_STEPS,
    ActionResult,
    Address,
    AddressUpdate,
    CancelOrder,
    Item,
    OrderInput,
    OrderStatus,
)
from orchestration.order.workflow import OrderWorkflow
from orchestration.settings import Settings
from orchestration.shipping.workflow import ShippingWorkflow
from orchestration.temporal_client import connect_options, ensure_search_attributes
from orchestration.tables import Event, Order, Payment
from web.overview import (
    HISTORY as OVERVIEW_HISTORY,
    OPEN_ORDERS_LOOKBACK,
    AdmissionSnapshot,
    Overview,
    overview_from_rows,
)
from web.summary_cache import RefreshingCache

# A web request waits this long for one dependency call; beyond that it answers 503 instead of
# keeping the caller (and a server slot) waiting.
CALL_TIMEOUT = timedelta(seconds=5)
CONNECT_TIMEOUT_SECONDS = 5.0
RECONNECT_PAUSE_SECONDS = 2.0
# The SDK retries an unreachable server for about ten seconds by default; a web request gives up
# sooner and lets the caller retry.
WEB_RETRY_CONFIG = RetryConfig(max_retries=2, max_elapsed_time_millis=2000)
# A closed order's summary never changes; this many are kept so that a board asks Temporal about
# a finished order once, not on every page view.
FINAL_SUMMARIES_KEPT = 2000
# A board row shows the status Temporal gave, refreshed behind the requests once older than
# LIVE_SUMMARY_REFRESH_SECONDS (see web/summary_cache.py); rows poll every second, so what a row
# shows is about a second old. When the machine is overloaded a refresh can take seconds: the
# row then still answers at once, saying how old its status is, up to
# LIVE_SUMMARY_MAX_AGE_SECONDS, past which a request waits for a fresh status or its error.
LIVE_SUMMARY_REFRESH_SECONDS = 0.5
LIVE_SUMMARY_MAX_AGE_SECONDS = 30.0
LIVE_SUMMARIES_KEPT = 2000
# Background refreshes asked of Temporal at once; rows wait for their turn rather than flood it.
LIVE_SUMMARY_REFRESHES = 16
# One page of the board asks Temporal about this many orders at a time, so that a page full of
# orders in flight does not flood the server.
SUMMARY_CONCURRENCY = 8
# The order page lists at most this many events (each failed attempt is one).
MAX_EVENTS_LISTED = 500
# A status reads at most this many of an order's newest failed attempts (about a dozen is usual).
MAX_FAILURES_READ = 200
# An operator action is a workflow update, which a worker must accept: a worker answers within
# milliseconds, so waiting longer than this means none runs (restarting), and the action goes
# as a signal instead. The answer then waits for the outcome, which may take a carrier call or a
# refund, and comes within the order's 15 s in any case.
UPDATE_ACCEPT_TIMEOUT = timedelta(seconds=3)
UPDATE_RESULT_TIMEOUT = timedelta(seconds=20)
ACTION_WORDS = {"approve": "approved", "cancel": "cancelled", "update_address": "given a new address"}


class OrderNotFound(Exception):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"Order {order_id} does not exist.")
        self.order_id = order_id


class OrderConflict(Exception):
    """The request contradicts what exists already (duplicate order or payment id)."""


class ActionNotAllowed(Exception):
    """The order does not accept this operator action in its current state."""


# An outage the system rides out by itself (PostgreSQL restarting, a worker coming back) passes
# within seconds, and after a failed connect to Temporal the next attempt waits
# RECONNECT_PAUSE_SECONDS anyway: a caller asking again sooner only adds load.
OUTAGE_RETRY_AFTER_SECONDS = 2


class DependencyUnavailable(Exception):
    """Temporal or PostgreSQL did not answer, or the system is full; the request may be sent
    again after `retry_after_seconds`. The message is a sentence for the person waiting."""

    def __init__(
        self, component: str, message: str, retry_after_seconds: int = OUTAGE_RETRY_AFTER_SECONDS
    ) -> None:
        super().__init__(message)
        self.component = component
        self.retry_after_seconds = retry_after_seconds


# Orders end within 15 s, and at the limit about one ends every few hundred milliseconds, so a
# refused start may try again almost at once.
AT_CAPACITY_RETRY_AFTER_SECONDS = 1
# Steps run by an activity (ship_order runs the shipping workflow, manual_review waits).
ACTIVITY_STEPS = frozenset(ORDER_STEPS + COMPENSATION_STEPS + SHIPPING_STEPS) - {
    "ship_order",
    "manual_review",
}
# Orders doing work: running, and not parked waiting for a person (see _check_capacity).
ACTIVE_ORDERS_QUERY = (
    "WorkflowType = 'OrderWorkflow' AND ExecutionStatus = 'Running' AND "
    f"{ORDER_PARKED_ATTRIBUTE.name} = false"
)
IN_FLIGHT_RECOUNT_SECONDS = 0.1
# The overview is computed at most this often, however many boards ask for it (one database
# query each time); a board polls it every 2 s.
OVERVIEW_REFRESH_SECONDS = 1.0
OVERVIEW_MAX_AGE_SECONDS = 10.0


@dataclass
class StartedOrder:
    order_id: str
    workflow_id: str
    run_id: str
    deadline_seconds: float


@dataclass
class ActionOutcome:
    """What an operator action did: the workflow's answer, or why there is none yet."""

    action: str
    result: Optional[ActionResult] = None
    queued: bool = False
    """No worker took the update in time; the action was sent as a signal, to be run later."""
    pending: bool = False
    """Accepted, but its outcome took longer than UPDATE_RESULT_TIMEOUT to come."""

    def sentence(self, order_id: str) -> str:
        """The outcome in words, for the operator."""
        if self.result is not None:
            return f"Order {order_id}: {self.result.message}."
        if self.queued:
            return (
                f"No worker took the action within {UPDATE_ACCEPT_TIMEOUT.total_seconds():g} s "
                "(workers may be restarting); it is queued and runs as soon as a worker is back. "
                f"Follow GET /orders/{order_id}/status."
            )
        return (
            "The action was accepted; its outcome is taking longer than "
            f"{UPDATE_RESULT_TIMEOUT.total_seconds():g} s. Follow GET /orders/{order_id}/status."
        )


@dataclass
class OrderSummary:
    """What one board row needs: the workflow's status and the steps retrying right now."""

    status: OrderStatus
    closed: bool
    """The workflow has ended, so `status` is final."""
    retrying: list[RetryingStep]


@dataclass
class OrderRecord:
    """What the database holds about one order. `order` is None until ReceiveOrder succeeded."""

    order: Optional[dict[str, Any]]
    payments: list[dict[str, Any]]
    events: list[dict[str, Any]]


def workflow_id_for(order_id: str) -> str:
    return f"order-{order_id}"


def shipping_workflow_id_for(order_id: str, shipping_attempt: int) -> str:
    """The id OrderWorkflow gives the shipping child of that attempt."""
    return f"{workflow_id_for(order_id)}-shipping-{shipping_attempt}"


class TemporalConnection:
    """The Temporal client: the injected one, or one connected on first use and then kept.

    Connecting lazily lets the web server start (and report itself unhealthy) while Temporal is
    still down. A failed attempt is not cached, but for a short pause after it requests fail at
    once instead of each waiting for an attempt of its own."""

    def __init__(self, settings: Settings, client: Optional[Client] = None) -> None:
        self._settings = settings.temporal
        self._client = client
        self._lock = asyncio.Lock()
        self._failed_at = -math.inf

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                if time.monotonic() - self._failed_at < RECONNECT_PAUSE_SECONDS:
                    raise self._unavailable()
                try:
                    self._client = await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT_SECONDS)
                except (RuntimeError, TimeoutError, RPCError) as err:
                    self._failed_at = time.monotonic()
                    raise self._unavailable() from err
        return self._client

    async def _connect(self) -> Client:
        client = await Client.connect(
            self._settings.address, **connect_options(self._settings), retry_config=WEB_RETRY_CONFIG
        )
        # Orders are started with it; an unknown attribute would fail the start.
        await ensure_search_attributes(client)
        return client

    def _unavailable(self) -> DependencyUnavailable:
        return DependencyUnavailable(
            "temporal", f"Temporal at {self._settings.address} is unavailable; try again later."
        )


_TEMPORAL_TIMED_OUT = (
    f"Temporal did not answer within {CALL_TIMEOUT.total_seconds():g} s (a worker may be "
    "restarting, or the system is busy)"
)
# Temporal's failures that pass by themselves, each with the start of a sentence for the person
# waiting; the technical message goes to the log with the error's cause.
_TEMPORAL_OUTAGES = {
    RPCStatusCode.UNAVAILABLE: "Temporal cannot be reached",
    # A query the server held until our deadline because no worker took it ("query timed out
    # before a worker could process it"), or any call cut at our rpc_timeout ("Timeout
    # expired"): what a status query gets while no order worker runs.
    RPCStatusCode.DEADLINE_EXCEEDED: _TEMPORAL_TIMED_OUT,
    RPCStatusCode.CANCELLED: _TEMPORAL_TIMED_OUT,
    # The server shedding queries under load ("consistent query buffer is full").
    RPCStatusCode.RESOURCE_EXHAUSTED: "Temporal is too busy to answer",
    # A query while the workflow's task is failing and being retried, e.g. after a worker died.
    RPCStatusCode.FAILED_PRECONDITION: "The order's workflow cannot answer while it recovers",
}


@asynccontextmanager
async def _temporal_call(order_id: Optional[str] = None) -> AsyncIterator[None]:
    """Turn Temporal's RPC failures into the service's exceptions."""
    try:
        yield
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND and order_id is not None:
            raise OrderNotFound(order_id) from err
        if (reason := _TEMPORAL_OUTAGES.get(err.status)) is not None:
            raise DependencyUnavailable(
                "temporal", f"{reason}; try again in {OUTAGE_RETRY_AFTER_SECONDS} seconds."
            ) from err
        raise


@asynccontextmanager
async def _database_call() -> AsyncIterator[None]:
    """Turn losing PostgreSQL into DependencyUnavailable: refused connections while it is down
    (OSError), "the database system is shutting down / starting up" (OperatorInterventionError),
    and a pooled connection closed under a running query by a restart or pg_terminate_backend
    (ConnectionDoesNotExistError, a PostgresConnectionError; InterfaceError once closed)."""
    try:
        yield
    except (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.OperatorInterventionError,
        asyncpg.exceptions.InternalClientError,
    ) as err:
        raise DependencyUnavailable(
            "database",
            "The database did not answer (it may be restarting); "
            f"try again in {OUTAGE_RETRY_AFTER_SECONDS} seconds.",
        ) from err


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


def _order_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "state": row["state"],
        "reason": row["reason"],
        "payment_id": row["payment_id"],
        "address": row["address_json"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


class OrderService:
    def __init__(self, settings: Settings, temporal: TemporalConnection) -> None:
        self._settings = settings
        self._temporal = temporal
        self._final_summaries: OrderedDict[str, OrderSummary] = OrderedDict()
        self._live_summaries: RefreshingCache[str, OrderSummary] = RefreshingCache(
            self._load_summary,
            refresh_after=LIVE_SUMMARY_REFRESH_SECONDS,
            max_age=LIVE_SUMMARY_MAX_AGE_SECONDS,
            max_entries=LIVE_SUMMARIES_KEPT,
            max_concurrent_refreshes=LIVE_SUMMARY_REFRESHES,
        )
        self._in_flight: tuple[float, int] = (-math.inf, 0)
        """(monotonic time of the last count, running orders then plus starts since)."""
        self._recount = asyncio.Lock()
        self._waiting_starts: list[object] = []
        """Starts waiting for a free place, first come first."""
        self._refused_at: deque[float] = deque()
        """When starts were refused at capacity (monotonic), for the overview."""
        self._overview: RefreshingCache[str, Overview] = RefreshingCache(
            lambda _: self._load_overview(),
            refresh_after=OVERVIEW_REFRESH_SECONDS,
            max_age=OVERVIEW_MAX_AGE_SECONDS,
            max_entries=1,
            max_concurrent_refreshes=1,
        )

    async def _order_handle(self, order_id: str) -> WorkflowHandle[OrderWorkflow, OrderStatus]:
        client = await self._temporal.client()
        return client.get_workflow_handle_for(OrderWorkflow.run, workflow_id_for(order_id))

    async def start_order(
        self, order_id: str, payment_id: str, items: list[Item], address: Optional[Address]
    ) -> StartedOrder:
        client = await self._temporal.client()
        workflow_id = workflow_id_for(order_id)
        policy = self._settings.order_policy
        await self._check_unused(order_id, payment_id)
        await self._check_capacity(client)
        try:
            async with _temporal_call():
                handle = await client.start_workflow(
                    OrderWorkflow.run,
                    OrderInput(
                        order_id=order_id,
                        payment_id=payment_id,
                        items=items,
                        address=address,
                        policy=policy,
                        shipping_task_queue=self._settings.temporal.shipping_task_queue,
                    ),
                    id=workflow_id,
                    task_queue=self._settings.temporal.orders_task_queue,
                    task_timeout=timedelta(seconds=policy.workflow_task_timeout_seconds),
                    # Counted as doing work (admission) from its first moment.
                    search_attributes=TypedSearchAttributes(
                        [SearchAttributePair(ORDER_PARKED_ATTRIBUTE, False)]
                    ),
                    # The workflow id is the order's identity: never run one order twice, even
                    # after the first run has closed.
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    rpc_timeout=CALL_TIMEOUT,
                )
        except WorkflowAlreadyStartedError as err:
            raise OrderConflict(f"Order {order_id} already exists.") from err
        return StartedOrder(
            order_id=order_id,
            workflow_id=workflow_id,
            run_id=handle.result_run_id or "",
            deadline_seconds=policy.deadline_seconds,
        )

    async def _check_capacity(self, client: Client) -> None:
        """Admit a new order once fewer than MAX_ORDERS_IN_FLIGHT are doing work. Past what the
        machine can carry, every order would be late; holding the newest back keeps the
        15-second promise for the ones already accepted. Orders parked at review, waiting for a
        person (an approval or an address), cost the machine nothing and hold no place. A start
        waits up to ADMISSION_WAIT_SECONDS for a free place, first come first, and is then
        refused with Retry-After: a burst is absorbed without the caller retrying, and callers
        retrying in a loop cost the busy machine more than callers waiting quietly. The count
        comes from Temporal's visibility (the OrderParked search attribute), so it holds across
        web replicas; starts racing each other may overshoot it by a few."""
        limit = self._settings.web.max_orders_in_flight
        if limit <= 0:
            return
        turn = object()
        self._waiting_starts.append(turn)
        give_up_at = time.monotonic() + self._settings.web.admission_wait_seconds
        try:
            while True:
                running = await self._orders_in_flight(client)
                if self._waiting_starts.index(turn) < limit - running:
                    self._in_flight = (self._in_flight[0], running + 1)
                    return
                if time.monotonic() >= give_up_at:
                    self._refused_at.append(time.monotonic())
                    raise DependencyUnavailable(
                        "capacity",
                        f"{running} orders are being processed, the most this system takes at once "
                        f"({limit}), and none ended within "
                        f"{self._settings.web.admission_wait_seconds:g} s; try again in a moment.",
                        retry_after_seconds=AT_CAPACITY_RETRY_AFTER_SECONDS,
                    )
                await asyncio.sleep(IN_FLIGHT_RECOUNT_SECONDS)
        finally:
            self._waiting_starts.remove(turn)

    async def _orders_in_flight(self, client: Client) -> int:
        """Running orders, counted by Temporal at most every IN_FLIGHT_RECOUNT_SECONDS; in
        between, the last count plus the starts this process accepted since. At capacity every
        waiting start asks again and again, and a count per question would add load just when
        there is least room for it. Questions arriving during a count wait for it rather than
        each start one of their own."""
        counted_at, count = self._in_flight
        if time.monotonic() - counted_at < IN_FLIGHT_RECOUNT_SECONDS:
            return count
        async with self._recount:
            counted_at, count = self._in_flight
            if time.monotonic() - counted_at < IN_FLIGHT_RECOUNT_SECONDS:
                return count
            async with _temporal_call():
                running = await client.count_workflows(
                    ACTIVE_ORDERS_QUERY, rpc_timeout=CALL_TIMEOUT
                )
            self._in_flight = (time.monotonic(), running.count)
            return running.count

    async def _check_unused(self, order_id: str, payment_id: str) -> None:
        """Refuse a known order id or payment id. The workflow records both only once it has
        received the order, so a payment id whose order started a moment ago passes here; the
        charge step still never charges one payment id for two orders (the second one fails)."""
        async with _database_call():
            if await Order.exists().where(Order.id == order_id):
                raise OrderConflict(f"Order {order_id} already exists.")
            payment_owner = (
                await Payment.select(Payment.order_id)
                .where(Payment.payment_id == payment_id)
                .first()
                or await Order.select(Order.id.as_alias("order_id"))
                .where(Order.payment_id == payment_id)
                .first()
            )
        if payment_owner is not None:
            raise OrderConflict(
                f"Payment id {payment_id} is already used by order {payment_owner['order_id']}."
            )

    async def approve(self, order_id: str) -> ActionOutcome:
        return await self._act(order_id, "approve", OrderWorkflow.approve_update, OrderWorkflow.approve)

    async def cancel(self, order_id: str, reason: Optional[str]) -> ActionOutcome:
        request = CancelOrder(reason) if reason else CancelOrder()
        return await self._act(
            order_id, "cancel", OrderWorkflow.cancel_update, OrderWorkflow.cancel_order, request
        )

    async def update_address(self, order_id: str, address: Address) -> ActionOutcome:
        return await self._act(
            order_id,
            "update_address",
            OrderWorkflow.update_address_update,
            OrderWorkflow.update_address,
            AddressUpdate(address),
        )

    async def _act(self, order_id: str, action: str, update, signal, *args: Any) -> ActionOutcome:
        """Send an operator action as a workflow update and answer with its outcome; a refusal
        (the update's validator, or the action failing) raises ActionNotAllowed with the
        workflow's own reason.

        An update needs a worker to run it. When none accepts it within UPDATE_ACCEPT_TIMEOUT
        (workers restarting), the action goes as the signal of the same name instead, which
        Temporal keeps until a worker runs it: an operator's action is never lost. Should the
        update still be delivered later as well, the workflow takes the same action once."""
        handle = await self._order_handle(order_id)
        try:
            async with _temporal_call(order_id):
                try:
                    accepted = await handle.start_update(
                        update,
                        *args,
                        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                        rpc_timeout=UPDATE_ACCEPT_TIMEOUT,
                    )
                except WorkflowUpdateRPCTimeoutOrCancelledError:
                    await handle.signal(signal, *args, rpc_timeout=CALL_TIMEOUT)
                    return ActionOutcome(action, queued=True)
                try:
                    result = await accepted.result(rpc_timeout=UPDATE_RESULT_TIMEOUT)
                except WorkflowUpdateRPCTimeoutOrCancelledError:
                    return ActionOutcome(action, pending=True)
        except WorkflowUpdateFailedError as err:
            raise ActionNotAllowed(
                f"Order {order_id} cannot be {ACTION_WORDS[action]} now: {err.cause}."
            ) from err
        except OrderNotFound:
            # An update to a workflow that has ended answers NOT_FOUND too; say why instead.
            final = await self._closed_status(handle)
            if final is None:
                raise
            raise ActionNotAllowed(
                f"Order {order_id} cannot be {ACTION_WORDS[action]} now: it is already "
                f"{final.state}."
            ) from None
        return ActionOutcome(action, result=result)

    async def _closed_status(
        self, handle: WorkflowHandle[OrderWorkflow, OrderStatus]
    ) -> Optional[OrderStatus]:
        """The final status of an order whose workflow has closed; None when there is no such
        workflow (or it still runs)."""
        try:
            async with _temporal_call():
                description = await handle.describe(rpc_timeout=CALL_TIMEOUT)
                if description.status == WorkflowExecutionStatus.RUNNING:
                    return None
                return await self._final_status(handle)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def order_status(self, order_id: str, wait_seconds: float = 0) -> dict[str, Any]:
        """The workflow's own status (and its running shipping attempt's), plus the attempts
        of the steps still retrying, from the database. With `wait_seconds`, first wait that
        long at most for the order to end."""
        handle = await self._order_handle(order_id)
        async with _temporal_call(order_id):
            final = await self._wait_for_end(handle, wait_seconds) if wait_seconds > 0 else None
            status, closed = (final, True) if final is not None else await self._read_status(handle)
        shipping = None
        if not closed and status.shipping_workflow_id:
            shipping = await self.shipping_status(status.shipping_workflow_id)
        failures = [] if closed else await self._failed_attempts(order_id)
        shipping_step = shipping["current_step"] if shipping else None
        result = dataclasses.asdict(status)
        result["live"] = {
            "workflow_id": handle.id,
            "execution_status": "COMPLETED" if closed else "RUNNING",
            "retrying": [
                dataclasses.asdict(step) for step in retrying_steps(status, failures, shipping_step)
            ],
        }
        result["shipping"] = shipping
        return result

    async def _read_status(
        self, handle: WorkflowHandle[OrderWorkflow, OrderStatus]
    ) -> tuple[OrderStatus, bool]:
        """The status and whether the workflow has closed: the query while it runs, its result
        once it has (no worker has to replay the history to answer then)."""
        status = await self._open_status(handle)
        if status is not None:
            return status, False
        return await self._final_status(handle), True

    async def _failed_attempts(self, order_id: str) -> list[dict[str, Any]]:
        """The order's recorded failed attempts, oldest first (the newest MAX_FAILURES_READ)."""
        async with _database_call():
            rows = (
                await Event.select(Event.payload_json, Event.ts)
                .where((Event.order_id == order_id) & (Event.type == ATTEMPT_FAILED))
                .order_by(Event.id, ascending=False)
                .limit(MAX_FAILURES_READ)
                .output(load_json=True)
            )
        return [{**row["payload_json"], "at": row["ts"].isoformat()} for row in reversed(rows)]

    @staticmethod
    async def _wait_for_end(
        handle: WorkflowHandle[OrderWorkflow, OrderStatus], wait_seconds: float
    ) -> Optional[OrderStatus]:
        """The final status once the workflow completes, or None when the time is up first or
        it closed without a result (terminated). One long poll for the close event, held by the
        server, where polling would send the busy workers a query each time."""
        try:
            return await asyncio.wait_for(handle.result(), wait_seconds)
        except (asyncio.TimeoutError, WorkflowFailureError):
            return None

    async def order_summary(self, order_id: str, *, fresh: bool = False) -> OrderSummary:
        """The status of one order for a board row.

        An open order's summary comes from the live cache: at most LIVE_SUMMARY_MAX_AGE_SECONDS
        old, usually about one row poll, unless `fresh` (after an operator action the row must
        show its effect). Once the workflow has closed its summary is final and kept, so a
        finished order costs Temporal nothing afterwards."""
        if (final := self._final_summaries.get(order_id)) is not None:
            self._final_summaries.move_to_end(order_id)
            return final
        return await self._live_summaries.get(order_id, fresh=fresh)

    def summary_age(self, order_id: str) -> Optional[float]:
        """Seconds since the live summary of an open order was asked of Temporal; 0 for a
        closed order (its summary is final); None when none is kept."""
        if order_id in self._final_summaries:
            return 0.0
        return self._live_summaries.age(order_id)

    async def _load_summary(self, order_id: str) -> OrderSummary:
        """The status query with the order's failed attempts from the database, read
        together; the workflow's result once it has closed."""
        handle = await self._order_handle(order_id)
        async with _temporal_call(order_id):
            (status, closed), failures = await asyncio.gather(
                self._read_status(handle), self._failed_attempts(order_id)
            )
        if not closed:
            return OrderSummary(status, False, retrying_steps(status, failures))
        final = OrderSummary(status, True, [])
        self._final_summaries[order_id] = final
        while len(self._final_summaries) > FINAL_SUMMARIES_KEPT:
            self._final_summaries.popitem(last=False)
        return final

    @staticmethod
    async def _open_status(
        handle: WorkflowHandle[OrderWorkflow, OrderStatus],
    ) -> Optional[OrderStatus]:
        """The status query, or None when the workflow has closed meanwhile."""
        try:
            return await handle.query(
                OrderWorkflow.status,
                reject_condition=QueryRejectCondition.NOT_OPEN,
                rpc_timeout=CALL_TIMEOUT,
            )
        except WorkflowQueryRejectedError:
            return None

    @staticmethod
    async def _final_status(handle: WorkflowHandle[OrderWorkflow, OrderStatus]) -> OrderStatus:
        try:
            return await handle.result(rpc_timeout=CALL_TIMEOUT)
        except WorkflowFailureError:
            # Terminated or timed out by Temporal: there is no result, but a replay still
            # answers the query.
            return await handle.query(OrderWorkflow.status, rpc_timeout=CALL_TIMEOUT)

    async def shipping_status(self, workflow_id: str) -> Optional[dict[str, Any]]:
        """The status of one shipping attempt, also after it has closed (a shipping worker then
        replays it to answer); None when there is no such workflow."""
        client = await self._temporal.client()
        handle = client.get_workflow_handle_for(ShippingWorkflow.run, workflow_id)
        try:
            async with _temporal_call():
                status = await handle.query(ShippingWorkflow.status, rpc_timeout=CALL_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        return dataclasses.asdict(status)

    async def order_summaries(self, order_ids: Iterable[str]) -> dict[str, Optional[OrderSummary]]:
        """Summaries of several orders, a few at a time. An order Temporal cannot report on now
        (unavailable, or its history already deleted) maps to None, so that a page can still
        show what the database knows."""
        limit = asyncio.Semaphore(SUMMARY_CONCURRENCY)

        async def summary(order_id: str) -> Optional[OrderSummary]:
            async with limit:
                try:
                    return await self.order_summary(order_id)
                except (OrderNotFound, DependencyUnavailable):
                    return None

        ids = list(order_ids)
        return dict(zip(ids, await asyncio.gather(*(summary(order_id) for order_id in ids))))

    async def overview(self) -> Overview:
        """How the desk is doing now (web/overview.py), at most OVERVIEW_REFRESH_SECONDS old."""
        return await self._overview.get("overview")

    async def _load_overview(self) -> Overview:
        window = self._settings.web.overview_window_seconds
        now = datetime.now(timezone.utc)
        async with _database_call():
            rows = await Order.raw(
                "SELECT state, address_json IS NULL AS no_address, started_at, finished_at, "
                "created_at FROM orders WHERE finished_at >= {} "
                "OR (finished_at IS NULL AND created_at >= {})",
                now - OVERVIEW_HISTORY,
                now - OPEN_ORDERS_LOOKBACK,
            )
        while self._refused_at and self._refused_at[0] < time.monotonic() - window:
            self._refused_at.popleft()
        counted_at, count = self._in_flight
        admission = AdmissionSnapshot(
            limit=self._settings.web.max_orders_in_flight,
            in_use=None if counted_at == -math.inf else count,
            waiting=len(self._waiting_starts),
            refused_in_window=len(self._refused_at),
        )
        return overview_from_rows(
            rows, now, window, self._settings.order_policy.deadline_seconds, admission
        )

    async def list_orders(self, state: Optional[str], limit: int) -> list[dict[str, Any]]:
        return await self.recent_orders(None if state is None else [state], limit)

    async def recent_orders(
        self, states: Optional[Collection[str]], limit: int
    ) -> list[dict[str, Any]]:
        """Orders from the database, newest first, in any of `states` (None: in any state)."""
        query = Order.select().order_by(Order.created_at, ascending=False).limit(limit)
        if states is not None:
            query = query.where(Order.state.is_in(list(states)))
        async with _database_call():
            rows = await query.output(load_json=True)
        return [_order_row(row) for row in rows]

    async def order_record(self, order_id: str) -> OrderRecord:
        async with _database_call():
            order = await Order.select().where(Order.id == order_id).first().output(load_json=True)
            payments = await Payment.select().where(Payment.order_id == order_id).order_by(
                Payment.created_at
            )
            events = (
                await Event.select()
                .where(Event.order_id == order_id)
                .order_by(Event.ts)
                .order_by(Event.id)
                .limit(MAX_EVENTS_LISTED)
                .output(load_json=True)
            )
        return OrderRecord(
            order=None if order is None else {**_order_row(order), "items": order["items_json"]},
            payments=payments,
            events=events,
        )

    async def health(self) -> dict[str, dict[str, Any]]:
        """Whether each dependency answers now, with the error when it does not."""
        database, temporal = await asyncio.gather(self._database_health(), self._temporal_health())
        return {"database": database, "temporal": temporal}

    async def _database_health(self) -> dict[str, Any]:
        try:
            await asyncio.wait_for(Order.raw("SELECT 1"), CALL_TIMEOUT.total_seconds())
        except Exception as err:  # any failure means unhealthy, and is reported as such
            return {"ok": False, "error": str(err) or type(err).__name__}
        return {"ok": True}

    async def _temporal_health(self) -> dict[str, Any]:
        try:
            client = await self._temporal.client()
            await client.service_client.check_health(timeout=CALL_TIMEOUT)
        except Exception as err:  # any failure means unhealthy, and is reported as such
            return {"ok": False, "error": str(err) or type(err).__name__}
        return {"ok": True}
