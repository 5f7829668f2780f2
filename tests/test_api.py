"""The JSON API against the real Temporal dev server, real workers (with the real flaky_call)
and real PostgreSQL.

The app runs in the test's own event loop through httpx's ASGI transport. Litestar's
AsyncTestClient would run it in a thread with a loop of its own, where the shared asyncpg pool
cannot be used and the workers (on the test loop) stall while a request waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import httpx
import pytest
import pytest_asyncio
from litestar import Litestar
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from orchestration.models import (
    ORDER_PARKED_ATTRIBUTE,
    TERMINAL_STATES,
    Item,
    OrderInput,
)
from orchestration.order.workflow import OrderWorkflow
from orchestration.policy import OrderPolicy
from orchestration.settings import Settings, TemporalSettings, get_settings
from orchestration.tables import Order, Payment
from web.app import create_app
from web.admission import RUNNING_ORDERS_QUERY

HOME = {"line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}
OFFICE = {
    "name": "Reception",
    "line1": "9 Office Park",
    "city": "Shelbyville",
    "postal_code": "54321",
    "country": "US",
}
ORDER_DEADLINE_SECONDS = 15.0


@asynccontextmanager
async def serving(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, with the app's startup and shutdown hooks run around it.

    The lifespan runs in a task of its own: pytest-asyncio sets a fixture up and tears it down in
    different tasks, and Litestar's lifespan must be left in the task that entered it."""
    ready, stopping = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.lifespan():
            ready.set()
            await stopping.wait()

    lifespan_task = asyncio.create_task(lifespan())
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait({lifespan_task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
    ready_wait.cancel()
    if lifespan_task.done():
        await lifespan_task  # the startup failed: raise its error
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield client
    finally:
        stopping.set()
        await lifespan_task


@pytest_asyncio.fixture(scope="module")
async def api(workers: Client) -> AsyncIterator[httpx.AsyncClient]:
    # The database fixture owns the shared pool; the app must not close it.
    async with serving(create_app(temporal_client=workers, manage_pool=False)) as client:
        yield client


def new_order_id() -> str:
    return f"api-{uuid.uuid4().hex[:12]}"


async def workflow_exists(client: Client, order_id: str) -> bool:
    try:
        await client.get_workflow_handle(f"order-{order_id}").describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def order_row(order_id: str) -> dict[str, Any] | None:
    return await Order.select().where(Order.id == order_id).first().output(load_json=True)


async def wait_until_terminal(
    api: httpx.AsyncClient, order_id: str, started: float, polled: list[dict]
) -> dict:
    """Poll the status (keeping each answer in `polled`) until the order is shipped, cancelled
    or failed; fail if that takes longer than the order's deadline."""
    while True:
        response = await api.get(f"/orders/{order_id}/status")
        assert response.status_code == 200, response.text
        status = response.json()
        polled.append(status)
        if status["state"] in TERMINAL_STATES and status["live"]["execution_status"] == "COMPLETED":
            return status
        assert (
            time.monotonic() - started < ORDER_DEADLINE_SECONDS
        ), f"not finished in time: {status}"
        await asyncio.sleep(0.1)


# The three lifecycles run concurrently, once per module; the tests below check their records.


@dataclass
class Lifecycle:
    order_id: str
    payment_id: str
    responses: dict[str, httpx.Response] = field(default_factory=dict)
    polled: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    seconds: float = 0.0


async def run_lifecycle(
    api: httpx.AsyncClient, address: dict | None, *signals: tuple[str, dict | None]
) -> Lifecycle:
    """Start an order, send the signals in order, and follow it to its end."""
    order_id = new_order_id()
    life = Lifecycle(order_id=order_id, payment_id=f"pay-{order_id}")
    started = time.monotonic()
    body: dict[str, Any] = {"payment_id": life.payment_id}
    if address is not None:
        body["address"] = address
    life.responses["start"] = await api.post(f"/orders/{order_id}/start", json=body)
    for name, signal_body in signals:
        life.responses[name] = await api.post(
            f"/orders/{order_id}/signals/{name}", json=signal_body
        )
    life.final = await wait_until_terminal(api, order_id, started, life.polled)
    life.seconds = time.monotonic() - started
    return life


@pytest_asyncio.fixture(scope="module")
async def lifecycles(api: httpx.AsyncClient) -> dict[str, Lifecycle]:
    approved, cancelled, readdressed = await asyncio.gather(
        run_lifecycle(api, HOME, ("approve", None)),
        run_lifecycle(api, HOME, ("cancel", {"reason": "customer changed their mind"})),
        run_lifecycle(api, HOME, ("update-address", {"address": OFFICE}), ("approve", None)),
    )
    return {"approved": approved, "cancelled": cancelled, "readdressed": readdressed}


async def test_approved_order_ships(lifecycles: dict[str, Lifecycle]) -> None:
    life = lifecycles["approved"]
    start = life.responses["start"]
    assert start.status_code == 201, start.text
    assert start.json() == {
        "order_id": life.order_id,
        "workflow_id": f"order-{life.order_id}",
        "run_id": start.json()["run_id"],
        "status_url": f"/orders/{life.order_id}/status",
        "deadline_seconds": get_settings().order_policy.deadline_seconds,
    }
    assert start.json()["run_id"]
    assert life.responses["approve"].status_code == 200, life.responses["approve"].text

    # While it ran, the status said which steps were retrying, from their recorded failures.
    assert life.polled[0]["live"]["execution_status"] == "RUNNING"
    retrying = [step for status in life.polled for step in status["live"]["retrying"]]
    for step in retrying:
        assert set(step) == {"workflow_id", "step", "attempt", "last_failure", "last_failed_at"}
        assert step["attempt"] >= 2 and step["last_failure"]

    assert life.final["state"] == "shipped", life.final
    assert life.seconds < ORDER_DEADLINE_SECONDS
    assert life.final["payment"]["status"] == "charged"
    assert (await order_row(life.order_id))["state"] == "shipped"
    payments = await Payment.select().where(Payment.order_id == life.order_id)
    assert [(p["payment_id"], p["status"]) for p in payments] == [(life.payment_id, "charged")]


async def test_approving_twice_is_a_conflict(
    api: httpx.AsyncClient, lifecycles: dict[str, Lifecycle]
) -> None:
    life = lifecycles["approved"]
    response = await api.post(f"/orders/{life.order_id}/signals/approve")
    assert response.status_code == 409
    assert response.json()["detail"].endswith("cannot be approved now: it is already shipped.")


async def test_cancel_before_approval_cancels_and_later_signals_conflict(
    api: httpx.AsyncClient, lifecycles: dict[str, Lifecycle]
) -> None:
    life = lifecycles["cancelled"]
    assert life.responses["start"].status_code == 201
    assert life.responses["cancel"].status_code == 200, life.responses["cancel"].text
    assert life.final["state"] == "cancelled"
    assert life.final["reason"] == "customer changed their mind"
    assert (await order_row(life.order_id))["state"] == "cancelled"

    for action in ("cancel", "approve"):
        response = await api.post(f"/orders/{life.order_id}/signals/{action}")
        assert response.status_code == 409, response.text
        assert "cancelled" in response.json()["detail"]


async def test_address_updated_before_approval_is_used(lifecycles: dict[str, Lifecycle]) -> None:
    life = lifecycles["readdressed"]
    assert life.responses["update-address"].status_code == 200, life.responses[
        "update-address"
    ].text
    assert life.responses["approve"].status_code == 200, life.responses["approve"].text
    assert life.final["state"] == "shipped", life.final
    office = {"line2": "", "state": "", **OFFICE}
    assert life.final["address"] == office
    assert (await order_row(life.order_id))["address_json"] == office


async def test_status_waits_for_the_order_to_end(api: httpx.AsyncClient) -> None:
    """One status request with `wait` follows an order to its end, instead of polling."""
    order_id = new_order_id()
    start = await api.post(f"/orders/{order_id}/start", json={"payment_id": f"pay-{order_id}"})
    assert start.status_code == 201, start.text
    assert (await api.post(f"/orders/{order_id}/signals/approve")).status_code == 200
    response = await api.get(f"/orders/{order_id}/status", params={"wait": 30})
    assert response.status_code == 200, response.text
    assert response.json()["state"] in TERMINAL_STATES
    assert response.json()["finished_at"] is not None


async def test_status_wait_answers_the_current_status_when_time_is_up(
    api: httpx.AsyncClient,
) -> None:
    order_id = new_order_id()
    start = await api.post(f"/orders/{order_id}/start", json={"payment_id": f"pay-{order_id}"})
    assert start.status_code == 201, start.text
    began = time.monotonic()
    response = await api.get(f"/orders/{order_id}/status", params={"wait": 0.5})
    waited = time.monotonic() - began
    assert response.status_code == 200, response.text
    # Not approved, so it waits for review (for seconds), and the answer comes when time is up.
    assert response.json()["state"] not in TERMINAL_STATES
    assert waited >= 0.5
    await api.post(f"/orders/{order_id}/signals/cancel", json={"reason": "test over"})


@pytest.mark.parametrize("wait", ["-1", "31", "soon"])
async def test_status_wait_out_of_range_is_rejected(
    api: httpx.AsyncClient, order_id: str, wait: str
) -> None:
    response = await api.get(f"/orders/{order_id}/status", params={"wait": wait})
    assert response.status_code == 422, response.text
    assert "wait" in response.text


async def test_list_orders_by_state(
    api: httpx.AsyncClient, lifecycles: dict[str, Lifecycle]
) -> None:
    response = await api.get("/orders", params={"state": "shipped", "limit": 200})
    assert response.status_code == 200
    orders = response.json()
    assert {order["state"] for order in orders} == {"shipped"}
    listed = {order["id"]: order for order in orders}
    shipped = lifecycles["approved"]
    assert listed[shipped.order_id]["payment_id"] == shipped.payment_id
    assert listed[shipped.order_id]["address"] == {"name": "", "line2": "", "state": "", **HOME}
    assert set(listed[shipped.order_id]) == {
        "id",
        "state",
        "reason",
        "payment_id",
        "address",
        "created_at",
        "updated_at",
    }
    created = [order["created_at"] for order in orders]
    assert created == sorted(created, reverse=True)


async def test_list_orders_rejects_unknown_state_and_bad_limit(api: httpx.AsyncClient) -> None:
    response = await api.get("/orders", params={"state": "nonsense"})
    assert response.status_code == 422
    assert "state" in response.json()["detail"]
    assert (await api.get("/orders", params={"limit": 201})).status_code == 422


async def test_repeated_start_is_a_conflict(api: httpx.AsyncClient, workers: Client) -> None:
    order_id = new_order_id()
    first = await api.post(f"/orders/{order_id}/start", json={"payment_id": f"pay-{order_id}"})
    assert first.status_code == 201, first.text
    again = await api.post(f"/orders/{order_id}/start", json={"payment_id": f"other-{order_id}"})
    assert again.status_code == 409
    assert order_id in again.json()["detail"]
    await api.post(f"/orders/{order_id}/signals/cancel")


async def test_payment_id_of_another_order_is_a_conflict(
    api: httpx.AsyncClient, workers: Client
) -> None:
    first_id, second_id = new_order_id(), new_order_id()
    payment_id = f"pay-{first_id}"
    assert (
        await api.post(f"/orders/{first_id}/start", json={"payment_id": payment_id})
    ).status_code == 201
    # The payment id is on record once the workflow has received the order.
    while await order_row(first_id) is None:
        await asyncio.sleep(0.05)

    response = await api.post(f"/orders/{second_id}/start", json={"payment_id": payment_id})
    assert response.status_code == 409
    assert payment_id in response.json()["detail"]
    assert not await workflow_exists(workers, second_id)
    assert await order_row(second_id) is None
    await api.post(f"/orders/{first_id}/signals/cancel")


def limited_to_one_order(wait_seconds: float) -> Settings:
    settings = get_settings()
    return dataclasses.replace(
        settings,
        web=dataclasses.replace(
            settings.web, max_orders_in_flight=1, admission_wait_seconds=wait_seconds
        ),
    )


async def busy_order(client: Client) -> WorkflowHandle:
    """An order that holds an admission place for as long as the test wants: started on a task
    queue no worker polls, it stays `started`, i.e. doing work as far as admission can tell.
    (An order of the real workers would soon park at review, where it holds no place.)"""
    order_id = new_order_id()
    handle = await client.start_workflow(
        OrderWorkflow.run,
        OrderInput(order_id, f"pay-{order_id}", [Item("ABC")], None, OrderPolicy(), "shipping"),
        id=f"order-{order_id}",
        task_queue=f"no-worker-{order_id}",
        search_attributes=TypedSearchAttributes([SearchAttributePair(ORDER_PARKED_ATTRIBUTE, False)]),
    )
    # The count comes from Temporal's visibility, which follows a start within moments.
    while not (await client.count_workflows(f"{RUNNING_ORDERS_QUERY} AND WorkflowId = '{handle.id}'")).count:
        await asyncio.sleep(0.05)
    return handle


async def test_a_start_beyond_the_in_flight_limit_waits_then_is_refused_with_retry_after(
    api: httpx.AsyncClient, workers: Client
) -> None:
    """With MAX_ORDERS_IN_FLIGHT=1 and one order doing work, a new start waits its
    ADMISSION_WAIT_SECONDS and is refused."""
    busy, refused_id = await busy_order(workers), new_order_id()
    app = create_app(temporal_client=workers, settings=limited_to_one_order(0.5), manage_pool=False)
    async with serving(app) as client:
        asked_at = time.monotonic()
        refused = await client.post(f"/orders/{refused_id}/start", json={"payment_id": f"pay-{refused_id}"})
        waited = time.monotonic() - asked_at
    await busy.terminate()
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "orders are being processed" in refused.json()["detail"]
    assert "none ended within 0.5 s" in refused.json()["detail"]
    assert waited >= 0.5
    assert not await workflow_exists(workers, refused_id)
    assert await order_row(refused_id) is None


async def test_a_start_waiting_at_the_limit_is_admitted_when_an_order_ends(
    api: httpx.AsyncClient, workers: Client
) -> None:
    busy, waiting_id = await busy_order(workers), new_order_id()
    app = create_app(temporal_client=workers, settings=limited_to_one_order(20), manage_pool=False)
    async with serving(app) as client:
        waiting = asyncio.create_task(
            client.post(f"/orders/{waiting_id}/start", json={"payment_id": f"pay-{waiting_id}"}, timeout=30)
        )
        await asyncio.sleep(1)
        assert not waiting.done(), "a place is free only once the busy order has ended"
        await busy.terminate()
        admitted = await waiting
    assert admitted.status_code == 201, admitted.text
    assert await workflow_exists(workers, waiting_id)
    await api.post(f"/orders/{waiting_id}/signals/cancel")


@pytest.mark.parametrize(
    "path_id", ["bad%20id%21", "a" * 65, "-starts-with-dash"], ids=["space", "too-long", "dash"]
)
async def test_bad_order_id_is_rejected(
    api: httpx.AsyncClient, workers: Client, path_id: str
) -> None:
    response = await api.post(f"/orders/{path_id}/start", json={"payment_id": "pay-bad-id"})
    assert response.status_code == 422, response.text
    assert "order_id" in response.json()["detail"]
    assert not await workflow_exists(workers, path_id)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "payment_id"),
        ({"payment_id": "p", "items": [{"sku": "ABC", "qty": 0}]}, "items[0].qty"),
        ({"payment_id": "p", "items": []}, "items"),
        (
            {"payment_id": "p", "address": {k: v for k, v in HOME.items() if k != "city"}},
            "address.city",
        ),
        ({"payment_id": "p", "address": {**HOME, "line1": "   "}}, "address.line1"),
        ({"payment_id": 42}, "payment_id"),
        ({"payment_id": "p", "items": [{"sku": "ABC", "qty": "two"}]}, "items[0].qty"),
        ({"payment_id": "p", "items": [{"sku": "ABC", "qty": 1}] * 101}, "items"),
        ({"payment_id": "bad payment"}, "payment_id"),
        ({"payment_id": "p", "coupon": "FREE"}, "coupon"),
        ({"payment_id": "p", "items": [{"sku": "A\x00B"}]}, "items[0].sku"),
        ("{not json", "JSON"),
        ("", "body"),
    ],
    ids=[
        "missing-payment-id",
        "qty-zero",
        "no-items",
        "address-without-city",
        "blank-line1",
        "payment-id-not-string",
        "qty-not-int",
        "too-many-items",
        "payment-id-pattern",
        "unknown-field",
        "nul-in-sku",
        "invalid-json",
        "empty-body",
    ],
)
async def test_bad_start_body_is_rejected_without_side_effects(
    api: httpx.AsyncClient, workers: Client, order_id: str, body: Any, named: str
) -> None:
    if isinstance(body, str):
        response = await api.post(
            f"/orders/{order_id}/start", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await api.post(f"/orders/{order_id}/start", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["status_code"] == 422
    assert named in error["detail"]
    assert not await workflow_exists(workers, order_id)
    assert await order_row(order_id) is None


async def test_oversized_body_is_rejected(api: httpx.AsyncClient, order_id: str) -> None:
    body = {"payment_id": "p", "address": {**HOME, "line2": "x" * 70_000}}
    response = await api.post(f"/orders/{order_id}/start", json=body)
    assert response.status_code == 413
    assert "KiB" in response.json()["detail"]


async def test_bad_signal_bodies_are_rejected(api: httpx.AsyncClient, order_id: str) -> None:
    response = await api.post(
        f"/orders/{order_id}/signals/update-address", json={"address": {**HOME, "country": "U"}}
    )
    assert response.status_code == 422
    assert "address.country" in response.json()["detail"]
    response = await api.post(f"/orders/{order_id}/signals/cancel", json={"reason": "x" * 501})
    assert response.status_code == 422
    assert "reason" in response.json()["detail"]
    response = await api.post(f"/orders/{order_id}/signals/cancel", json={"reason": "a\x00"})
    assert response.status_code == 422
    assert "must not contain the NUL character" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "status", None),
        ("POST", "signals/approve", None),
        ("POST", "signals/cancel", {"reason": "no such order"}),
        ("POST", "signals/update-address", {"address": HOME}),
    ],
)
async def test_unknown_order_is_not_found(
    api: httpx.AsyncClient, order_id: str, method: str, path: str, body: dict | None
) -> None:
    response = await api.request(method, f"/orders/{order_id}/{path}", json=body)
    assert response.status_code == 404, response.text
    assert response.json() == {"status_code": 404, "detail": f"Order {order_id} does not exist."}


