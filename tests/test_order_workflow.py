"""Workflow logic with the activities replaced by doubles (as Temporal's testing guide does), on
Temporal's time-skipping test server: timers and the 15-s deadline run in skipped time, so a
review timeout takes a fraction of a second here. Retries until a budget runs out run on the
real dev server instead (see SHORT_ORDER)."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Awaitable, Callable

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import (
    Interceptor,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from orchestration.attempts import check_step_budget
from orchestration.models import (
    APPROVAL,
    APPROVED,
    AWAITING_ADDRESS,
    AWAITING_APPROVAL,
    CANCELLED,
    PARKED_STATES,
    DEADLINE_EXCEEDED,
    DISPATCH_DONE,
    DISPATCH_STARTED,
    DISPATCH_WITHDRAWN,
    FAILED,
    SHIPPED,
    SHIPPING_ADDRESS,
    Address,
    AddressUpdate,
    CancelOrder,
    ChargePaymentInput,
    CloseOrderInput,
    Item,
    OrderInput,
    OrderRef,
    OrderStatus,
    PaymentResult,
    ReceiveOrderInput,
    RecordAddressInput,
    RecordEventInput,
    RefundPaymentInput,
    ShippingStepInput,
    StepResult,
)
from orchestration.order.workflow import OrderWorkflow
from orchestration.policy import OrderPolicy
from orchestration.shipping.workflow import ShippingWorkflow

HOME = Address(line1="1 Main St", city="Springfield", postal_code="12345", country="US")
OFFICE = Address(line1="9 Office Park", city="Shelbyville", postal_code="54321", country="US")


@dataclass
class FakeActivities:
    """Activity doubles under the real activity names. They record every call; a step can be
    held at a gate, and dispatch can be made to fail."""

    dispatch_failures: str = "none"
    """none | first_attempt (the first shipping attempt's carrier is down) | always | rejected"""
    always_failing: str = ""
    """A step whose every attempt fails with a retryable error."""
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    reached: dict[str, asyncio.Event] = field(default_factory=dict)
    calls: list[tuple[str, object]] = field(default_factory=list)
    charged: bool = False
    dispatched: bool = False
    dispatch_started: bool = False
    """A dispatch was started elsewhere (a stalled worker's stale run), not on record as done."""
    hooks: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    """Run when the step of that name is called."""

    def hold(self, step: str) -> None:
        self.gates[step] = asyncio.Event()
        self.reached[step] = asyncio.Event()

    def release(self, step: str) -> None:
        self.gates[step].set()

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def inputs(self, name: str) -> list:
        return [arg for called, arg in self.calls if called == name]

    async def _enter(self, name: str, arg) -> int:
        # As the real activities do: a step's retries end when its budget has run out.
        check_step_budget()
        self.calls.append((name, arg))
        if name in self.hooks:
            await self.hooks[name]()
        if name in self.gates:
            self.reached[name].set()
            await self.gates[name].wait()
        if name == self.always_failing:
            raise ApplicationError(f"{name}: service unavailable", type="ServiceUnavailable")
        return activity.info().attempt

    def all(self) -> list:
        @activity.defn(name="receive_order")
        async def receive_order(arg: ReceiveOrderInput) -> StepResult:
            return StepResult(attempt=await self._enter("receive_order", arg))

        @activity.defn(name="validate_order")
        async def validate_order(arg: OrderRef) -> StepResult:
            return StepResult(attempt=await self._enter("validate_order", arg))

        @activity.defn(name="charge_payment")
        async def charge_payment(arg: ChargePaymentInput) -> PaymentResult:
            attempt = await self._enter("charge_payment", arg)
            self.charged = True
            return PaymentResult(arg.payment_id, "charged", 1, attempt)

        @activity.defn(name="refund_payment")
        async def refund_payment(arg: RefundPaymentInput) -> PaymentResult:
            attempt = await self._enter("refund_payment", arg)
            status = "refunded" if self.charged else "not_charged"
            return PaymentResult(arg.payment_id, status, 1 if self.charged else 0, attempt)

        @activity.defn(name="charged_on_record")
        async def charged_on_record(arg: ChargePaymentInput) -> bool:
            await self._enter("charged_on_record", arg)
            return self.charged

        @activity.defn(name="mark_shipped")
        async def mark_shipped(arg: OrderRef) -> StepResult:
            return StepResult(attempt=await self._enter("mark_shipped", arg))

        @activity.defn(name="record_address")
        async def record_address(arg: RecordAddressInput) -> None:
            await self._enter("record_address", arg)

        @activity.defn(name="close_order")
        async def close_order(arg: CloseOrderInput) -> None:
            await self._enter("close_order", arg)

        @activity.defn(name="record_event")
        async def record_event(arg: RecordEventInput) -> None:
            await self._enter("record_event", arg)

        @activity.defn(name="prepare_package")
        async def prepare_package(arg: ShippingStepInput) -> StepResult:
            return StepResult(attempt=await self._enter("prepare_package", arg))

        @activity.defn(name="dispatch_carrier")
        async def dispatch_carrier(arg: ShippingStepInput) -> StepResult:
            attempt = await self._enter("dispatch_carrier", arg)
            if self.dispatch_failures == "first_attempt" and arg.shipping_attempt == 1:
                raise ApplicationError("carrier unreachable", type="CarrierDown")
            if self.dispatch_failures == "rejected":
                raise ApplicationError("the carrier does not serve this address", type="BusinessRuleViolation", non_retryable=True)
            if self.dispatch_failures == "always":
                raise ApplicationError("carrier unreachable", type="CarrierDown")
            self.dispatched = True
            return StepResult(attempt=attempt)

        @activity.defn(name="dispatched_on_record")
        async def dispatched_on_record(arg: ShippingStepInput) -> bool:
            await self._enter("dispatched_on_record", arg)
            return self.dispatched

        @activity.defn(name="withdraw_dispatch")
        async def withdraw_dispatch(arg: ShippingStepInput) -> str:
            await self._enter("withdraw_dispatch", arg)
            if self.dispatched:
                return DISPATCH_DONE
            return DISPATCH_STARTED if self.dispatch_started else DISPATCH_WITHDRAWN

        return [
            receive_order, validate_order, charge_payment, refund_payment, charged_on_record, mark_shipped,
            record_address, close_order, record_event, prepare_package, dispatch_carrier,
            dispatched_on_record, withdraw_dispatch,
        ]


@pytest.fixture
def fakes() -> FakeActivities:
    return FakeActivities()


@dataclass
class Queues:
    """Fresh task queues per test, so that no other test's worker takes its tasks."""

    orders: str = field(default_factory=lambda: f"orders-{uuid.uuid4().hex[:8]}")
    shipping: str = field(default_factory=lambda: f"shipping-{uuid.uuid4().hex[:8]}")


def order_worker(env, fakes: FakeActivities, queues: Queues, **options) -> Worker:
    return Worker(
        env.client, task_queue=queues.orders, workflows=[OrderWorkflow], activities=fakes.all(), **options
    )


def shipping_worker(env, fakes: FakeActivities, queues: Queues) -> Worker:
    return Worker(env.client, task_queue=queues.shipping, workflows=[ShippingWorkflow], activities=fakes.all())


async def start_order(env, queues: Queues, *, address=HOME, policy=None) -> WorkflowHandle:
    order_id = f"wf-{uuid.uuid4().hex[:8]}"
    return await env.client.start_workflow(
        OrderWorkflow.run,
        OrderInput(
            order_id=order_id,
            payment_id=f"pay-{order_id}",
            items=[Item("ABC", 1)],
            address=address,
            policy=policy or OrderPolicy(),
            shipping_task_queue=queues.shipping,
        ),
        id=f"order-{order_id}",
        task_queue=queues.orders,
        task_timeout=timedelta(seconds=(policy or OrderPolicy()).workflow_task_timeout_seconds),
    )


@asynccontextmanager
async def running_order(env, fakes: FakeActivities, *, address=HOME, policy=None, **worker_options):
    """Start both workers on fresh task queues and one order; yields its workflow handle."""
    queues = Queues()
    async with order_worker(env, fakes, queues, **worker_options), shipping_worker(env, fakes, queues):
        handle = await start_order(env, queues, address=address, policy=policy)
        try:
            yield handle
        finally:
            for gate in fakes.gates.values():
                gate.set()


async def wait_for_state(handle: WorkflowHandle, state: str) -> OrderStatus:
    for _ in range(200):
        status = await handle.query(OrderWorkflow.status)
        if status.state == state:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"order never reached {state}; last state {status.state}")


