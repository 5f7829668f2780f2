"""The board in a real headless Chromium (Debian's package, driven by Playwright's async API),
against the app served over real HTTP by uvicorn in the test's event loop, so it shares the
session's workers and database pool.

Every wait is for a condition on the page, bounded by the order's 15-s deadline. Screenshots of
the board go to test-artifacts/: board.png, and board-states.png from the test that stages orders
in several states (the README's static/board.png is a copy of it). Debian's chromium must be
installed (scripts/test installs it); without it these tests fail rather than skip.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest_asyncio
from playwright.async_api import Browser, Dialog, Page, Route, async_playwright, expect
from temporalio.client import Client

from orchestration.settings import get_settings
from tests.conftest import served_over_http
from tests.test_api import HOME, OFFICE, order_row
from tests.test_board import overview_figures_in
from web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
# The README's picture (static/board.png) is a copy of this one.
STATES_SCREENSHOT = ARTIFACTS / "board-states.png"
# An order ends within 15 s of its start; waiting a little longer than that means a bug.
ORDER_END_MS = 17_000
STEP_MS = 8_000


@pytest_asyncio.fixture(scope="module")
async def base_url(workers: Client) -> AsyncIterator[str]:
    # The database fixture owns the shared pool; the app must not close it.
    async with served_over_http(create_app(temporal_client=workers, manage_pool=False)) as url:
        yield url


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    board_page = await context.new_page()
    dialogs: list[str] = []

    async def refuse_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    board_page.on("dialog", refuse_dialog)
    yield board_page
    await context.close()
    assert not dialogs, f"the board must not use alert boxes: {dialogs}"


@pytest_asyncio.fixture
async def api(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url) as client:
        yield client


def row(page: Page, order_id: str):
    return page.locator(f'tr.order-row[data-order-id="{order_id}"]')


async def open_board(page: Page, base_url: str) -> None:
    await page.goto(base_url + "/")
    # Survives only as long as the document does: a reload would drop it.
    await page.evaluate("window.sameDocument = true")


async def still_same_document(page: Page) -> bool:
    return await page.evaluate("window.sameDocument === true")


async def start_from_form(page: Page, address: dict[str, str] | None = HOME) -> str:
    form = page.locator("#new-order")
    order_id = await form.locator('[name="order_id"]').input_value()
    for name, value in (address or {}).items():
        await form.locator(f'[name="address.{name}"]').fill(value)
    await form.get_by_role("button", name="Start order").click()
    await expect(form.get_by_text(f"Order {order_id} started.")).to_be_visible(timeout=STEP_MS)
    return order_id


async def start_from_api(api: httpx.AsyncClient, address: dict[str, str] | None = HOME) -> str:
    order_id = f"ui-{uuid.uuid4().hex[:10]}"
    body: dict = {"payment_id": f"pay-{order_id}", "items": [{"sku": "ABC", "qty": 2}]}
    if address:
        body["address"] = address
    response = await api.post(f"/orders/{order_id}/start", json=body)
    assert response.status_code == 201, response.text
    return order_id


async def awaiting_approval(page: Page, order_id: str) -> None:
    await expect(row(page, order_id)).to_have_attribute(
        "data-state", "awaiting_approval", timeout=STEP_MS
    )


async def test_order_from_the_form_is_approved_and_ships_without_a_reload(
    page: Page, base_url: str
) -> None:
    await open_board(page, base_url)
    order_id = await start_from_form(page)
    await awaiting_approval(page, order_id)
    await expect(row(page, order_id).locator(".deadline-fill")).to_be_visible()

    await row(page, order_id).get_by_role("button", name="Approve").click()
    await expect(row(page, order_id)).to_have_attribute("data-state", "shipped", timeout=ORDER_END_MS)
    await expect(row(page, order_id).get_by_role("button", name="Approve")).to_have_count(0)
    await expect(row(page, order_id)).to_contain_text("ended after")
    assert await still_same_document(page)
    # The new-order poller has run meanwhile: the order is on the board once.
    await expect(page.locator(f'tbody.order[data-order-id="{order_id}"]')).to_have_count(1)
    assert await page.locator('#new-order [name="order_id"]').input_value() != order_id

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)


NEW_ORDERS_POLL = re.compile(r"/board/rows\?")


async def shown_once(page: Page, order_id: str) -> None:
    await expect(page.locator(f'tbody.order[data-order-id="{order_id}"]')).to_have_count(1)
    await expect(row(page, order_id)).to_have_count(1)


async def hold_first_poll(page: Page) -> Route:
    """Hold the next new-orders poll in the browser (later ones go through) and return it, to
    be answered when the test says."""
    held: asyncio.Future[Route] = asyncio.get_running_loop().create_future()

    async def hold_first(route: Route) -> None:
        if held.done():
            await route.continue_()
        else:
            held.set_result(route)

    await page.route(NEW_ORDERS_POLL, hold_first)
    return await asyncio.wait_for(held, timeout=STEP_MS / 1000)


async def until_recorded(order_id: str) -> None:
    """A poll's answer comes from the database, which the workflow writes just after the start."""
    for _ in range(ORDER_END_MS // 100):
        if await order_row(order_id):
            return
        await asyncio.sleep(0.1)


async def test_an_order_is_shown_once_when_a_poll_answered_after_its_start_brings_it(
    page: Page, base_url: str
) -> None:
    """A poll is sent before the order reaches the board but answered after it has started, so
    its answer and the form's both carry the order. The browser holds the poll back until the
    form's answer is on the board and the order is in the database."""
    await open_board(page, base_url)
    poll = await hold_first_poll(page)
    order_id = await start_from_form(page)
    await shown_once(page, order_id)
    await until_recorded(order_id)

    # htmx fires afterRequest on the poller once the answer's out-of-band parts are swapped. (A
    # function, so that evaluate does not wait for the promise it stores.)
    await page.evaluate(
        """() => { window.pollAnswered = new Promise((answered) => document
             .querySelector('.new-orders-poller')
             .addEventListener('htmx:afterRequest', answered, {once: true})) }"""
    )
    answer = await poll.fetch()
    assert f'data-order-id="{order_id}"' in await answer.text(), "the poll must bring the order too"
    await poll.fulfill(response=answer)
    await asyncio.wait_for(page.evaluate("window.pollAnswered.then(() => true)"), STEP_MS / 1000)
    await shown_once(page, order_id)
    assert await still_same_document(page)


async def test_a_poll_answered_after_a_filter_change_adds_nothing_to_the_new_view(
    page: Page, base_url: str, api: httpx.AsyncClient
) -> None:
    """The poller of the view of all orders sends a poll; before it is answered, the operator
    switches to the shipped orders. The answer carries an order in flight, which must not land
    on the shipped orders' view."""
    await open_board(page, base_url)
    poll = await hold_first_poll(page)
    order_id = await start_from_api(api)
    await until_recorded(order_id)
    await page.select_option("#state-filter", "shipped")
    await expect(page).to_have_url(re.compile(r"state=shipped"), timeout=STEP_MS)

    answer = await poll.fetch()
    assert f'data-order-id="{order_id}"' in await answer.text(), "the poll must bring the order"
    await poll.fulfill(response=answer)
    # Nothing to wait for when nothing happens: the answer is swapped within milliseconds.
    await asyncio.sleep(1)
    await expect(row(page, order_id)).to_have_count(0)
    assert await still_same_document(page)
    await api.post(f"/orders/{order_id}/signals/cancel")


async def test_an_order_is_shown_once_when_the_form_answers_after_a_poll_brought_it(
    page: Page, base_url: str
) -> None:
    """The order starts at once, but the browser holds the form's answer back until a poll has
    put the order on the board; then the form's answer carries it a second time."""
    await open_board(page, base_url)
    form_answered = asyncio.Event()

    async def answer_late(route: Route) -> None:
        answer = await route.fetch()
        await form_answered.wait()
        await route.fulfill(response=answer)

    await page.route("**/board/orders", answer_late)
    form = page.locator("#new-order")
    order_id = await form.locator('[name="order_id"]').input_value()
    await form.get_by_role("button", name="Start order").click()
    await expect(row(page, order_id)).to_have_count(1, timeout=ORDER_END_MS)

    form_answered.set()
    # The form's answer is swapped in one go, its out-of-band part with the rest.
    await expect(form.get_by_text(f"Order {order_id} started.")).to_be_visible(timeout=STEP_MS)
    await shown_once(page, order_id)
    assert await still_same_document(page)


async def test_the_start_button_is_disabled_while_a_start_is_under_way(page: Page, base_url: str) -> None:
    """At the admission limit a start waits for a place; a second click must not race it. The
    browser holds the request back for a second, as a start waiting for a place would take."""
    await open_board(page, base_url)

    async def held_back(route) -> None:
        await asyncio.sleep(1)
        await route.continue_()

    await page.route("**/board/orders", held_back)
    form = page.locator("#new-order")
    order_id = await form.locator('[name="order_id"]').input_value()
    await form.get_by_role("button", name="Start order").click()
    await expect(form.get_by_role("button", name="Start order")).to_be_disabled()
    await expect(form.get_by_text(f"Order {order_id} started.")).to_be_visible(timeout=STEP_MS)
    await expect(form.get_by_role("button", name="Start order")).to_be_enabled()
    await page.unroute("**/board/orders")
    await row(page, order_id).get_by_text("Cancel…").click()
    await row(page, order_id).get_by_role("button", name="Cancel order").click()
    await expect(row(page, order_id)).to_have_attribute("data-state", "cancelled", timeout=ORDER_END_MS)


async def test_order_started_elsewhere_appears_and_is_cancelled_with_a_reason(
    page: Page, base_url: str, api: httpx.AsyncClient
) -> None:
    await open_board(page, base_url)
    order_id = await start_from_api(api)
    await awaiting_approval(page, order_id)

    await row(page, order_id).get_by_text("Cancel…").click()
    await row(page, order_id).get_by_label("Reason").fill("<b>customer</b> called")
    await row(page, order_id).get_by_role("button", name="Cancel order").click()
    await expect(row(page, order_id)).to_have_attribute("data-state", "cancelled", timeout=ORDER_END_MS)
    await expect(row(page, order_id).locator(".reason")).to_have_text("<b>customer</b> called")
    assert await still_same_document(page)


async def test_new_address_from_the_board_is_shown_on_the_order_page(
    page: Page, base_url: str
) -> None:
    await open_board(page, base_url)
    order_id = await start_from_form(page)
    await awaiting_approval(page, order_id)

    await row(page, order_id).get_by_text("Address…").click()
    address_form = row(page, order_id).locator("form.address-form")
    await address_form.get_by_label("Country").fill("U")
    await address_form.get_by_role("button", name="Send new address").click()
    await expect(row(page, order_id)).to_contain_text("Country must be at least 2 characters long")

    address_form = row(page, order_id).locator("form.address-form")
    for name, label in (("line1", "Street"), ("city", "City"), ("postal_code", "Postal code")):
        await address_form.get_by_label(label, exact=True).fill(OFFICE[name])
    await address_form.get_by_label("Name").fill(OFFICE["name"])
    await address_form.get_by_label("Country").fill(OFFICE["country"])
    await address_form.get_by_role("button", name="Send new address").click()
    order_rows = page.locator(f'tbody.order[data-order-id="{order_id}"]')
    await expect(order_rows.get_by_text(f"Order {order_id}: address updated.")).to_be_visible(timeout=STEP_MS)
    await row(page, order_id).get_by_role("button", name="Approve").click()
    await expect(row(page, order_id)).to_have_attribute("data-state", "shipped", timeout=ORDER_END_MS)

    await row(page, order_id).get_by_role("link", name=order_id).click()
    await expect(page.locator("h1")).to_contain_text(order_id)
    address = page.locator("dd.address")
    for part in ("Reception", "9 Office Park", "54321 Shelbyville"):
        await expect(address).to_contain_text(part)
    await expect(page.locator(".timeline")).to_contain_text("dispatch carrier")
    await expect(page.locator("table.events")).to_contain_text("address updated")
    link = page.get_by_role("link", name="Open in Temporal UI ↗")
    assert (await link.get_attribute("href")).endswith(f"/workflows/order-{order_id}")


async def test_refusal_is_shown_on_the_row_not_in_a_dialog(
    page: Page, base_url: str, api: httpx.AsyncClient
) -> None:
    await open_board(page, base_url)
    order_id = await start_from_form(page)
    await awaiting_approval(page, order_id)
    # An open form pauses the row's polling, so the row still offers Cancel after the order
    # has shipped: the server refuses it, and the refusal appears on the row.
    await row(page, order_id).get_by_text("Cancel…").click()
    assert (await api.post(f"/orders/{order_id}/signals/approve")).status_code == 200
    for _ in range(ORDER_END_MS // 100):
        record = await order_row(order_id)
        if record and record["state"] == "shipped":
            break
        await asyncio.sleep(0.1)
    await row(page, order_id).get_by_role("button", name="Cancel order").click()

    notice = page.locator(f'tbody.order[data-order-id="{order_id}"] .notice-refused')
    await expect(notice).to_contain_text(f"Order {order_id} cannot be cancelled now", timeout=STEP_MS)
    await expect(row(page, order_id)).to_have_attribute("data-state", "shipped")
    assert await still_same_document(page)


async def test_board_shows_orders_in_every_kind_of_state_at_once(
    page: Page, base_url: str, api: httpx.AsyncClient
) -> None:
    """Orders in several states at once: shipped, cancelled, failed, in flight, waiting for
    approval and waiting for an address."""
    # Two orders paying with one payment id, started together (so both pass the start's check):
    # the one charged second fails, since the payment id already belongs to the other.
    twins = [f"ui-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    starts = await asyncio.gather(
        *(api.post(f"/orders/{twin}/start", json={"payment_id": f"pay-{twins[0]}", "address": HOME}) for twin in twins)
    )
    assert [start.status_code for start in starts] == [201, 201], [start.text for start in starts]
    await asyncio.gather(*(api.post(f"/orders/{twin}/signals/approve") for twin in twins))
    shipped, cancelled, readdressed = [await start_from_api(api) for _ in range(3)]
    await api.post(f"/orders/{shipped}/signals/approve")
    await api.post(f"/orders/{cancelled}/signals/cancel", json={"reason": "customer called"})
    await api.post(
        f"/orders/{readdressed}/signals/update-address", json={"address": OFFICE}
    )
    await api.post(f"/orders/{readdressed}/signals/approve")

    await page.set_viewport_size({"width": 1480, "height": 820})
    await open_board(page, base_url)
    for order_id, state in ((shipped, "shipped"), (cancelled, "cancelled"), (readdressed, "shipped")):
        await expect(row(page, order_id)).to_have_attribute("data-state", state, timeout=ORDER_END_MS)
    failed = page.locator(", ".join(f'tr.order-row[data-order-id="{twin}"][data-state="failed"]' for twin in twins))
    await expect(failed).to_have_count(1, timeout=ORDER_END_MS)
    await expect(failed).to_contain_text("already belongs to order")
    no_address = await start_from_api(api, address=None)
    in_flight = await start_from_form(page)
    waiting = await start_from_form(page)
    await awaiting_approval(page, in_flight)
    await awaiting_approval(page, waiting)
    await awaiting_approval(page, no_address)
    await expect(row(page, no_address)).to_contain_text("waits for approval, shipping address")
    await row(page, no_address).get_by_role("button", name="Approve").click()
    await expect(row(page, no_address)).to_have_attribute("data-state", "awaiting_address", timeout=STEP_MS)
    await expect(row(page, no_address)).to_contain_text("waits for shipping address")
    await row(page, in_flight).get_by_role("button", name="Approve").click()
    shipping_states = ", ".join(
        f'tr.order-row[data-order-id="{in_flight}"][data-state="{state}"]'
        # Past review; it may already have shipped on a fast machine.
        for state in ("charged", "shipping", "dispatched", "shipped")
    )
    await page.locator(shipping_states).wait_for(timeout=ORDER_END_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    # From the top, with the overview panel (the start form's answer may have scrolled the page),
    # once the panel has caught up with the orders waiting at review.
    await expect(page.locator('#overview [data-figure="awaiting_approval"]')).not_to_have_attribute(
        "data-value", "0", timeout=STEP_MS
    )
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(STATES_SCREENSHOT))


OVERVIEW_WINDOW_SECONDS = 15.0


async def overview_figures(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.get("/board/overview")
    assert response.status_code == 200, response.text
    return overview_figures_in(response.text)


async def test_the_overview_counts_the_orders_it_saw_end(page: Page, workers: Client) -> None:
    """The panel's figures against orders this test ran: 3 shipped and 1 cancelled. The app
    looks back OVERVIEW_WINDOW_SECONDS, and the test first waits until no order of an earlier
    test ended within that, so that the window holds exactly its own."""
    settings = dataclasses.replace(
        get_settings(),
        web=dataclasses.replace(get_settings().web, overview_window_seconds=OVERVIEW_WINDOW_SECONDS),
    )
    app = create_app(temporal_client=workers, settings=settings, manage_pool=False)
    async with served_over_http(app) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(int(OVERVIEW_WINDOW_SECONDS * 10) + 50):
            figures = await overview_figures(client)
            if figures["shipped"] == figures["cancelled"] == figures["failed"] == "0":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"earlier orders never left the window: {figures}")
        before = figures
        shipped = [await start_from_api(client) for _ in range(3)]
        cancelled = await start_from_api(client)
        for order_id in shipped:
            assert (await client.post(f"/orders/{order_id}/signals/approve")).status_code == 200
        assert (await client.post(f"/orders/{cancelled}/signals/cancel")).status_code == 200
        for order_id in shipped:
            final = await client.get(f"/orders/{order_id}/status", params={"wait": 20})
            assert final.json()["state"] == "shipped", final.text

        await page.goto(url + "/")
        panel = page.locator("#overview")
        for name, value in (("shipped", "3"), ("cancelled", "1"), ("failed", "0"), ("missed", "0")):
            await expect(panel.locator(f'[data-figure="{name}"]')).to_have_attribute(
                "data-value", value, timeout=STEP_MS
            )
        for name in ("awaiting_approval", "in_progress"):
            await expect(panel.locator(f'[data-figure="{name}"]')).to_have_attribute(
                "data-value", before[name]
            )
        await expect(panel.locator('[data-figure="orders_per_second"]')).to_have_attribute(
            "data-value", f"{4 / OVERVIEW_WINDOW_SECONDS:.2f}"
        )
        await expect(panel.locator("svg.histogram")).to_be_visible()
        await expect(panel.locator("svg.histogram")).to_contain_text("15 s promise")
        # Live: the panel refreshes itself (every 2 s) without a reload.
        await page.evaluate("window.sameDocument = true")
        await start_from_api(client, address=None)
        await expect(panel.locator('[data-figure="awaiting_approval"]')).to_have_attribute(
            "data-value", str(int(before["awaiting_approval"]) + 1), timeout=STEP_MS
        )
        assert await still_same_document(page)
