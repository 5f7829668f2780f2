"""The workers' Prometheus endpoint: scraped over HTTP while a real order runs through real
activities and the real, unpatched flaky_call, on workers built like the worker processes.

The workers here have task queues of their own, so the session's other workers cannot take
their tasks and every attempt is counted on this endpoint."""

from __future__ import annotations

import asyncio
import re
import urllib.request
import uuid
from collections import Counter

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from orchestration.order.activities import OrderActivities
from orchestration.shipping.activities import ShippingActivities
from orchestration.metrics import (
    ATTEMPT_TIMED_OUT_ERROR,
    ATTEMPTS_METRIC,
    CANCELLED,
    FAILED,
    RUNNING_METRIC,
    SUCCEEDED,
    TIMED_OUT,
    ActivityCounter,
)
from orchestration.models import SHIPPED, SHIPPING_STEPS, Address, Item, OrderInput
from orchestration.order.workflow import OrderWorkflow
from orchestration.settings import get_settings
from orchestration.shipping.workflow import ShippingWorkflow
from orchestration.worker import build_worker
from tests.conftest import free_port

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
# The order's steps that are one activity each (manual_review and ship_order are not).
COUNTED_ORDER_STEPS = ("receive_order", "validate_order", "charge_payment", "mark_shipped")
HOME = Address(line1="1 Main St", city="Springfield", postal_code="12345", country="US")



def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """Every sample on the page as (name, labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        page = response.read().decode()
    samples = []
    for line in page.splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            samples.append((match["name"], labels, float(match["value"])))
    return samples


def running(port: int) -> float:
    return next(value for name, _, value in scrape(port) if name == RUNNING_METRIC)


def attempts(port: int) -> Counter[tuple[str, str]]:
    """Attempts by (step, outcome)."""
    return Counter(
        {(labels["step"], labels["outcome"]): int(value)
         for name, labels, value in scrape(port) if name == ATTEMPTS_METRIC}
    )


def orders_finished(port: int) -> Counter[str]:
    """Orders finished by final state, from the workflow meter (labels add the task queue)."""
    finished: Counter[str] = Counter()
    for name, labels, value in scrape(port):
        if name == "orders_finished":
            finished[labels["state"]] += int(value)
    return finished


@pytest.fixture(scope="module")
def metrics_runtime() -> tuple[Runtime, int]:
    """An SDK runtime serving Prometheus on a free port, as a worker with WORKER_METRICS_PORT has."""
    port = free_port()
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}")))
    return runtime, port


async def test_outcomes_are_counted_by_kind_of_ending(metrics_runtime):
    runtime, port = metrics_runtime
    counter = ActivityCounter(runtime.metric_meter)
    step = f"step_{uuid.uuid4().hex[:8]}"
    assert running(port) == 0

    with counter.activity_running(step):
        assert counter.running == 1
    with pytest.raises(ApplicationError):
        with counter.activity_running(step):
            raise ApplicationError("cut off", type=ATTEMPT_TIMED_OUT_ERROR)
    with pytest.raises(RuntimeError):
        with counter.activity_running(step):
            raise RuntimeError("database went away")
    with pytest.raises(asyncio.CancelledError):
        with counter.activity_running(step):
            raise asyncio.CancelledError()

    counted = attempts(port)
    assert [counted[step, outcome] for outcome in (SUCCEEDED, TIMED_OUT, FAILED, CANCELLED)] == [1, 1, 1, 1]
    assert counter.running == 0 and running(port) == 0


async def test_a_real_order_moves_the_counters_and_leaves_nothing_running(dev_server, database, metrics_runtime):
    runtime, port = metrics_runtime
    settings = get_settings()
    client = await Client.connect(
        dev_server.client.service_client.config.target_host,
        namespace=dev_server.client.namespace,
        runtime=runtime,
    )
    suffix = uuid.uuid4().hex[:8]
    orders_queue, shipping_queue = f"metrics-orders-{suffix}", f"metrics-shipping-{suffix}"
    counter = ActivityCounter(runtime.metric_meter)
    cut_off = settings.worker.attempt_timeout_seconds
    order_worker = build_worker(
        client, settings, orders_queue, [OrderWorkflow], OrderActivities(cut_off, counter).activities()
    )
    shipping_worker = build_worker(
        client, settings, shipping_queue, [ShippingWorkflow], ShippingActivities(cut_off, counter).activities()
    )
    before = attempts(port)
    finished_before = orders_finished(port)
    order_id = f"m-{suffix}"

    async with order_worker, shipping_worker:
        handle = await client.start_workflow(
            OrderWorkflow.run,
            OrderInput(
                order_id=order_id,
                payment_id=f"pay-{order_id}",
                items=[Item("ABC", 1)],
                address=HOME,
                policy=settings.order_policy,
                shipping_task_queue=shipping_queue,
            ),
            id=f"order-{order_id}",
            task_queue=orders_queue,
        )
        await handle.signal(OrderWorkflow.approve)
        status = await handle.result()
        # A hung flaky_call is cut off within the attempt timeout; give it that and a margin.
        await asyncio.sleep(settings.worker.attempt_timeout_seconds + 0.4)
        assert running(port) == 0 == counter.running

    moved = attempts(port) - before
    assert status.state == SHIPPED, status.reason
    attempts_by_step = {step.name: step.attempts for step in status.steps}
    for step in COUNTED_ORDER_STEPS:
        # Each step succeeded once, on its last attempt; the earlier ones ended as failed or
        # timed out, and the worker counted every one of them.
        assert moved[step, SUCCEEDED] == 1, (step, moved)
        assert sum(n for (name, _), n in moved.items() if name == step) >= attempts_by_step[step], (step, moved)
    for step in SHIPPING_STEPS:
        assert moved[step, SUCCEEDED] >= 1, (step, moved)
    # The workflow's own meter counts the order once, by its final state.
    assert orders_finished(port) - finished_before == Counter({SHIPPED: 1})
