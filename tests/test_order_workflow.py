"""Workflow logic on Temporal's time-skipping test server, with the activities replaced by
doubles (as Temporal's testing guide does). Timers and the 15-s deadline run in skipped time, so
a review timeout or a missed deadline takes a fraction of a second here."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from orchestration.models import (
    CANCELLED,
    DEADLINE_EXCEEDED,
    FAILED,
    REVIEW_TIMED_OUT,
    SHIPPED,
    Address,
    AddressUpdate,
    CancelOrder,
    ChargePaymentInput,
    CloseOrderInput,
    Item,
    OrderInput,
    OrderPolicy,
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
from orchestration.order_workflow import OrderWorkflow
from orchestration.shipping_workflow import ShippingWorkflow

HOME = Address(line1="1 Main St", city="Springfield", postal_code="12345", country="US")
OFFICE = Address(line1="9 Office Park", city="Shelbyville", postal_code="54321", country="US")


@dataclass
class FakeActivities:
    """Activity doubles under the real activity names. They record every call; a step can be
    held at a gate, and dispatch can be made to fail."""

    dispatch_failures: str = "none"  # none | first_attempt | always | no_address
    always_failing: str = ""
    """A step whose every attempt fails with a retryable error."""
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    reached: dict[str, asyncio.Event] = field(default_factory=dict)
    calls: list[tuple[str, object]] = field(default_factory=list)
    charged: bool = False

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
        self.calls.append((name, arg))
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
                raise ApplicationError("carrier rejected the booking", type="BusinessRuleViolation", non_retryable=True)
            if self.dispatch_failures == "no_address":
                raise ApplicationError("the order has no shipping address", type="BusinessRuleViolation", non_retryable=True)
            if self.dispatch_failures == "always":
                raise ApplicationError("carrier unreachable", type="CarrierDown")
            return StepResult(attempt=attempt)

        return [
            receive_order, validate_order, charge_payment, refund_payment, mark_shipped,
            record_address, close_order, record_event, prepare_package, dispatch_carrier,
        ]


@pytest.fixture
def fakes() -> FakeActivities:
    return FakeActivities()


@asynccontextmanager
async def running_order(env, fakes: FakeActivities, *, address=HOME, policy=None):
    """Start both workers on fresh task queues and one order; yields its workflow handle."""
    suffix = uuid.uuid4().hex[:8]
    orders_queue, shipping_queue = f"orders-{suffix}", f"shipping-{suffix}"
    activities = fakes.all()
    async with Worker(env.client, task_queue=orders_queue, workflows=[OrderWorkflow], activities=activities), Worker(
        env.client, task_queue=shipping_queue, workflows=[ShippingWorkflow], activities=activities
    ):
        order_id = f"wf-{suffix}"
        handle = await env.client.start_workflow(
            OrderWorkflow.run,
            OrderInput(
                order_id=order_id,
                payment_id=f"pay-{suffix}",
                items=[Item("ABC", 1)],
                address=address,
                policy=policy or OrderPolicy(),
                shipping_task_queue=shipping_queue,
            ),
            id=f"order-{order_id}",
            task_queue=orders_queue,
        )
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
    assert status.reason == REVIEW_TIMED_OUT
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


async def test_cancel_after_charge_refunds_the_payment(time_skipping, fakes):
    fakes.hold("prepare_package")
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        await fakes.reached["prepare_package"].wait()
        await handle.signal(OrderWorkflow.cancel_order, CancelOrder("out of stock"))
        status = await handle.result()
    assert status.state == CANCELLED
    assert status.reason == "out of stock"
    assert fakes.names().count("refund_payment") == 1
    assert status.payment.status == "refunded"
    assert "dispatch_carrier" not in fakes.names() and "mark_shipped" not in fakes.names()


async def test_address_update_before_dispatch_reaches_the_carrier(time_skipping, fakes):
    fakes.hold("prepare_package")
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        await fakes.reached["prepare_package"].wait()
        await handle.signal(OrderWorkflow.update_address, AddressUpdate(OFFICE))
        await asyncio.sleep(0.2)  # let the child take the forwarded address first
        fakes.release("prepare_package")
        status = await handle.result()
    assert status.state == SHIPPED
    assert [d.address for d in fakes.inputs("dispatch_carrier")] == [OFFICE]
    assert [r.address for r in fakes.inputs("record_address")] == [OFFICE]
    assert status.address == OFFICE


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


async def test_dispatch_failure_is_signalled_and_shipping_retried(time_skipping, fakes):
    fakes.dispatch_failures = "first_attempt"
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
    assert status.state == SHIPPED
    assert status.shipping_attempts == 2
    assert [d.shipping_attempt for d in fakes.inputs("dispatch_carrier")] == [1, 2]
    dispatch_errors = [e for e in status.errors if e.step == "dispatch_carrier"]
    assert dispatch_errors and "carrier rejected the booking" in dispatch_errors[0].message
    assert fakes.names().count("charge_payment") == 1


async def test_dispatch_failing_until_the_deadline_fails_and_refunds(time_skipping, fakes):
    fakes.dispatch_failures = "always"
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
    assert status.state == FAILED
    assert status.reason == DEADLINE_EXCEEDED
    assert status.shipping_attempts >= 2
    assert status.payment.status == "refunded"
    assert [close.state for close in fakes.inputs("close_order")] == [FAILED]
    assert seconds_taken(status) <= 15


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


async def test_order_without_address_fails_and_refunds_by_the_deadline(time_skipping, fakes):
    fakes.dispatch_failures = "no_address"
    policy = OrderPolicy(dispatch_budget_seconds=1.0)
    async with running_order(time_skipping, fakes, address=None, policy=policy) as handle:
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
    assert status.state == FAILED
    assert status.reason == DEADLINE_EXCEEDED
    assert any("no shipping address" in e.message for e in status.errors)
    assert status.payment.status == "refunded"
    assert timedelta(seconds=seconds_taken(status)) <= timedelta(seconds=15)


async def test_a_step_failing_until_its_budget_runs_out_fails_the_order_as_deadline_exceeded(time_skipping, fakes):
    """Temporal stops retrying when the next attempt would end past the step's budget; the
    order's reason is the deadline, not the last attempt's own error."""
    fakes.always_failing = "validate_order"
    async with running_order(time_skipping, fakes) as handle:
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
    assert status.state == FAILED
    assert status.reason == DEADLINE_EXCEEDED
    assert "charge_payment" not in fakes.names()
    assert fakes.names().count("validate_order") > 1
    assert seconds_taken(status) <= 15
