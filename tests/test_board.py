"""The board's pages, fragments and actions against the real Temporal dev server, real workers
(with the real flaky_call) and real PostgreSQL, served in the test's event loop as in
tests/test_api.py. The rendering of every state is checked on the templates directly, because
some states (failed at the deadline) take the full 15 s to reach for real.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio
from litestar import Litestar
from temporalio.client import Client

from orchestration.models import (
    ORDER_STEPS,
    AWAITING_APPROVAL,
    CANCELLED,
    FAILED,
    SHIPPED,
    Address,
    ErrorRecord,
    OrderStatus,
    PaymentStatus,
    StepStatus,
)
from orchestration.settings import get_settings
from tests.test_api import HOME, OFFICE, order_row, serving, workflow_exists
from web.app import create_app
from web.overview import AdmissionSnapshot, overview_from_rows
from web.board_views import row_from_summary
from web.schemas import ORDER_STATES
from web.security import CSRF_HEADER
from web.summaries import LIVE_SUMMARY_MAX_AGE_SECONDS, OrderSummary, RetryingStep

HTMX = {"HX-Request": "true"}
# Orders end within 15 s of their start; a test waiting longer has found a bug.
ORDER_DEADLINE_SECONDS = 15.0
# Manual review waits 6 s after the start, so approvals are sent well within that.
REVIEW_TIMEOUT_SECONDS = 6.0


@pytest_asyncio.fixture(scope="module")
async def app(workers: Client) -> Litestar:
    return create_app(temporal_client=workers, manage_pool=False)


@pytest_asyncio.fixture(scope="module")
async def board(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app) as client:
        await send_csrf_token(client)
        yield client


def csrf_token_in(html: str) -> str:
    """The CSRF token a page carries in its forms (and in <body hx-headers>)."""
    match = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


async def send_csrf_token(client: httpx.AsyncClient) -> str:
    """Open the board as a browser would and send its CSRF token with every later request, as
    the page's htmx does; the CSRF cookie stays in the client's jar."""
    page = await client.get("/")
    assert page.status_code == 200, page.text
    token = csrf_token_in(page.text)
    client.headers[CSRF_HEADER] = token
    return token


def new_order_id() -> str:
    return f"board-{uuid.uuid4().hex[:12]}"


def address_fields(address: dict[str, str]) -> dict[str, str]:
    return {f"address.{name}": value for name, value in address.items()}


def order_form(order_id: str, address: dict[str, str] | None = HOME) -> dict[str, str]:
    return {
        "order_id": order_id,
        "payment_id": f"pay-{order_id}",
        "items.0.sku": "ABC",
        "items.0.qty": "2",
        "items.1.sku": "",
        "items.1.qty": "",
        **(address_fields(address) if address else {}),
    }


def row_state(html: str) -> str:
    match = re.search(r'<tr class="order-row"[^>]*data-state="([a-z_]+)"', html)
    assert match, html
    return match.group(1)


async def start(board: httpx.AsyncClient, order_id: str, **form: str) -> httpx.Response:
    response = await board.post("/board/orders", data={**order_form(order_id), **form}, headers=HTMX)
    assert response.status_code == 200, response.text
    return response


async def wait_for_row(
    board: httpx.AsyncClient, order_id: str, done: Callable[[httpx.Response], bool]
) -> httpx.Response:
    """Poll the row fragment as the page does until `done` holds, within the order's deadline."""
    give_up_at = time.monotonic() + ORDER_DEADLINE_SECONDS + 2
    while True:
        response = await board.get(f"/board/orders/{order_id}/row", headers=HTMX)
        assert response.status_code in (200, 286), response.text
        if done(response):
            return response
        assert time.monotonic() < give_up_at, f"row never got there: {response.text}"
        await asyncio.sleep(0.1)


def awaiting_approval(response: httpx.Response) -> bool:
    return row_state(response.text) == AWAITING_APPROVAL


def ended(response: httpx.Response) -> bool:
    return response.status_code == 286


