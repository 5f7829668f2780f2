"""Outages of a dependency answer 503 with Retry-After and a sentence to act on, never a 500.

Each outage happens for real: PostgreSQL ends the connection a request's query is running on
(pg_terminate_backend, which is what a restart does to every connection), and status queries
reach an order whose workflow no worker polls for (as while the order worker is down). The JSON
API and the board are both asked: they share the service, not the error handlers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import re
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import AsyncIterator

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from orchestration.settings import get_settings
from orchestration.tables import Order
from tests.test_api import serving, workflow_exists
from web.app import create_app
from web.board import FIRST_STATUS_WAIT_SECONDS

HTMX = {"HX-Request": "true"}
TRY_AGAIN = re.compile(r"^[A-Z].*; try again in (\d+) seconds?\.$")
# The message of an HTML error: in the alert of an htmx answer, under the heading of a page.
HTML_MESSAGE = re.compile(r"</strong> (.*?)</div>|<h1>[^<]*</h1>\s*<p>(.*?)</p>")


def unavailable_detail(response: httpx.Response) -> str:
    """Check the answer is an outage's 503 whose sentence says when to retry, as Retry-After
    does; returns the sentence."""
    assert response.status_code == 503, response.text
    retry_after = response.headers.get("retry-after")
    assert retry_after and int(retry_after) > 0, dict(response.headers)
    if response.headers["content-type"].startswith("application/json"):
        body = response.json()
        assert body.keys() == {"status_code", "detail"} and body["status_code"] == 503, body
        detail = body["detail"]
    else:
        assert "Temporarily unavailable" in response.text, response.text
        match = HTML_MESSAGE.search(response.text)
        assert match, response.text
        detail = html.unescape(match.group(1) or match.group(2))
    sentence = TRY_AGAIN.match(detail)
    assert sentence and sentence.group(1) == retry_after, detail
    return detail


@pytest_asyncio.fixture(scope="module")
async def client(
    dev_server: WorkflowEnvironment, database: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(temporal_client=dev_server.client, manage_pool=False)) as client:
        yield client


@asynccontextmanager
async def orders_locked(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The orders table locked by a connection of our own: a request's query of it runs (waits)
    until the lock goes."""
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            yield holder
    finally:
        await holder.close()


async def end_waiting_queries(holder: asyncpg.Connection, request: asyncio.Task) -> None:
    """End the connection of every query waiting for the lock until the request has answered.
    Waiters are found by their lock: a statement waiting in its Parse step (asyncpg prepares
    each new statement) does not show its text in pg_stat_activity."""
    while not request.done():
        await holder.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks "
            "WHERE relation = 'orders'::regclass AND NOT granted"
        )
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/orders?limit=5", {}),
        ("POST", "/orders/{order_id}/start", {}),
        ("GET", "/", {}),
        ("GET", "/orders/{order_id}", HTMX),
    ],
    ids=["api-list", "api-start", "board-page", "board-order-fragment"],
)
async def test_database_connection_ended_mid_query_answers_503(
    client: httpx.AsyncClient,
    dev_server: WorkflowEnvironment,
    database: str,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    order_id = f"outage-{uuid.uuid4().hex[:12]}"
    body = {"payment_id": f"pay-{order_id}"} if method == "POST" else None
    async with orders_locked(database) as holder:
        request = asyncio.create_task(
            client.request(method, path.format(order_id=order_id), json=body, headers=headers)
        )
        await asyncio.wait_for(end_waiting_queries(holder, request), 10)
    assert "database" in unavailable_detail(await request)
    assert not await workflow_exists(dev_server.client, order_id)
    # The pool replaces the connection it lost.
    assert (await client.get("/orders?limit=1")).status_code == 200


@pytest_asyncio.fixture
async def unserved_order(
    dev_server: WorkflowEnvironment, database: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An order started on an orders queue no worker polls, and a client of the app that started
    it. The workflow is terminated afterwards: running, it would count as an order in flight in
    other tests."""
    settings = get_settings()
    settings = dataclasses.replace(
        settings,
        temporal=dataclasses.replace(
            settings.temporal, orders_task_queue=f"unpolled-{uuid.uuid4().hex[:8]}"
        ),
    )
    order_id = f"outage-{uuid.uuid4().hex[:12]}"
    app = create_app(temporal_client=dev_server.client, settings=settings, manage_pool=False)
    async with serving(app) as client:
        started = await client.post(
            f"/orders/{order_id}/start", json={"payment_id": f"pay-{order_id}"}
        )
        assert started.status_code == 201, started.text
        try:
            yield client, order_id
        finally:
            await dev_server.client.get_workflow_handle(f"order-{order_id}").terminate()


async def test_status_of_an_order_no_worker_runs_answers_503(
    unserved_order: tuple[httpx.AsyncClient, str],
) -> None:
    client, order_id = unserved_order
    detail = unavailable_detail(await client.get(f"/orders/{order_id}/status"))
    assert detail.startswith("Temporal did not answer") and "worker" in detail


async def test_row_of_a_received_order_no_worker_runs_answers_from_the_database_then_reports_it(
    unserved_order: tuple[httpx.AsyncClient, str],
) -> None:
    """The order worker went away after the order was received: the database knows the order,
    and Temporal's status query waits for a worker until it gives up. The row answers from the
    database at once, says its live status is loading and keeps polling; once the query has
    failed, the row's next poll reports that (htmx puts it in the page's alert area)."""
    client, order_id = unserved_order
    now = datetime.now(timezone.utc)
    await Order.insert(Order(
        id=order_id, state="received", payment_id=f"pay-{order_id}", items_json=[{"sku": "ABC", "qty": 1}],
        created_at=now, updated_at=now, started_at=now,
    ))
    try:
        asked_at = time.monotonic()
        first = await client.get(f"/board/orders/{order_id}/row", headers=HTMX)
        took = time.monotonic() - asked_at
        assert first.status_code == 200, first.text
        assert "live status loading" in first.text and 'data-state="received"' in first.text
        assert "hx-trigger" in first.text, "a loading row keeps polling"
        assert took < FIRST_STATUS_WAIT_SECONDS + 1, f"the row waited {took:.1f} s for Temporal"
        for _ in range(40):
            await asyncio.sleep(0.5)
            polled = await client.get(f"/board/orders/{order_id}/row", headers=HTMX)
            if polled.status_code != 200:
                break
            assert "live status loading" in polled.text
        assert "Temporal" in unavailable_detail(polled)
        assert polled.headers["hx-retarget"] == "#alerts"
    finally:
        await Order.delete().where(Order.id == order_id)


async def test_board_of_an_order_no_worker_runs_answers_503(
    unserved_order: tuple[httpx.AsyncClient, str],
) -> None:
    client, order_id = unserved_order
    row, fragment, page = await asyncio.gather(
        client.get(f"/board/orders/{order_id}/row", headers=HTMX),
        client.get(f"/orders/{order_id}", headers=HTMX),
        client.get(f"/orders/{order_id}"),
    )
    for response in (row, fragment, page):
        assert "Temporal" in unavailable_detail(response)
    # An htmx error goes to the page's alert area instead of replacing the row.
    assert row.headers["hx-retarget"] == "#alerts"
