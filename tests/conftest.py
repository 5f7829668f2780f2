"""Shared fixtures: a real PostgreSQL and real Temporal servers, started on free ports.

DATABASE_URL is set here, before any project module is imported, because Piccolo binds its
engine when the tables are first imported.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


POSTGRES_PORT = free_port()
os.environ["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{POSTGRES_PORT}/orders_test"
# Tests start orders from many modules at once (fuzzing alone starts dozens); the admission
# limit would turn unrelated tests' starts into 503s. The limit has its own test, with its own app.
os.environ["MAX_ORDERS_IN_FLIGHT"] = "0"
# The workers of the tests run the workflows in Temporal's sandbox, which fails a workflow task on
# a non-deterministic call; production workers skip it for speed (orchestration/settings.py).
os.environ["WORKER_SANDBOXED_WORKFLOWS"] = "true"

import pytest  # noqa: E402
import pytest_asyncio  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from orchestration.metrics import ActivityCounter  # noqa: E402
from orchestration.order.activities import OrderActivities  # noqa: E402
from orchestration.database import close_pool, open_pool  # noqa: E402
from orchestration.models import ORDER_PARKED_ATTRIBUTE  # noqa: E402
from orchestration.order.worker import WORKFLOWS as ORDER_WORKFLOWS  # noqa: E402
from orchestration.settings import get_settings  # noqa: E402
from orchestration.temporal_client import ensure_search_attributes, exit_without_teardown  # noqa: E402
from orchestration.worker import build_worker  # noqa: E402
from orchestration.shipping.activities import ShippingActivities  # noqa: E402
from orchestration.shipping.workflow import ShippingWorkflow  # noqa: E402
from scripts import local_postgres  # noqa: E402
from scripts.temporal_dev_server import dynamic_config_args  # noqa: E402

BIN = Path(sys.executable).parent
ORDERS_QUEUE = "orders"
SHIPPING_QUEUE = "shipping"


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of our own, with the migrations applied (the real migration path)."""
    data_dir = Path(tempfile.mkdtemp(prefix="orders-pg-")) / "data"
    local_postgres.init_cluster(data_dir)
    server = local_postgres.spawn(data_dir, POSTGRES_PORT)
    try:
        local_postgres.wait_ready(POSTGRES_PORT)
        local_postgres.ensure_database("orders_test", POSTGRES_PORT)
        migrate()
        yield os.environ["DATABASE_URL"]
    finally:
        server.send_signal(2)  # SIGINT: fast shutdown
        server.wait(timeout=30)


def migrate(database_url: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if database_url:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [str(BIN / "piccolo"), "migrations", "forwards", "all"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


@pytest_asyncio.fixture(scope="session")
async def database(postgres):
    await open_pool(get_settings().database)
    yield postgres
    await close_pool()


@pytest_asyncio.fixture(scope="session")
async def dev_server():
    """The real Temporal dev server, with the same fast-timer settings as the Procfile."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_extra_args=dynamic_config_args(),
        search_attributes=[ORDER_PARKED_ATTRIBUTE],
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def time_skipping():
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server")
    )
    await ensure_search_attributes(env.client)
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def activity_counter():
    return ActivityCounter()


@pytest_asyncio.fixture(scope="session")
async def workers(dev_server, database, activity_counter):
    """Both workers, as the Procfile runs them, with the real activities and real flaky_call."""
    settings = get_settings()
    cut_off = settings.worker.attempt_timeout_seconds
    order_worker = build_worker(
        dev_server.client, settings, ORDERS_QUEUE, ORDER_WORKFLOWS,
        OrderActivities(cut_off, activity_counter).activities(),
    )
    shipping_worker = build_worker(
        dev_server.client, settings, SHIPPING_QUEUE, [ShippingWorkflow],
        ShippingActivities(cut_off, activity_counter).activities(),
    )
    async with order_worker, shipping_worker:
        yield dev_server.client


@asynccontextmanager
async def served_over_http(app) -> AsyncIterator[str]:
    """The ASGI app served by uvicorn on a free port in this event loop; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
def order_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


_exit_status = 0


def pytest_sessionfinish(session, exitstatus):
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Exit with pytest's own status once everything is reported.

    The Temporal SDK's native runtime sometimes crashes the interpreter during its final
    teardown (segfault or "PyGILState_Release" abort) after every test has finished; the
    status left with is pytest's real result."""
    exit_without_teardown(_exit_status)