async def test_board_page_shows_the_form_with_fresh_ids_and_the_assets(
    board: httpx.AsyncClient,
) -> None:
    response = await board.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert '<script src="/static/htmx.min.js"' in html
    assert '<link rel="stylesheet" href="/static/board.css">' in html
    order_id = re.search(r'name="order_id" value="(ord-[0-9a-f]{8})"', html)
    assert order_id, html
    assert f'name="payment_id" value="pay-{order_id.group(1)}"' in html
    assert "curl -s -X POST" in html, "the empty state explains how to start an order"
    again = await board.get("/")
    assert order_id.group(1) not in again.text, "every page view offers a new order id"

    for asset, media_type in (("htmx.min.js", "javascript"), ("board.css", "text/css")):
        static = await board.get(f"/static/{asset}")
        assert static.status_code == 200
        assert media_type in static.headers["content-type"]


async def test_json_routes_are_unchanged_beside_the_pages(board: httpx.AsyncClient) -> None:
    listing = await board.get("/orders")
    assert listing.status_code == 200
    assert isinstance(listing.json(), list)
    schema = (await board.get("/schema/openapi.json")).json()
    assert "/orders/{order_id}/status" in schema["paths"]
    assert not any(path.startswith("/board") for path in schema["paths"])
    assert "/orders/{order_id}" not in schema["paths"]


async def test_started_order_is_inserted_on_top_and_the_form_renewed(
    board: httpx.AsyncClient,
) -> None:
    order_id = new_order_id()
    response = await start(board, order_id)
    html = response.text
    assert html.lstrip().startswith('<form id="new-order"'), "a fresh form replaces the sent one"
    assert f"Order {order_id} started." in html
    fresh = re.search(r'name="order_id" value="([^"]+)"', html)
    assert fresh and fresh.group(1) != order_id
    inserted = html.split('<table hx-swap-oob="afterend:#board-head">', 1)[1]
    assert inserted.lstrip().startswith(f'<tbody class="order" data-order-id="{order_id}">')
    assert f'hx-get="/board/orders/{order_id}/row"' in inserted

    await wait_for_row(board, order_id, awaiting_approval)
    await board.post(f"/board/orders/{order_id}/cancel", data={"reason": ""}, headers=HTMX)


async def test_form_without_javascript_redirects_to_the_order_page(
    board: httpx.AsyncClient,
) -> None:
    order_id = new_order_id()
    response = await board.post("/board/orders", data=order_form(order_id))
    assert response.status_code == 303
    assert response.headers["location"] == f"/orders/{order_id}"
    page = await board.get(response.headers["location"])
    assert page.status_code == 200
    assert f"order-{order_id}" in page.text

    cancelled = await board.post(f"/board/orders/{order_id}/cancel", data={"reason": "no js"})
    assert cancelled.status_code == 303


async def test_form_errors_are_shown_next_to_the_fields_and_nothing_starts(
    board: httpx.AsyncClient, workers: Client
) -> None:
    order_id = new_order_id()
    form = {
        **order_form(order_id, {**HOME, "country": "U", "city": "  "}),
        "payment_id": "",
        "items.0.qty": "0",
        "items.1.qty": "two",
    }
    response = await board.post("/board/orders", data=form, headers=HTMX)
    assert response.status_code == 422
    html = response.text
    assert html.lstrip().startswith('<form id="new-order"')
    assert "Payment id is required" in html
    assert "Qty must be at least 1" in html
    assert "SKU is required" in html, "a quantity without a SKU is reported"
    assert "Country must be at least 2 characters long" in html
    assert "City must not be blank" in html
    assert f'value="{order_id}"' in html, "what was typed is kept"
    assert not await workflow_exists(workers, order_id)
    assert await order_row(order_id) is None

    without_js = await board.post("/board/orders", data=form)
    assert without_js.status_code == 422
    assert "<html" in without_js.text and "Payment id is required" in without_js.text


