"""Everything the web layer asks of Temporal about orders: the connection, starting an order,
operator actions (updates, with the signal as fallback) and reading an order's status."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional

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
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.service import RetryConfig, RPCError, RPCStatusCode

from orchestration.logs import CORE_LOGGING
from orchestration.models import (
    ORDER_PARKED_ATTRIBUTE,
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
from web.problems import (
    CALL_TIMEOUT,
    ActionNotAllowed,
    DependencyUnavailable,
    OrderConflict,
    OrderNotFound,
    temporal_call,
)

CONNECT_TIMEOUT_SECONDS = 5.0
RECONNECT_PAUSE_SECONDS = 2.0
# The SDK retries an unreachable server for about ten seconds by default; a web request gives up
# sooner and lets the caller retry.
WEB_RETRY_CONFIG = RetryConfig(max_retries=2, max_elapsed_time_millis=2000)
# An operator action is a workflow update, which a worker must accept: a worker answers within
# milliseconds, so waiting longer than this means none runs (restarting), and the action goes
# as a signal instead. The answer then waits for the outcome, which may take a carrier call or a
# refund, and comes within the order's 15 s in any case.
UPDATE_ACCEPT_TIMEOUT = timedelta(seconds=3)
UPDATE_RESULT_TIMEOUT = timedelta(seconds=20)
ACTION_WORDS = {"approve": "approved", "cancel": "cancelled", "update_address": "given a new address"}

OrderHandle = WorkflowHandle[OrderWorkflow, OrderStatus]


def workflow_id_for(order_id: str) -> str:
    return f"order-{order_id}"


def shipping_workflow_id_for(order_id: str, shipping_attempt: int) -> str:
    """The id OrderWorkflow gives the shipping child of that attempt."""
    return f"{workflow_id_for(order_id)}-shipping-{shipping_attempt}"


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
            self._settings.address,
            **connect_options(self._settings),
            retry_config=WEB_RETRY_CONFIG,
            runtime=_client_runtime(),
        )
        # Orders are started with it; an unknown attribute would fail the start.
        await ensure_search_attributes(client)
        return client

    def _unavailable(self) -> DependencyUnavailable:
        return DependencyUnavailable(
            "temporal", f"Temporal at {self._settings.address} is unavailable; try again later."
        )


class TemporalGateway:
    """Orders in Temporal: start one, act on one, read one's status."""

    def __init__(self, settings: Settings, connection: TemporalConnection) -> None:
        self._settings = settings
        self.connection = connection

    async def order_handle(self, order_id: str) -> OrderHandle:
        client = await self.connection.client()
        return client.get_workflow_handle_for(OrderWorkflow.run, workflow_id_for(order_id))

    async def start(
        self, order_id: str, payment_id: str, items: list[Item], address: Optional[Address]
    ) -> StartedOrder:
        client = await self.connection.client()
        workflow_id = workflow_id_for(order_id)
        policy = self._settings.order_policy
        try:
            async with temporal_call():
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
        handle = await self.order_handle(order_id)
        try:
            async with temporal_call(order_id):
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

    async def _closed_status(self, handle: OrderHandle) -> Optional[OrderStatus]:
        """The final status of an order whose workflow has closed; None when there is no such
        workflow (or it still runs)."""
        try:
            async with temporal_call():
                description = await handle.describe(rpc_timeout=CALL_TIMEOUT)
                if description.status == WorkflowExecutionStatus.RUNNING:
                    return None
                return await _final_status(handle)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def status(self, order_id: str, wait_seconds: float = 0) -> tuple[OrderStatus, bool]:
        """The order's status and whether its workflow has closed: the status query while it
        runs, its result once it has (no worker has to replay the history to answer then).
        With `wait_seconds`, first wait that long at most for the order to end."""
        handle = await self.order_handle(order_id)
        async with temporal_call(order_id):
            if wait_seconds > 0 and (final := await _wait_for_end(handle, wait_seconds)):
                return final, True
            status = await _open_status(handle)
            if status is not None:
                return status, False
            return await _final_status(handle), True

    async def shipping_attempt_status(self, workflow_id: str) -> Optional[dict[str, Any]]:
        """The status of one shipping attempt (a child workflow), also after it has closed (a
        shipping worker then replays it to answer); None when there is no such workflow."""
        client = await self.connection.client()
        handle = client.get_workflow_handle_for(ShippingWorkflow.run, workflow_id)
        try:
            async with temporal_call():
                status = await handle.query(ShippingWorkflow.status, rpc_timeout=CALL_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        return dataclasses.asdict(status)


@functools.cache
def _client_runtime() -> Runtime:
    """The SDK runtime of this process's client: its core's warnings come out as JSON lines."""
    return Runtime(telemetry=TelemetryConfig(logging=CORE_LOGGING))


async def _wait_for_end(handle: OrderHandle, wait_seconds: float) -> Optional[OrderStatus]:
    """The final status once the workflow completes, or None when the time is up first or it
    closed without a result (terminated). One long poll for the close event, held by the
    server, where polling would send the busy workers a query each time."""
    try:
        return await asyncio.wait_for(handle.result(), wait_seconds)
    except (asyncio.TimeoutError, WorkflowFailureError):
        return None


async def _open_status(handle: OrderHandle) -> Optional[OrderStatus]:
    """The status query, or None when the workflow has closed meanwhile."""
    try:
        return await handle.query(
            OrderWorkflow.status,
            reject_condition=QueryRejectCondition.NOT_OPEN,
            rpc_timeout=CALL_TIMEOUT,
        )
    except WorkflowQueryRejectedError:
        return None


async def _final_status(handle: OrderHandle) -> OrderStatus:
    try:
        return await handle.result(rpc_timeout=CALL_TIMEOUT)
    except WorkflowFailureError:
        # Terminated or timed out by Temporal: there is no result, but a replay still answers
        # the query.
        return await handle.query(OrderWorkflow.status, rpc_timeout=CALL_TIMEOUT)