def seconds_taken(status: OrderStatus) -> float:
    return (datetime.fromisoformat(status.finished_at) - datetime.fromisoformat(status.started_at)).total_seconds()


def steps(status: OrderStatus) -> dict:
    return {step.name: step for step in status.steps}


async def test_happy_path_ships_and_reports_every_step(time_skipping, fakes):
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
    assert status.state == SHIPPED
    assert fakes.names()[:6] == [
        "receive_order", "validate_order", "charge_payment", "prepare_package", "dispatch_carrier", "mark_shipped",
    ]
    assert "refund_payment" not in fakes.names() and "close_order" not in fakes.names()
    by_name = steps(status)
    for name in ("receive_order", "validate_order", "manual_review", "charge_payment", "ship_order", "mark_shipped"):
        assert by_name[name].status == "completed" and by_name[name].attempts == 1, name
    assert status.payment.status == "charged"
    assert status.shipping_attempts == 1
    assert status.allowed_actions == []
    assert seconds_taken(status) <= 15


async def test_approve_sent_before_review_counts(time_skipping, fakes):
    fakes.hold("receive_order")
    async with running_order(time_skipping, fakes) as handle:
        await fakes.reached["receive_order"].wait()
        await handle.signal(OrderWorkflow.approve)
        fakes.release("receive_order")
        status = await handle.result()
    assert status.state == SHIPPED
    assert status.approved