async def test_duplicate_order_is_refused_on_the_form(board: httpx.AsyncClient) -> None:
    order_id = new_order_id()
    await start(board, order_id)
    again = await board.post(
        "/board/orders", data={**order_form(order_id), "payment_id": "other"}, headers=HTMX
    )
    assert again.status_code == 409
    assert f"Order {order_id} already exists." in again.text
    await board.post(f"/board/orders/{order_id}/cancel", data={"reason": ""}, headers=HTMX)


async def test_a_row_behind_its_order_answers_at_once_and_says_how_old_it_is(
    app: Litestar, board: httpx.AsyncClient
) -> None:
    """Under overload a status refresh can take seconds; the row must not wait for it."""
    order_id = new_order_id()
    await start(board, order_id)
    await wait_for_row(board, order_id, awaiting_approval)
    order_service = app.dependencies["order_service"].dependency()
    # As if the last refresh had been 10 s ago (the cache has no clock of its own to move).
    cache = order_service.summaries._live
    loaded_at, summary = cache._entries[order_id]
    cache._entries[order_id] = (loaded_at - 10, summary)

    stale = await board.get(f"/board/orders/{order_id}/row", headers=HTMX)
    assert stale.status_code == 200
    assert float(stale.headers["X-Status-Age"]) >= 10
    assert "status as of 10 s ago" in stale.text
    # The stale answer started a refresh behind it; the next poll shows a fresh status.
    refreshed = await wait_for_row(board, order_id, lambda response: "status as of" not in response.text)
    assert float(refreshed.headers["X-Status-Age"]) < 3
    await board.post(f"/board/orders/{order_id}/cancel", data={"reason": ""}, headers=HTMX)


async def test_row_follows_the_order_to_shipped_and_stops_polling(
    board: httpx.AsyncClient,
) -> None:
    order_id = new_order_id()
    started = time.monotonic()
    await start(board, order_id)
    waiting = await wait_for_row(board, order_id, awaiting_approval)
    assert waiting.status_code == 200
    html = waiting.text
    assert 'hx-trigger="every 1s' in html and 'hx-swap="outerHTML"' in html
    assert f'hx-post="/board/orders/{order_id}/approve"' in html
    assert "s left" in html and 'class="deadline-fill"' in html
    # Served from the live cache: the status shown is at most LIVE_SUMMARY_MAX_AGE_SECONDS old.
    assert 0 <= float(waiting.headers["X-Status-Age"]) < LIVE_SUMMARY_MAX_AGE_SECONDS

    approved = await board.post(f"/board/orders/{order_id}/approve", headers=HTMX)
    assert approved.status_code == 200
    assert approved.text.lstrip().startswith(f'<tbody class="order" data-order-id="{order_id}"')
    assert f"Order {order_id}: approved." in approved.text
    # Fresh after the action, although the row was cached a moment ago.
    assert f"/board/orders/{order_id}/approve" not in approved.text
    assert time.monotonic() - started < REVIEW_TIMEOUT_SECONDS

    final = await wait_for_row(board, order_id, ended)
    assert row_state(final.text) == SHIPPED
    assert "hx-get" not in final.text, "a finished row does not poll"
    assert "ended after" in final.text
    assert "<form" not in final.text, "a shipped order accepts no action"
    assert (await order_row(order_id))["state"] == SHIPPED

    refused = await board.post(f"/board/orders/{order_id}/approve", headers=HTMX)
    assert refused.status_code == 409
    assert "notice-refused" in refused.text
    assert f"Order {order_id} cannot be approved now: it is already shipped." in refused.text
    assert row_state(refused.text) == SHIPPED

    again = await board.get(f"/board/orders/{order_id}/row", headers=HTMX)
    assert again.status_code == 286 and again.text == final.text


