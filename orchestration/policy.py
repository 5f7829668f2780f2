"""Every deadline, budget, timeout and retry setting of an order, with why each value is what
it is. The workflows, activities and workers read them from here; orchestration/settings.py
lets the environment override the ones a deployment may tune.

An order is shipped, cancelled or failed within 15 s of its start, across outside calls that
fail or hang two times in three. The budget is time, not attempts: every step may retry as
often as the order's clock allows, and what must happen whatever the clock (a refund, the
record of a shipment) has a budget of its own that only a database outage can use up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import RetryPolicy

BUSINESS_RULE_VIOLATION = "BusinessRuleViolation"
"""ApplicationError type of a request no retry can fix (an order without items, a payment id
that belongs to another order): retries stop on it."""
DEADLINE_EXCEEDED_ERROR = "DeadlineExceeded"
"""ApplicationError type of a step or shipping attempt whose time budget ran out."""


@dataclass
class OrderPolicy:
    """The time budget of one order; part of the workflow input so history records it."""

    deadline_seconds: float = 15.0
    """Every order is shipped, cancelled or failed this long after it starts."""
    compensation_reserve_seconds: float = 3.0
    """Kept free at the end of the deadline for refund and close-out."""
    review_timeout_seconds: float = 6.0
    """How long manual review waits for approval before the order is cancelled."""
    retry_interval_seconds: float = 0.01
    """Pause between attempts of a failed activity. flaky_call fails at once or hangs; waiting
    longer before the next try buys nothing but latency (0.05 s cost 0.3 s per order), while
    5 ms made the server work harder at 10 orders in flight (p99 4.4 -> 6.0 s)."""
    workflow_task_timeout_seconds: float = 2.0
    """How long a workflow task may run before Temporal hands it to another worker. The steps
    are local activities, which run inside the workflow task, so this is also how soon an order
    whose worker was killed mid-step carries on elsewhere (the SDK extends a task that is still
    alive before 80 % of it is used, so a long step does not trip it)."""
    dispatch_budget_seconds: float = 2.5
    """Time one shipping attempt gives DispatchCarrier before asking the parent for a retry."""


MUST_COMPLETE_TIMEOUT = timedelta(minutes=10)
"""Budget of the steps that must happen however late (refund, close-out, the record of a
shipment, bookkeeping writes). They call nothing that hangs, so they take milliseconds; this
only bounds a database outage."""

ATTEMPT_CUT_OFF_SECONDS = 0.02
"""How long an outside call may hang before its attempt is cut off in the worker. flaky_call
answers at once or hangs for 300 s, so anything longer only adds latency: 30 ms -> 20 ms took
one order's p50 from 0.9 s to 0.8 s; 5 ms was faster still alone, but cost 5 % of throughput
at 50 orders in flight."""
ATTEMPT_BACKSTOP_SECONDS = 2.0
"""Longest one attempt may take in the worker, its database writes included, before it is
written off and retried: only a database that stopped answering reaches it. A local activity
cannot carry a start-to-close timeout for this (see orchestration/attempts.py)."""
FAILURE_RECORD_TIMEOUT_SECONDS = 1.0
"""Longest one write of failed attempts' records may take before those records are given up:
they are diagnostics for the status and the board (see orchestration/failure_log.py)."""
STICKY_SCHEDULE_TO_START_SECONDS = 1.0
"""How long a workflow's next task waits for the worker that ran its last one before any
worker may take it (Temporal's default is 5 s): after a worker is killed, its orders carry on
elsewhere this much later, well inside their 15 s."""
COMMIT_DELAY = timedelta(milliseconds=1)
"""The timer a workflow waits on to end its workflow task, so that what the task decided is in
the history before anything acts on it: a shipping attempt after the carrier call (see
orchestration/shipping/workflow.py), an order before it refunds and closes (see
orchestration/order/workflow.py)."""

ADMISSION_LIMIT = 12
"""Orders doing work at once (orders parked at review, waiting for a person, do not count).
Measured on 2 cores: the system carries about 7 orders/s whatever the limit past 10, and an
order takes about 1.1 s (p50) at 10 in flight and 1.5 s at 14; 12 keeps the CPU full (94 % in
a run of 2026-12-03) with p99 near 2 s. Past the machine's capacity every order would be late; at
the limit a new start waits instead."""
OPEN_ORDERS_LIMIT = 40
"""Orders running at once, those parked at review included. A parked order costs nothing while
it waits, but each one approved must then finish inside what is left of its 15 s: approved as
review ends (6 s), it has 6 s before the 3-s reserve, in which the machine carries about
6 × 7 ≈ 40 orders, those already doing work among them. Without this bound, 100 orders parked at
once and approved together (the benchmark at C=100, approving 4 s after the start) made 53-68
of 300 fail their deadline and 1-2 % end after their 15 s."""
ADMISSION_WAIT_SECONDS = 20.0
"""How long a start may wait for a place at the limit before it is refused with 503. Long
enough that a client waits about as long as the queue ahead of it takes (50 clients at
6.7 orders/s: about 7 s) instead of retrying and going to the back of it."""


def retry_policy(policy: OrderPolicy) -> RetryPolicy:
    """Retry every failed attempt after a short, constant pause, with no attempt limit.

    The budget of a step is time, not a count: each activity gets a schedule-to-close timeout
    that ends at the order's deadline. Exponential backoff would spend that budget waiting, and
    a small maximum_attempts fails a third of all orders (two in three attempts fail)."""
    interval = timedelta(seconds=policy.retry_interval_seconds)
    return RetryPolicy(
        initial_interval=interval,
        backoff_coefficient=1.0,
        maximum_interval=interval,
        maximum_attempts=0,
        non_retryable_error_types=[BUSINESS_RULE_VIOLATION],
    )


def bookkeeping_retry_policy() -> RetryPolicy:
    """Retry a write that calls nothing outside: it fails only while the database is away, so
    back off (up to a second) rather than hammer it every few milliseconds."""
    return RetryPolicy(
        initial_interval=timedelta(milliseconds=10),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=1),
        maximum_attempts=0,
    )