async def test_review_without_approval_times_out_and_cancels(time_skipping, fakes):
    async with running_order(time_skipping, fakes) as handle:
        status = await handle.result()
    assert status.state == CANCELLED
    assert status.reason == "no approval before review ended"
    assert steps(status)["manual_review"].status == "timed_out"
    assert "charge_payment" not in fakes.names() and "refund_payment" not in fakes.names()
    assert [close.state for close in fakes.inputs("close_order")] == [CANCELLED]
    assert seconds_taken(status) <= 15


async def test_cancel_before_approval_cancels_without_charging(time_skipping, fakes):
    async with running_order(time_skipping, fakes) as handle:
        await wait_for_state(handle, "awaiting_approval")
        await handle.signal(OrderWorkflow.cancel_order, CancelOrder("customer changed their mind"))
        status = await handle.result()
    assert status.state == CANCELLED
    assert status.reason == "customer changed their mind"
    assert "charge_payment" not in fakes.names() and "refund_payment" not in fakes.names()
    assert status.payment.status == "pending"


async def cancelled_while_preparing(env, fakes: FakeActivities, reason: str) -> OrderStatus:
    """Run an approved order and cancel it while its package is being prepared; its final status."""
    fakes.hold("prepare_package")
    async with running_order(env, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        await fakes.reached["prepare_package"].wait()
        await handle.signal(OrderWorkflow.cancel_order, CancelOrder(reason))
        return await handle.result()


async def test_cancel_after_charge_refunds_the_payment(time_skipping, fakes):
    status = await cancelled_while_preparing(time_skipping, fakes, "out of stock")
    assert status.state == CANCELLED
    assert status.reason == "out of stock"
    assert fakes.names().count("refund_payment") == 1
    assert status.payment.status == "refunded"
    assert "dispatch_carrier" not in fakes.names() and "mark_shipped" not in fakes.names()


def history_at(env, fakes: FakeActivities, step: str) -> list[list[EventType.ValueType]]:
    """The event types in the order's history each time `step` is called, as it was then."""
    histories: list[list[EventType.ValueType]] = []

    async def record_history() -> None:
        history = await env.client.get_workflow_handle(activity.info().workflow_id).fetch_history()
        histories.append([event.event_type for event in history.events])

    fakes.hooks[step] = record_history
    return histories


async def test_a_cancel_is_in_the_history_before_the_order_refunds_and_closes(time_skipping, fakes):
    """An update the workflow accepts is in the history only once the task that accepted it
    completes. Refunding and closing in that same task, a worker killed before completing it
    lost the cancel but not its effects: the next run shipped the order the database called
    cancelled (found by the fault test). The order now ends that task first."""
    histories = history_at(time_skipping, fakes, "close_order")
    async with running_order(time_skipping, fakes) as handle:
        await wait_for_state(handle, "awaiting_approval")
        answer = await handle.execute_update(OrderWorkflow.cancel_update, CancelOrder("customer called"))
        status = await handle.result()
    assert answer.state == status.state == CANCELLED
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED in histories[0]


async def test_a_new_address_is_in_the_history_before_it_is_recorded(time_skipping, fakes):
    """As with a cancel: recorded in the task that accepted the update, a new address stayed in
    the database when a killed worker lost that task, and with it the update."""
    histories = history_at(time_skipping, fakes, "record_address")
    async with running_order(time_skipping, fakes) as handle:
        await wait_for_state(handle, "awaiting_approval")
        await handle.execute_update(OrderWorkflow.update_address_update, AddressUpdate(OFFICE))
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
    assert status.state == SHIPPED and status.address == OFFICE
    assert [update.address for update in fakes.inputs("record_address")] == [OFFICE]
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED in histories[0]


async def test_goods_a_lost_workflow_task_dispatched_make_a_later_cancel_refused(time_skipping, fakes):
    """A worker killed in the middle of a workflow task takes that task's local activities out
    of the history, not their effects: the carrier was called, and the shipping attempt, run
    again from its last completed task, now sees a cancel before its own dispatch. The goods
    left all the same (the database says so): the cancel is refused and the order ships."""
    fakes.dispatched = True  # on record, from the task the killed worker never completed
    status = await cancelled_while_preparing(time_skipping, fakes, "out of stock")
    assert status.state == SHIPPED
    assert status.payment.status == "charged"
    assert "dispatch_carrier" not in fakes.names() and "refund_payment" not in fakes.names()
    assert fakes.names().count("withdraw_dispatch") == 1


async def test_a_dispatch_started_elsewhere_is_seen_through_and_the_cancel_refused(time_skipping, fakes):
    """A shipping worker that stalled past its task timeout wakes and runs its stale copy of the
    attempt on: it claimed the dispatch and called the carrier, while the attempt, taken over
    elsewhere, saw a cancel first. The fault test's stalls found such goods dispatched for an
    order then cancelled and refunded. The cancel now finds the dispatch claimed, so the goods
    may be leaving: the attempt sees the dispatch through and the order ships."""
    fakes.dispatch_started = True  # claimed by the stalled worker, not on record as done yet
    status = await cancelled_while_preparing(time_skipping, fakes, "out of stock")
    assert status.state == SHIPPED
    assert status.payment.status == "charged"
    assert fakes.names().count("withdraw_dispatch") == 1
    assert fakes.names().count("dispatch_carrier") == 1 and "refund_payment" not in fakes.names()


async def test_address_change_while_the_package_is_prepared_is_refused_honestly(time_skipping, fakes):
    """A shipping attempt runs its steps as local activities inside one workflow task and sees
    a signal only between tasks: an address sent while the package is being prepared arrives
    after the carrier was called. The order says so instead of pretending it was taken."""
    fakes.hold("prepare_package")
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        await fakes.reached["prepare_package"].wait()
        update = asyncio.create_task(
            handle.execute_update(OrderWorkflow.update_address_update, AddressUpdate(OFFICE))
        )
        await asyncio.sleep(0.2)
        fakes.release("prepare_package")
        assert await update_refusal(update) == "the carrier had already been dispatched to the previous address"
        status = await handle.result()
    assert status.state == SHIPPED and status.address == HOME
    assert [d.address for d in fakes.inputs("dispatch_carrier")] == [HOME]


async def test_address_update_and_cancel_after_dispatch_are_refused(time_skipping, fakes):
    fakes.hold("mark_shipped")
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        await fakes.reached["mark_shipped"].wait()
        await handle.signal(OrderWorkflow.update_address, AddressUpdate(OFFICE))
        await handle.signal(OrderWorkflow.cancel_order, CancelOrder("too late"))
        during = await handle.query(OrderWorkflow.status)
        fakes.release("mark_shipped")
        status = await handle.result()
    assert during.allowed_actions == []
    assert status.state == SHIPPED
    assert status.address == HOME
    assert "record_address" not in fakes.names() and "refund_payment" not in fakes.names()
    refused = {event.event_type for event in fakes.inputs("record_event")}
    assert refused == {"update_address_refused", "cancel_order_refused"}
    assert {error.step for error in status.errors} >= {"update_address", "cancel_order"}


# A dispatch budget this short runs out after a few attempts of a carrier that is down.
# Steps are local activities: their retries run in the worker, in real time, which the
# time-skipping server neither sees nor skips (it may jump past a deadline while one retries).
# Tests of retries until a budget runs out therefore run on the real dev server, with an order
# whose budgets are short: a 3-s deadline, a dispatch budget that runs out after a few attempts.
SHORT_DISPATCH = OrderPolicy(dispatch_budget_seconds=0.3, retry_interval_seconds=0.05)
SHORT_ORDER = OrderPolicy(
    deadline_seconds=3.0,
    compensation_reserve_seconds=1.0,
    review_timeout_seconds=1.0,
    dispatch_budget_seconds=0.3,
    retry_interval_seconds=0.05,
)


async def test_dispatch_failure_is_signalled_and_shipping_retried(dev_server, fakes):
    fakes.dispatch_failures = "first_attempt"
    async with running_order(dev_server, fakes, policy=SHORT_DISPATCH) as handle:
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
    assert status.state == SHIPPED
    assert status.shipping_attempts == 2
    assert {d.shipping_attempt for d in fakes.inputs("dispatch_carrier")} == {1, 2}
    dispatch_errors = [e for e in status.errors if e.step == "dispatch_carrier"]
    assert dispatch_errors and "budget ran out" in dispatch_errors[0].message
    assert fakes.names().count("charge_payment") == 1


async def test_dispatch_failing_until_the_deadline_fails_and_refunds(dev_server, fakes):
    fakes.dispatch_failures = "always"
    async with running_order(dev_server, fakes, policy=SHORT_ORDER) as handle:
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
    assert status.state == FAILED
    assert status.reason == DEADLINE_EXCEEDED
    assert status.shipping_attempts >= 2
    assert status.payment.status == "refunded"
    assert [close.state for close in fakes.inputs("close_order")] == [FAILED]
    assert seconds_taken(status) <= SHORT_ORDER.deadline_seconds


async def test_duplicate_signals_are_harmless(time_skipping, fakes):
    fakes.hold("receive_order")
    async with running_order(time_skipping, fakes) as handle:
        for _ in range(3):
            await handle.signal(OrderWorkflow.approve)
        fakes.release("receive_order")
        status = await handle.result()
    assert status.state == SHIPPED
    assert fakes.names().count("charge_payment") == 1
    assert fakes.names().count("mark_shipped") == 1


async def test_duplicate_cancels_refund_once(time_skipping, fakes):
    fakes.hold("prepare_package")
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        await fakes.reached["prepare_package"].wait()
        for _ in range(3):
            await handle.signal(OrderWorkflow.cancel_order, CancelOrder("duplicate cancel"))
        status = await handle.result()
    assert status.state == CANCELLED
    assert fakes.names().count("refund_payment") == 1
    assert fakes.names().count("close_order") == 1


async def test_temporal_cancellation_is_handled_like_cancel_order(time_skipping, fakes):
    fakes.hold("prepare_package")
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        await fakes.reached["prepare_package"].wait()
        await handle.cancel()
        status = await handle.result()
    assert status.state == CANCELLED
    assert status.payment.status == "refunded"


async def test_a_step_failing_until_its_budget_runs_out_fails_the_order_as_deadline_exceeded(dev_server, fakes):
    """Temporal stops retrying when the next attempt would end past the step's budget; the
    order's reason is the deadline, not the last attempt's own error."""
    fakes.always_failing = "validate_order"
    async with running_order(dev_server, fakes, policy=SHORT_ORDER) as handle:
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
    assert status.state == FAILED
    assert status.reason == DEADLINE_EXCEEDED
    assert "charge_payment" not in fakes.names()
    assert fakes.names().count("validate_order") > 1
    assert seconds_taken(status) <= SHORT_ORDER.deadline_seconds


# An order that comes without a shipping address (the assignment's start carries none).


async def test_order_without_address_waits_after_approval_until_it_has_one(time_skipping, fakes):
    async with running_order(time_skipping, fakes, address=None) as handle:
        waiting = await wait_for_state(handle, AWAITING_APPROVAL)
        assert waiting.waiting_for == [APPROVAL, SHIPPING_ADDRESS]
        approved = await handle.execute_update(OrderWorkflow.approve_update)
        assert approved.state == AWAITING_ADDRESS
        assert approved.waiting_for == [SHIPPING_ADDRESS]
        assert "waits for its shipping address" in approved.message
        assert approved.allowed_actions == ["cancel", "update_address"]
        await asyncio.sleep(0.3)
        assert "charge_payment" not in fakes.names(), "no money moves without an address"
        addressed = await handle.execute_update(OrderWorkflow.update_address_update, AddressUpdate(HOME))
        # Past review at once: charged meanwhile, or further, while the address was recorded.
        assert addressed.state not in PARKED_STATES and addressed.waiting_for == []
        status = await handle.result()
    assert status.state == SHIPPED
    assert [d.address for d in fakes.inputs("dispatch_carrier")] == [HOME]


async def test_review_ending_without_an_address_cancels_without_charging(time_skipping, fakes):
    async with running_order(time_skipping, fakes, address=None) as handle:
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
    assert status.state == CANCELLED
    assert status.reason == "no shipping address before review ended"
    assert "charge_payment" not in fakes.names() and "refund_payment" not in fakes.names()
    assert "prepare_package" not in fakes.names()
    assert status.payment.status == "pending"
    assert seconds_taken(status) <= 15


async def test_review_ending_with_neither_names_both(time_skipping, fakes):
    async with running_order(time_skipping, fakes, address=None) as handle:
        status = await handle.result()
    assert status.state == CANCELLED
    assert status.reason == "no approval and no shipping address before review ended"


async def test_dispatch_refused_by_a_business_rule_fails_at_once_and_refunds(time_skipping, fakes):
    fakes.dispatch_failures = "rejected"
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
    assert status.state == FAILED
    assert status.reason == "dispatch refused: the carrier does not serve this address"
    assert status.shipping_attempts == 1, "a refusal is not retried"
    assert fakes.names().count("dispatch_carrier") == 1
    assert status.payment.status == "refunded"
    assert [close.state for close in fakes.inputs("close_order")] == [FAILED]


# Operator actions as updates: the answer says what happened, a refusal comes from the workflow.


async def update_refusal(update) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await update
    return failed.value.cause.message


async def test_approve_update_answers_with_the_state_it_moved_to_and_refuses_a_repeat(time_skipping, fakes):
    async with running_order(time_skipping, fakes) as handle:
        await wait_for_state(handle, AWAITING_APPROVAL)
        approved = await handle.execute_update(OrderWorkflow.approve_update)
        assert (approved.state, approved.message) == (APPROVED, "approved")
        assert await update_refusal(handle.execute_update(OrderWorkflow.approve_update)) == "it is already approved"
        status = await handle.result()
    assert status.state == SHIPPED
    assert not fakes.inputs("record_event"), "a refused update writes nothing"


async def test_cancel_update_answers_once_the_order_is_cancelled_and_refunded(time_skipping, fakes):
    fakes.hold("prepare_package")
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        await fakes.reached["prepare_package"].wait()
        cancelled = await handle.execute_update(OrderWorkflow.cancel_update, CancelOrder("out of stock"))
        status = await handle.result()
    assert (cancelled.state, cancelled.reason) == (CANCELLED, "out of stock")
    assert cancelled.message == "cancelled; the payment was refunded"
    assert status.payment.status == "refunded"


async def test_cancel_and_address_updates_after_dispatch_are_refused(time_skipping, fakes):
    fakes.hold("mark_shipped")
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        await fakes.reached["mark_shipped"].wait()
        too_late = "the carrier has already been dispatched"
        assert await update_refusal(handle.execute_update(OrderWorkflow.cancel_update, CancelOrder())) == too_late
        assert (
            await update_refusal(handle.execute_update(OrderWorkflow.update_address_update, AddressUpdate(OFFICE)))
            == too_late
        )
        fakes.release("mark_shipped")
        status = await handle.result()
    assert status.state == SHIPPED and status.address == HOME


async def signalled(env, workflow_id: str) -> bool:
    """Whether a workflow's history holds a signal (it has no worker to ask)."""
    try:
        history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # not started yet
            return False
        raise
    return any(event.HasField("workflow_execution_signaled_event_attributes") for event in history.events)


async def test_address_update_answers_once_the_shipping_attempt_has_it(time_skipping, fakes):
    """The attempt takes the address before its first step (its worker is not running yet, so
    the signal is its first news) and acknowledges it: the update answers then."""
    queues = Queues()
    async with order_worker(time_skipping, fakes, queues):
        handle = await start_order(time_skipping, queues)
        await handle.signal(OrderWorkflow.approve)
        await wait_for_state(handle, "shipping")
        update = asyncio.create_task(
            handle.execute_update(OrderWorkflow.update_address_update, AddressUpdate(OFFICE))
        )
        while not await signalled(time_skipping, f"{handle.id}-shipping-1"):
            await asyncio.sleep(0.05)
        assert not update.done(), "no answer before the attempt has the address"
        async with shipping_worker(time_skipping, fakes, queues):
            updated = await update
            assert updated.message == "address updated" and updated.address == OFFICE
            status = await handle.result()
    assert [d.address for d in fakes.inputs("dispatch_carrier")] == [OFFICE]
    assert status.state == SHIPPED and status.address == OFFICE


async def test_address_update_while_the_carrier_is_called_is_refused_once_dispatched(time_skipping, fakes):
    fakes.hold("dispatch_carrier")
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        await fakes.reached["dispatch_carrier"].wait()
        update = asyncio.create_task(
            handle.execute_update(OrderWorkflow.update_address_update, AddressUpdate(OFFICE))
        )
        await asyncio.sleep(0.3)
        assert not update.done(), "the answer waits for the carrier call to settle"
        fakes.release("dispatch_carrier")
        assert await update_refusal(update) == "the carrier had already been dispatched to the previous address"
        status = await handle.result()
    assert status.state == SHIPPED and status.address == HOME
    assert [d.address for d in fakes.inputs("dispatch_carrier")] == [HOME]
    assert [r.address for r in fakes.inputs("record_address")] == [OFFICE, HOME]


# Races between an address change and the shipping attempt (each failed before its fix).


class SlowChildStart(Interceptor):
    """Holds every child workflow start for a second of workflow time, so that a signal can
    arrive while the shipping attempt is being started (with its input already built)."""

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput):
        return _SlowChildStartInbound