async def test_cancel_with_a_reason_is_escaped_and_refused_after(
    board: httpx.AsyncClient,
) -> None:
    order_id = new_order_id()
    await start(board, order_id)
    await wait_for_row(board, order_id, awaiting_approval)
    reason = "<script>alert('reason')</script>"
    cancelled = await board.post(
        f"/board/orders/{order_id}/cancel", data={"reason": reason}, headers=HTMX
    )
    assert cancelled.status_code == 200
    # The answer comes once the order is cancelled: the row shows it at once.
    assert f"Order {order_id}: cancelled." in cancelled.text
    assert row_state(cancelled.text) == CANCELLED

    final = await wait_for_row(board, order_id, ended)
    assert row_state(final.text) == CANCELLED
    assert "&lt;script&gt;alert(&#39;reason&#39;)&lt;/script&gt;" in final.text
    assert "<script>" not in final.text

    refused = await board.post(
        f"/board/orders/{order_id}/cancel", data={"reason": "again"}, headers=HTMX
    )
    assert refused.status_code == 409
    assert "notice-refused" in refused.text and "cannot be cancelled now" in refused.text

    page = await board.get(f"/orders/{order_id}")
    assert "&lt;script&gt;" in page.text and "<script>alert" not in page.text


async def test_too_long_reason_is_shown_on_the_open_cancel_form(board: httpx.AsyncClient) -> None:
    order_id = new_order_id()
    await start(board, order_id)
    await wait_for_row(board, order_id, awaiting_approval)
    response = await board.post(
        f"/board/orders/{order_id}/cancel", data={"reason": "x" * 501}, headers=HTMX
    )
    assert response.status_code == 422
    assert "Reason must be at most 500 characters long" in response.text
    assert '<details class="action" open>' in response.text
    assert row_state(response.text) == AWAITING_APPROVAL, "nothing was sent"
    await board.post(f"/board/orders/{order_id}/cancel", data={"reason": ""}, headers=HTMX)


async def test_address_update_is_validated_escaped_and_shown_on_the_order_page(
    board: httpx.AsyncClient,
) -> None:
    order_id = new_order_id()
    await start(board, order_id)
    await wait_for_row(board, order_id, awaiting_approval)

    invalid = await board.post(
        f"/board/orders/{order_id}/address",
        data=address_fields({**OFFICE, "line1": "", "country": "U"}),
        headers=HTMX,
    )
    assert invalid.status_code == 422
    assert "Street is required" in invalid.text
    assert "Country must be at least 2 characters long" in invalid.text
    assert 'value="Shelbyville"' in invalid.text, "what was typed is kept"

    sneaky = {**OFFICE, "line1": "<script>alert('line1')</script>"}
    updated = await board.post(
        f"/board/orders/{order_id}/address", data=address_fields(sneaky), headers=HTMX
    )
    assert updated.status_code == 200
    assert f"Order {order_id}: address updated." in updated.text
    await board.post(f"/board/orders/{order_id}/approve", headers=HTMX)
    final = await wait_for_row(board, order_id, ended)
    assert row_state(final.text) == SHIPPED

    page = await board.get(f"/orders/{order_id}")
    assert page.status_code == 200
    assert "&lt;script&gt;alert(&#39;line1&#39;)&lt;/script&gt;" in page.text
    assert "<script>alert" not in page.text
    assert "Shelbyville" in page.text and "Reception" in page.text

    refused = await board.post(
        f"/board/orders/{order_id}/address", data=address_fields(HOME), headers=HTMX
    )
    assert refused.status_code == 409
    assert "cannot be given a new address now" in refused.text


async def test_order_page_shows_timeline_events_payment_and_the_temporal_link(
    board: httpx.AsyncClient,
) -> None:
    order_id = new_order_id()
    await start(board, order_id)
    await wait_for_row(board, order_id, awaiting_approval)
    running = await board.get(f"/orders/{order_id}")
    assert running.status_code == 200
    assert f'hx-get="/orders/{order_id}"' in running.text, "the page follows a running order"

    await board.post(f"/board/orders/{order_id}/approve", headers=HTMX)
    await wait_for_row(board, order_id, ended)
    page = await board.get(f"/orders/{order_id}")
    html = page.text
    ui_url = get_settings().temporal.ui_url.rstrip("/")
    assert f'href="{ui_url}/namespaces/default/workflows/order-{order_id}"' in html
    for step in ("receive order", "validate order", "manual review", "charge payment"):
        assert f'<span class="step-name">{step}</span>' in html
    assert "prepare package" in html and "dispatch carrier" in html
    assert "took" in html and "attempt" in html
    assert "order received" in html and "order shipped" in html, "the events table"
    assert f"pay-{order_id}" in html and "charged" in html
    assert "2 × ABC" in html
    assert 'hx-get="/orders/' not in html, "a finished order's page does not poll"

    fragment = await board.get(f"/orders/{order_id}", headers=HTMX)
    assert fragment.status_code == 286
    assert fragment.text.lstrip().startswith('<div id="order-detail"')


