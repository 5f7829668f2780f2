"""All configuration, read once from the environment.

Every field reads exactly one environment variable and has a default that works on one machine
with the Procfile (embedded PostgreSQL, Temporal dev server). Point the variables at external
services to run against a real cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, TypeVar

from orchestration.policy import (
    ADMISSION_LIMIT,
    OPEN_ORDERS_LIMIT,
    ADMISSION_WAIT_SECONDS,
    ATTEMPT_BACKSTOP_SECONDS,
    ATTEMPT_CUT_OFF_SECONDS,
    STICKY_SCHEDULE_TO_START_SECONDS,
    OrderPolicy,
)


N = TypeVar("N", int, float)


class SettingsError(ValueError):
    """An environment variable holds a value this product cannot use; the message names the
    variable and says what it should hold."""


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_number(name: str, default: N, parse: Callable[[str], N], kind: str) -> N:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {kind}.") from None


def _env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def _env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "a whole number")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _env_log_level(name: str, default: str) -> str:
    raw = os.environ.get(name) or default
    if raw.upper() not in LOG_LEVELS:
        raise SettingsError(f"{name}={raw!r} is not a log level: use one of {', '.join(LOG_LEVELS)}.")
    return raw.upper()


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = field(
        default_factory=lambda: _env_str(
            "DATABASE_URL", "postgresql://postgres@127.0.0.1:54329/orders"
        )
    )
    """PostgreSQL DSN (DATABASE_URL); the default is the Procfile's embedded server."""
    pool_max_size: int = field(default_factory=lambda: _env_int("DATABASE_POOL_MAX_SIZE", 20))
    """Connections each process may hold (DATABASE_POOL_MAX_SIZE)."""


@dataclass(frozen=True)
class TemporalSettings:
    address: str = field(default_factory=lambda: _env_str("TEMPORAL_ADDRESS", "127.0.0.1:7233"))
    """Temporal frontend host:port (TEMPORAL_ADDRESS)."""
    namespace: str = field(default_factory=lambda: _env_str("TEMPORAL_NAMESPACE", "default"))
    """Temporal namespace (TEMPORAL_NAMESPACE)."""
    orders_task_queue: str = field(
        default_factory=lambda: _env_str("ORDERS_TASK_QUEUE", "orders")
    )
    """Task queue of OrderWorkflow and its activities (ORDERS_TASK_QUEUE)."""
    shipping_task_queue: str = field(
        default_factory=lambda: _env_str("SHIPPING_TASK_QUEUE", "shipping")
    )
    """Task queue of ShippingWorkflow and its activities (SHIPPING_TASK_QUEUE)."""
    ui_url: str = field(default_factory=lambda: _env_str("TEMPORAL_UI_URL", "http://localhost:8233"))
    """Base URL of the Temporal UI, used for links (TEMPORAL_UI_URL)."""
    tls_cert_path: str = field(default_factory=lambda: _env_str("TEMPORAL_TLS_CERT", ""))
    """Client certificate (PEM file) for mTLS, e.g. Temporal Cloud (TEMPORAL_TLS_CERT)."""
    tls_key_path: str = field(default_factory=lambda: _env_str("TEMPORAL_TLS_KEY", ""))
    """Private key (PEM file) of that certificate (TEMPORAL_TLS_KEY)."""
    tls_ca_path: str = field(default_factory=lambda: _env_str("TEMPORAL_TLS_CA", ""))
    """CA bundle (PEM file) for a server with a private CA; empty trusts the system's (TEMPORAL_TLS_CA)."""
    tls_server_name: str = field(default_factory=lambda: _env_str("TEMPORAL_TLS_SERVER_NAME", ""))
    """Server name to verify when it differs from the address host (TEMPORAL_TLS_SERVER_NAME)."""
    api_key: str = field(default_factory=lambda: _env_str("TEMPORAL_API_KEY", ""))
    """API key, e.g. for Temporal Cloud; implies TLS (TEMPORAL_API_KEY)."""
    tls: bool = field(default_factory=lambda: _env_str("TEMPORAL_TLS", "").lower() in ("1", "true", "yes"))
    """Use TLS even without a client certificate or API key (TEMPORAL_TLS=true)."""


def order_policy_from_env() -> OrderPolicy:
    """The order time budget; each field of OrderPolicy (see its docstrings) has one variable."""
    defaults = OrderPolicy()
    return OrderPolicy(
        deadline_seconds=_env_float("ORDER_DEADLINE_SECONDS", defaults.deadline_seconds),
        compensation_reserve_seconds=_env_float(
            "ORDER_COMPENSATION_RESERVE_SECONDS", defaults.compensation_reserve_seconds
        ),
        review_timeout_seconds=_env_float(
            "ORDER_REVIEW_TIMEOUT_SECONDS", defaults.review_timeout_seconds
        ),
        retry_interval_seconds=_env_float(
            "ACTIVITY_RETRY_INTERVAL_SECONDS", defaults.retry_interval_seconds
        ),
        workflow_task_timeout_seconds=_env_float(
            "WORKFLOW_TASK_TIMEOUT_SECONDS", defaults.workflow_task_timeout_seconds
        ),
        dispatch_budget_seconds=_env_float(
            "DISPATCH_BUDGET_SECONDS", defaults.dispatch_budget_seconds
        ),
    )