class _SlowChildStartInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_SlowChildStartOutbound(outbound))


class _SlowChildStartOutbound(WorkflowOutboundInterceptor):
    async def start_child_workflow(self, input):
        await workflow.sleep(1)
        return await super().start_child_workflow(input)


async def test_address_changed_while_the_shipping_attempt_starts_reaches_the_carrier(time_skipping, fakes):
    queues = Queues()
    options = {"interceptors": [SlowChildStart()], "workflow_runner": UnsandboxedWorkflowRunner()}
    async with order_worker(time_skipping, fakes, queues, **options):
        handle = await start_order(time_skipping, queues)
        await handle.signal(OrderWorkflow.approve)
        await wait_for_state(handle, "shipping")
        await handle.signal(OrderWorkflow.update_address, AddressUpdate(OFFICE))
        # The attempt's worker starts once the address was sent on (or never, without the fix).
        for _ in range(100):
            if await signalled(time_skipping, f"{handle.id}-shipping-1"):
                break
            await asyncio.sleep(0.05)
        async with shipping_worker(time_skipping, fakes, queues):
            status = await handle.result()
    assert [d.address for d in fakes.inputs("dispatch_carrier")] == [OFFICE]
    assert status.state == SHIPPED and status.address == OFFICE
    assert not [e for e in status.errors if e.step == "update_address"], "nothing was refused"