async def test_new_rows_are_those_not_shown_yet(board: httpx.AsyncClient) -> None:
    order_id = new_order_id()
    await start(board, order_id)
    while await order_row(order_id) is None:
        await asyncio.sleep(0.05)
    fresh = await board.get("/board/rows", headers=HTMX)
    assert fresh.status_code == 200
    assert f'data-order-id="{order_id}"' in fresh.text
    assert '<div id="alerts" hx-swap-oob="innerHTML">' in fresh.text
    shown = re.findall(r'<tbody class="order" data-order-id="([^"]+)"', fresh.text)
    none_new = await board.get("/board/rows", params={"shown": shown}, headers=HTMX)
    assert "<tbody" not in none_new.text

    shipped_only = await board.get("/board/rows", params={"state": SHIPPED}, headers=HTMX)
    assert f'data-order-id="{order_id}"' not in shipped_only.text
    assert (await board.get("/", params={"state": "nonsense"})).status_code == 400
    await board.post(f"/board/orders/{order_id}/cancel", data={"reason": ""}, headers=HTMX)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/board/orders/{}/row"),
        ("POST", "/board/orders/{}/approve"),
        ("POST", "/board/orders/{}/cancel"),
        ("POST", "/board/orders/{}/address"),
    ],
)
async def test_unknown_order_fragment_is_a_404_message(
    board: httpx.AsyncClient, order_id: str, method: str, path: str
) -> None:
    data = address_fields(HOME) if path.endswith("address") else {"reason": ""}
    response = await board.request(
        method, path.format(order_id), data=data if method == "POST" else None, headers=HTMX
    )
    assert response.status_code == 404, response.text
    assert f"Order {order_id} does not exist." in response.text
    assert response.headers["hx-retarget"] == "#alerts", "the message goes to the alert area"
    assert "<html" not in response.text