async def test_health_reports_both_components(api: httpx.AsyncClient) -> None:
    response = await api.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "components": {"database": {"ok": True}, "temporal": {"ok": True}},
    }


async def test_openapi_schema_is_served(api: httpx.AsyncClient) -> None:
    response = await api.get("/schema/openapi.json")
    assert response.status_code == 200
    assert "/orders/{order_id}/start" in response.json()["paths"]
    assert (await api.get("/schema")).status_code == 200


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_temporal_down_answers_503_quickly(database: str, order_id: str) -> None:
    settings = dataclasses.replace(
        get_settings(), temporal=TemporalSettings(address=f"127.0.0.1:{_closed_port()}")
    )
    async with serving(create_app(settings=settings, manage_pool=False)) as api:
        started = time.monotonic()
        health = await api.get("/health")
        assert health.status_code == 503
        components = health.json()["components"]
        assert components["database"] == {"ok": True}
        assert components["temporal"]["ok"] is False and components["temporal"]["error"]

        response = await api.post(
            f"/orders/{order_id}/start", json={"payment_id": f"pay-{order_id}"}
        )
        assert response.status_code == 503
        assert "Temporal" in response.json()["detail"]
        assert (await api.get(f"/orders/{order_id}/status")).status_code == 503
        assert time.monotonic() - started < 5
    assert await order_row(order_id) is None


class ExplodingTemporalClient:
    """Fails in a way no handler expects."""

    def get_workflow_handle_for(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError("unexpected")


async def test_unexpected_error_is_a_json_500(order_id: str) -> None:
    client: Any = ExplodingTemporalClient()
    async with serving(create_app(temporal_client=client, manage_pool=False)) as api:
        response = await api.get(f"/orders/{order_id}/status")
    assert response.status_code == 500
    assert response.json() == {"status_code": 500, "detail": "Internal error; it has been logged."}