async def test_a_cancel_arriving_while_the_carrier_is_called_never_calls_it_again(time_skipping, fakes):
    """The cancel reaches the shipping attempt with its last workflow task, which carries the
    carrier call's result: that result must stand (the call is not made again on replay)."""
    fakes.hold("dispatch_carrier")
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        await fakes.reached["dispatch_carrier"].wait()
        await handle.signal(OrderWorkflow.cancel_order, CancelOrder("too late"))
        await asyncio.sleep(0.2)
        fakes.release("dispatch_carrier")
        status = await handle.result()
    assert fakes.names().count("dispatch_carrier") == 1, "the carrier was called once"
    assert fakes.names().count("prepare_package") == 1
    assert status.state == SHIPPED
    assert status.payment.status == "charged"


async def test_address_change_racing_the_end_of_shipping_never_fails_the_order(time_skipping, fakes):
    """The change reaches the order in the same activation as its finished shipping attempt:
    forwarding it to the closed child fails, and must not fail the paid order."""
    fakes.hold("dispatch_carrier")
    queues = Queues()
    # No cache, hence no sticky queue: the second worker gets the order's next task at once.
    uncached = {"max_cached_workflows": 0}
    async with shipping_worker(time_skipping, fakes, queues):
        async with order_worker(time_skipping, fakes, queues, **uncached):
            handle = await start_order(time_skipping, queues)
            await handle.signal(OrderWorkflow.approve)
            await fakes.reached["dispatch_carrier"].wait()
        # The order's worker is gone: the order sees nothing until it is back.
        fakes.release("dispatch_carrier")
        await time_skipping.client.get_workflow_handle(f"{handle.id}-shipping-1").result()
        await handle.signal(OrderWorkflow.update_address, AddressUpdate(OFFICE))
        async with order_worker(time_skipping, fakes, queues, **uncached):
            status = await handle.result()
    assert status.state == SHIPPED
    assert status.address == HOME, "the carrier got the previous address"
    refusals = [event.event_type for event in fakes.inputs("record_event")]
    assert refusals == ["update_address_refused"]