async def test_unknown_order_page_is_a_404_page(board: httpx.AsyncClient, order_id: str) -> None:
    response = await board.get(f"/orders/{order_id}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text and f"Order {order_id} does not exist." in response.text

    bad_id = await board.get("/orders/bad%20id%21")
    assert bad_id.status_code == 400
    assert "order_id" in bad_id.text and "<html" in bad_id.text

    json_status = await board.get(f"/orders/{order_id}/status")
    assert json_status.status_code == 404
    assert json_status.json()["detail"] == f"Order {order_id} does not exist."


async def test_row_with_a_colon_in_the_id_is_addressable(board: httpx.AsyncClient) -> None:
    order_id = f"board:{uuid.uuid4().hex[:8]}.x"
    await start(board, order_id)
    row = await wait_for_row(board, order_id, awaiting_approval)
    assert f'data-order-id="{order_id}"' in row.text
    poll_url = re.search(r'hx-get="([^"]+)"', row.text)
    assert poll_url
    assert (await board.get(poll_url.group(1), headers=HTMX)).status_code == 200
    await board.post(f"/board/orders/{order_id}/cancel", data={"reason": ""}, headers=HTMX)


# Every state, rendered from a status as the workflow reports it.


def summary_in(state: str, closed: bool) -> OrderSummary:
    started = datetime.now(timezone.utc) - timedelta(seconds=4)
    steps = [StepStatus(name=name) for name in ORDER_STEPS]
    steps[0] = StepStatus("receive_order", "completed", 3, started.isoformat(), started.isoformat())
    status = OrderStatus(
        order_id=f"render-{state}",
        state=state,
        current_step=None if closed else "charge_payment",
        approved=False,
        address=Address(line1="<b>1 Main</b>", city="Springfield", postal_code="1", country="US"),
        payment=PaymentStatus(payment_id="pay-render", status="pending"),
        steps=steps,
        errors=[ErrorRecord("receive_order", 2, "flaky <failure>", started.isoformat())],
        shipping_attempts=0,
        shipping_workflow_id=None,
        started_at=started.isoformat(),
        deadline_at=(started + timedelta(seconds=15)).isoformat(),
        finished_at=(started + timedelta(seconds=3)).isoformat() if closed else None,
        reason={CANCELLED: "<i>changed mind</i>", FAILED: "deadline exceeded"}.get(state, ""),
        allowed_actions=[] if closed else ["approve", "cancel", "update_address"],
    )
    retrying = [] if closed else [
        RetryingStep(f"order-{status.order_id}", "charge_payment", 5, "charge <timeout>", started.isoformat())
    ]
    return OrderSummary(status=status, closed=closed, retrying=retrying)


@pytest.mark.parametrize("state", ORDER_STATES)
def test_row_renders_every_state(app: Litestar, state: str) -> None:
    closed = state in (SHIPPED, CANCELLED, FAILED)
    row = row_from_summary(summary_in(state, closed), datetime.now(timezone.utc))
    html = app.template_engine.get_template("_order_row.html").render(row=row)

    assert f'data-state="{state}"' in html
    assert f'<span class="badge badge-{state}">{state.replace("_", " ")}</span>' in html
    assert ("hx-get" in html) is not closed
    if closed:
        assert "ended after 3.00 s" in html and "<form" not in html
        assert "flaky &lt;failure&gt;" in html, "the last error the workflow recorded"
        assert "attempt 2" in html
    else:
        assert "charge payment" in html, "the current step"
        # 3 attempts of receive_order, and charge_payment is on its 5th.
        assert '<td class="num">8</td>' in html
        assert "charge &lt;timeout&gt;" in html and "attempt 4" in html
        assert re.search(r"1[01]\.\d s left", html), html
        assert "Approve" in html and "Cancel…" in html and "Address…" in html
        assert 'value="&lt;b&gt;1 Main&lt;/b&gt;"' in html, "the address form holds the address"
    if state == CANCELLED:
        assert "&lt;i&gt;changed mind&lt;/i&gt;" in html


def overview_figures_in(html: str) -> dict[str, str]:
    """The overview panel's figures by name, as the panel gives them."""
    return dict(re.findall(r'data-figure="(\w+)" data-value="([^"]*)"', html))


def test_overview_shows_both_admission_bounds(app: Litestar) -> None:
    """Places doing work, and open orders against MAX_ORDERS_OPEN: with many orders parked at
    review a start may wait though places are free, and the overview says why."""
    admission = AdmissionSnapshot(limit=12, in_use=3, waiting=2, refused_in_window=1, open_limit=40, open=40)
    overview = overview_from_rows([], datetime.now(timezone.utc), 60.0, 15.0, admission)
    html = app.template_engine.get_template("_overview.html").render(overview=overview)
    figures = overview_figures_in(html)
    assert figures["places_in_use"] == "3 of 12"
    assert figures["open_orders"] == "40 of 40"
    assert figures["starts_waiting"] == "2"


async def test_overview_counts_admission_without_a_start_of_its_own(workers: Client) -> None:
    """A web process that started no order (a replica, or one just restarted) still shows how
    many orders do work and are open: the overview counts them itself."""
    async with serving(create_app(temporal_client=workers, manage_pool=False)) as fresh:
        response = await fresh.get("/board/overview", headers=HTMX)
    assert response.status_code == 200, response.text
    figures = overview_figures_in(response.text)
    limits = get_settings().web
    for figure, limit in (("places_in_use", limits.max_orders_in_flight), ("open_orders", limits.max_orders_open)):
        # Before the first count the figure is a dash.
        assert re.fullmatch(r"\d+" + (f" of {limit}" if limit else ""), figures[figure]), figures