@dataclass(frozen=True)
class WorkerSettings:
    attempt_timeout_seconds: float = field(
        default_factory=lambda: _env_float("ACTIVITY_ATTEMPT_TIMEOUT_SECONDS", ATTEMPT_CUT_OFF_SECONDS)
    )
    """Outside call's cut-off, see policy.ATTEMPT_CUT_OFF_SECONDS (ACTIVITY_ATTEMPT_TIMEOUT_SECONDS)."""
    attempt_backstop_seconds: float = field(
        default_factory=lambda: _env_float("ACTIVITY_BACKSTOP_SECONDS", ATTEMPT_BACKSTOP_SECONDS)
    )
    """One attempt's backstop, see policy.ATTEMPT_BACKSTOP_SECONDS (ACTIVITY_BACKSTOP_SECONDS)."""
    sticky_schedule_to_start_seconds: float = field(
        default_factory=lambda: _env_float(
            "WORKER_STICKY_SCHEDULE_TO_START_SECONDS", STICKY_SCHEDULE_TO_START_SECONDS
        )
    )
    """See policy.STICKY_SCHEDULE_TO_START_SECONDS (WORKER_STICKY_SCHEDULE_TO_START_SECONDS)."""
    max_concurrent_activities: int = field(
        default_factory=lambda: _env_int("WORKER_MAX_CONCURRENT_ACTIVITIES", 500)
    )
    """Activity slots per worker, local activities (every business step) and regular ones
    each (WORKER_MAX_CONCURRENT_ACTIVITIES)."""
    max_concurrent_workflow_tasks: int = field(
        default_factory=lambda: _env_int("WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", 100)
    )
    """Workflow task slots per worker (WORKER_MAX_CONCURRENT_WORKFLOW_TASKS)."""
    activity_task_pollers: int = field(
        default_factory=lambda: _env_int("WORKER_ACTIVITY_TASK_POLLERS", 5)
    )
    """Concurrent activity task polls per worker (WORKER_ACTIVITY_TASK_POLLERS)."""
    workflow_task_pollers: int = field(
        default_factory=lambda: _env_int("WORKER_WORKFLOW_TASK_POLLERS", 5)
    )
    """Concurrent workflow task polls per worker (WORKER_WORKFLOW_TASK_POLLERS)."""
    sandboxed_workflows: bool = field(
        default_factory=lambda: _env_str("WORKER_SANDBOXED_WORKFLOWS", "").lower() in ("1", "true", "yes")
    )
    """Run workflow code in Temporal's sandbox, which fails a workflow task on a non-deterministic
    call (I/O, clocks, randomness). The tests always do (their workflow code is the same); the
    workers do not by default: the sandbox took about a fifth of their CPU
    (WORKER_SANDBOXED_WORKFLOWS=true)."""
    metrics_port: int = field(default_factory=lambda: _env_int("WORKER_METRICS_PORT", 0))
    """Port of the worker's Prometheus /metrics; 0 serves none (WORKER_METRICS_PORT)."""
    metrics_host: str = field(default_factory=lambda: _env_str("WORKER_METRICS_HOST", "127.0.0.1"))
    """Interface the metrics endpoint binds; 0.0.0.0 for a scraper in another container (WORKER_METRICS_HOST)."""


@dataclass(frozen=True)
class WebSettings:
    host: str = field(default_factory=lambda: _env_str("WEB_HOST", "127.0.0.1"))
    """Interface the web server binds (WEB_HOST)."""
    port: int = field(default_factory=lambda: _env_int("WEB_PORT", 8000))
    """Port of the board and JSON API (WEB_PORT)."""
    secret_key: str = field(default_factory=lambda: _env_str("WEB_SECRET_KEY", ""))
    """Signs CSRF tokens and operator cookies; empty: a random key per process (WEB_SECRET_KEY)."""
    operator_token: str = field(default_factory=lambda: _env_str("OPERATOR_TOKEN", ""))
    """Credential every state-changing request needs; empty: none needed (OPERATOR_TOKEN)."""
    max_orders_in_flight: int = field(
        default_factory=lambda: _env_int("MAX_ORDERS_IN_FLIGHT", ADMISSION_LIMIT)
    )
    """New orders wait for a free place, then are refused (503), while this many do work (parked
    ones not counted); 0: no limit (MAX_ORDERS_IN_FLIGHT)."""
    max_orders_open: int = field(default_factory=lambda: _env_int("MAX_ORDERS_OPEN", OPEN_ORDERS_LIMIT))
    """The same while this many run, parked ones counted; 0: no limit (MAX_ORDERS_OPEN)."""
    admission_wait_seconds: float = field(
        default_factory=lambda: _env_float("ADMISSION_WAIT_SECONDS", ADMISSION_WAIT_SECONDS)
    )
    """How long a start may wait for a free place before it is refused (ADMISSION_WAIT_SECONDS)."""
    overview_window_seconds: float = field(
        default_factory=lambda: _env_float("OVERVIEW_WINDOW_SECONDS", 60.0)
    )
    """The board overview's recent past: ended orders, throughput and latency over this many
    seconds (OVERVIEW_WINDOW_SECONDS)."""


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    temporal: TemporalSettings = field(default_factory=TemporalSettings)
    order_policy: OrderPolicy = field(default_factory=order_policy_from_env)
    """Time budget of each new order (variables listed in order_policy_from_env)."""
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    web: WebSettings = field(default_factory=WebSettings)
    log_level: str = field(default_factory=lambda: _env_log_level("LOG_LEVEL", "INFO"))
    """Lines below this level are not written; WARNING keeps failed attempts and problems and
    drops state transitions and step completions (LOG_LEVEL)."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
