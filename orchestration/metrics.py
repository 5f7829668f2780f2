"""Worker metrics: activity coroutines running right now, and activity attempts by outcome.

Usage: set WORKER_METRICS_PORT (the Procfile gives the order worker 9101, the shipping worker
9102), then

    curl -s 127.0.0.1:9101/metrics | grep ^order_activity

    order_activity_coroutines_running{service_name="temporal-core-sdk"} 0
    order_activity_attempts{outcome="succeeded",service_name="temporal-core-sdk",step="receive_order"} 12

The endpoint is the Prometheus exporter built into the Temporal SDK's runtime, so the worker
needs no extra package, and the same page carries the SDK's own worker metrics (task slots,
poll and execution latencies, all prefixed `temporal_`). `order_activity_coroutines_running`
counts activity methods from entry to exit: a hung flaky_call that outlived its cut-off would
show here even after Temporal has written its attempt off.
"""

from __future__ import annotations

import asyncio
import functools
from contextlib import contextmanager
from typing import Any, Awaitable, Callable, Iterator, Protocol, TypeVar

from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from orchestration.logs import CORE_LOGGING

RUNNING_METRIC = "order_activity_coroutines_running"
ATTEMPTS_METRIC = "order_activity_attempts"

SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
"""Temporal cancelled the activity: the workflow was cancelled, or the server timed it out."""

ATTEMPT_TIMED_OUT_ERROR = "AttemptTimedOut"
"""ApplicationError type of an attempt cut off inside the worker (see activities.py)."""

R = TypeVar("R")


def metrics_meter(port: int, host: str = "127.0.0.1") -> MetricMeter:
    """Serve Prometheus metrics on host:port from this process; port 0 means no endpoint.

    Must run before the process connects to Temporal: the endpoint belongs to the SDK runtime,
    which becomes the default that Client.connect uses (its core logs as JSON lines, too)."""
    metrics = PrometheusConfig(bind_address=f"{host}:{port}") if port else None
    runtime = Runtime(telemetry=TelemetryConfig(logging=CORE_LOGGING, metrics=metrics))
    Runtime.set_default(runtime, error_if_already_set=True)
    return runtime.metric_meter if port else MetricMeter.noop


class ActivityCounter:
    """How many activity coroutines are running now (`running`), published with attempt counts."""

    def __init__(self, meter: MetricMeter = MetricMeter.noop) -> None:
        self.running = 0
        self._running_gauge = meter.create_gauge(
            RUNNING_METRIC, "Activity coroutines in this worker, from method entry to exit"
        )
        self._attempts = meter.create_counter(
            ATTEMPTS_METRIC, "Finished activity attempts by step (activity type) and outcome"
        )
        # Published at once, so a scrape before the first activity reads 0 rather than nothing.
        self._running_gauge.set(0)

    @contextmanager
    def activity_running(self, step: str) -> Iterator[None]:
        """Count one activity attempt while its body runs, then record how it ended."""
        self.running += 1
        self._running_gauge.set(self.running)
        outcome = FAILED
        try:
            yield
            outcome = SUCCEEDED
        except ApplicationError as err:
            outcome = TIMED_OUT if err.type == ATTEMPT_TIMED_OUT_ERROR else FAILED
            raise
        except asyncio.CancelledError:
            outcome = CANCELLED
            raise
        finally:
            self.running -= 1
            self._running_gauge.set(self.running)
            self._attempts.add(1, {"step": step, "outcome": outcome})


class HasActivityCounter(Protocol):
    counter: ActivityCounter


def counted(
    method: Callable[[Any, Any], Awaitable[R]],
) -> Callable[[Any, Any], Awaitable[R]]:
    """Wrap an activity method (under @activity.defn) so `self.counter` sees it run."""

    @functools.wraps(method)
    async def run_counted(self: HasActivityCounter, input: Any) -> R:
        with self.counter.activity_running(activity.info().activity_type):
            return await method(self, input)

    return run_counted
