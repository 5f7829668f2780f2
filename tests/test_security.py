"""Hostile input and who may change orders: over-long ids and bodies, markup in what operators
type, CSRF on the board, the optional operator token and the board's login, the start-up warning.

The apps run in the test's event loop as in tests/test_api.py, against the session's real
Temporal dev server, workers and PostgreSQL. Each test that needs OPERATOR_TOKEN or a secret key
builds its app with explicit settings, so nothing changes the environment of other tests.
(Escaping of `<script>` and quotes typed into a cancel reason or an address, through the real
actions, is covered in tests/test_board.py; here only a double quote inside an attribute.)
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import datetime, timezone
from typing import AsyncIterator

import httpx
import pytest_asyncio
from litestar import Litestar
from temporalio.client import Client

from orchestration.settings import Settings, WebSettings, get_settings
from orchestration.tables import Event, Order, Payment
from tests.test_api import HOME, serving, workflow_exists
from tests.test_board import HTMX, csrf_token_in, order_form, send_csrf_token, summary_in
from web.app import create_app
from web.board_views import row_from_summary
from web.security import CSRF_HEADER, OPERATOR_COOKIE

OPERATOR_TOKEN = "test-operator-token"
SECRET_KEY = "test-secret-key"
LONG_ID_LENGTH = 10_000
OVERSIZED_TEXT = "x" * 70_000


def settings_with(operator_token: str = "", secret_key: str = SECRET_KEY) -> Settings:
    return dataclasses.replace(
        get_settings(), web=WebSettings(operator_token=operator_token, secret_key=secret_key)
    )


def app_with(workers: Client, settings: Settings) -> Litestar:
    # The database fixture owns the shared pool; the app must not close it.
    return create_app(temporal_client=workers, settings=settings, manage_pool=False)


@pytest_asyncio.fixture(scope="module")
async def open_app(workers: Client) -> AsyncIterator[httpx.AsyncClient]:
    """No operator token: the default."""
    async with serving(app_with(workers, settings_with())) as client:
        yield client


@pytest_asyncio.fixture(scope="module")
async def guarded_app(workers: Client) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app_with(workers, settings_with(OPERATOR_TOKEN))) as client:
        yield client


def new_order_id() -> str:
    return f"sec-{uuid.uuid4().hex[:12]}"


async def assert_nothing_recorded(workers: Client, order_id: str) -> None:
    """No order, payment, event or workflow exists for the id (or, for an id too long to store,
    for any id that starts like it)."""
    prefix = order_id[:60]
    assert await Order.count().where(Order.id.like(f"{prefix}%")) == 0
    assert await Payment.count().where(Payment.order_id.like(f"{prefix}%")) == 0
    assert await Event.count().where(Event.order_id.like(f"{prefix}%")) == 0
    assert not await workflow_exists(workers, order_id)


# Hostile input.


async def test_overlong_order_id_is_rejected_without_side_effects(
    open_app: httpx.AsyncClient, workers: Client
) -> None:
    order_id = new_order_id() + "x" * LONG_ID_LENGTH
    for path, body in (
        ("start", {"payment_id": "pay-long"}),
        ("signals/approve", None),
        ("signals/cancel", {"reason": "long"}),
    ):
        response = await open_app.post(f"/orders/{order_id}/{path}", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["detail"] == (
            "Invalid request: path parameter 'order_id' must be at most 64 characters long."
        )
    board = await open_app.get(f"/orders/{order_id}")
    assert board.status_code == 400 and "order_id" in board.text
    await assert_nothing_recorded(workers, order_id)


async def test_oversized_bodies_are_rejected_without_side_effects(
    open_app: httpx.AsyncClient, workers: Client
) -> None:
    order_id = new_order_id()
    for path, body in (
        ("start", {"payment_id": f"pay-{order_id}", "address": {**HOME, "line2": OVERSIZED_TEXT}}),
        ("signals/cancel", {"reason": OVERSIZED_TEXT}),
        ("signals/update-address", {"address": {**HOME, "name": OVERSIZED_TEXT}}),
    ):
        response = await open_app.post(f"/orders/{order_id}/{path}", json=body)
        assert response.status_code == 413, response.text
        assert response.json() == {
            "status_code": 413,
            "detail": "The request body is larger than the 64 KiB allowed.",
        }

    await send_csrf_token(open_app)
    form = {**order_form(order_id), "address.line2": OVERSIZED_TEXT}
    on_board = await open_app.post("/board/orders", data=form, headers=HTMX)
    assert on_board.status_code == 413
    assert on_board.headers["hx-retarget"] == "#alerts"
    assert "larger than the 64 KiB allowed; nothing was done" in on_board.text
    await assert_nothing_recorded(workers, order_id)


def test_quotes_cannot_leave_an_attribute() -> None:
    summary = summary_in("awaiting_approval", closed=False)
    assert summary.status.address is not None
    summary.status.address.line1 = '"><script>alert("x")</script>'
    template = create_app(settings=settings_with()).template_engine.get_template("_order_row.html")
    html = template.render(row=row_from_summary(summary, datetime.now(timezone.utc)))
    assert 'value="&#34;&gt;&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"' in html
    assert "<script>" not in html


# CSRF on the board.


async def test_board_action_without_the_csrf_token_is_refused(workers: Client) -> None:
    async with serving(app_with(workers, settings_with())) as client:
        await client.get("/")  # has the CSRF cookie, but sends no token
        order_id = new_order_id()
        refused = await client.post("/board/orders", data=order_form(order_id), headers=HTMX)
        assert refused.status_code == 403
        assert refused.headers["hx-retarget"] == "#alerts", "shown in the alert area"
        assert "security token is missing or out of date" in refused.text
        assert "Reload the page" in refused.text

        without_js = await client.post(f"/board/orders/{order_id}/cancel", data={"reason": ""})
        assert without_js.status_code == 403
        assert "<html" in without_js.text and "security token" in without_js.text

        wrong = await client.post(
            "/board/orders", data=order_form(order_id), headers={**HTMX, CSRF_HEADER: "0" * 128}
        )
        assert wrong.status_code == 403
        await assert_nothing_recorded(workers, order_id)

        # The JSON API needs no CSRF token: it takes no cookies.
        approve = await client.post(f"/orders/{order_id}/signals/approve")
        assert approve.status_code == 404, approve.text


async def test_board_action_with_the_csrf_token_works_with_and_without_javascript(
    workers: Client,
) -> None:
    async with serving(app_with(workers, settings_with())) as client:
        page = await client.get("/")
        token = csrf_token_in(page.text)
        assert f"<body hx-headers='{{\"{CSRF_HEADER}\": \"{token}\"}}'>" in page.text, (
            "htmx sends the token as a header"
        )

        order_id = new_order_id()
        started = await client.post(
            "/board/orders", data=order_form(order_id), headers={**HTMX, CSRF_HEADER: token}
        )
        assert started.status_code == 200, started.text
        assert f"Order {order_id} started." in started.text

        # A plain form post carries the token in its hidden field instead.
        cancelled = await client.post(
            f"/board/orders/{order_id}/cancel", data={"reason": "", "_csrf_token": token}
        )
        assert cancelled.status_code in (303, 409), cancelled.text


async def test_a_new_secret_key_needs_a_reload_not_new_cookies(workers: Client) -> None:
    """After a restart with another key, an open page's token is refused; reloading the page is
    enough to get a working one (the old cookie does not stick)."""
    async with serving(app_with(workers, settings_with(secret_key="first"))) as first:
        token = await send_csrf_token(first)
        cookies = first.cookies
    async with serving(app_with(workers, settings_with(secret_key="second"))) as second:
        second.cookies = cookies
        stale = await second.post(
            "/board/orders", data={"order_id": ""}, headers={**HTMX, CSRF_HEADER: token}
        )
        assert stale.status_code == 403
        await send_csrf_token(second)
        fresh = await second.post("/board/orders", data={"order_id": ""}, headers=HTMX)
        assert fresh.status_code == 422, "past the CSRF check, to the form's own validation"


# The operator token.


async def test_json_api_needs_the_bearer_token_when_one_is_set(
    guarded_app: httpx.AsyncClient, workers: Client
) -> None:
    order_id = new_order_id()
    start = f"/orders/{order_id}/start"
    body = {"payment_id": f"pay-{order_id}", "address": HOME}

    missing = await guarded_app.post(start, json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {
        "status_code": 401,
        "detail": "This request needs the operator token: "
        "send the header 'Authorization: Bearer <OPERATOR_TOKEN>'.",
    }
    wrong = await guarded_app.post(start, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "wrong operator token" in wrong.json()["detail"]
    await assert_nothing_recorded(workers, order_id)

    bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    assert (await guarded_app.post(start, json=body, headers=bearer)).status_code == 201
    cancel = f"/orders/{order_id}/signals/cancel"
    assert (await guarded_app.post(cancel, json={"reason": "x"})).status_code == 401
    assert (await guarded_app.post(cancel, json={"reason": "x"}, headers=bearer)).status_code == 200

    for read in (f"/orders/{order_id}/status", "/orders", "/health", "/schema/openapi.json"):
        assert (await guarded_app.get(read)).status_code == 200, read


async def test_board_login_allows_actions_until_logout(
    guarded_app: httpx.AsyncClient, workers: Client
) -> None:
    board = await guarded_app.get("/")
    assert board.status_code == 200, "reading the board needs no login"
    assert '<a href="/login">Log in</a>' in board.text
    token = await send_csrf_token(guarded_app)
    order_id = new_order_id()

    refused = await guarded_app.post("/board/orders", data=order_form(order_id), headers=HTMX)
    assert refused.status_code == 401
    assert refused.headers["hx-retarget"] == "#alerts"
    assert "Changing orders needs an operator login." in refused.text
    assert '<a href="/login">Log in</a>' in refused.text
    without_js = await guarded_app.post("/board/orders", data=order_form(order_id))
    assert without_js.status_code == 401 and 'href="/login"' in without_js.text
    await assert_nothing_recorded(workers, order_id)

    login_page = await guarded_app.get("/login")
    assert login_page.status_code == 200 and 'name="token"' in login_page.text
    wrong = await guarded_app.post("/login", data={"token": "nope", "_csrf_token": token})
    assert wrong.status_code == 401 and "not the operator token" in wrong.text
    assert OPERATOR_COOKIE not in guarded_app.cookies

    login = await guarded_app.post("/login", data={"token": OPERATOR_TOKEN, "_csrf_token": token})
    assert login.status_code == 303 and login.headers["location"] == "/"
    set_cookie = login.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    cookie = guarded_app.cookies[OPERATOR_COOKIE]
    assert OPERATOR_TOKEN not in cookie and len(cookie) == 64, "an HMAC, never the token"

    started = await guarded_app.post("/board/orders", data=order_form(order_id), headers=HTMX)
    assert started.status_code == 200, started.text
    assert "Log out" in (await guarded_app.get("/")).text

    assert (await guarded_app.post("/logout")).status_code == 303
    assert OPERATOR_COOKIE not in guarded_app.cookies
    after_logout = await guarded_app.post(
        f"/board/orders/{order_id}/cancel", data={"reason": ""}, headers=HTMX
    )
    assert after_logout.status_code == 401
    bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    await guarded_app.post(f"/orders/{order_id}/signals/cancel", headers=bearer)


async def test_a_cookie_made_without_the_secret_key_is_refused(workers: Client) -> None:
    async with serving(app_with(workers, settings_with(OPERATOR_TOKEN))) as client:
        await send_csrf_token(client)
        client.cookies.set(OPERATOR_COOKIE, OPERATOR_TOKEN)
        response = await client.post("/board/orders", data={"order_id": ""}, headers=HTMX)
        assert response.status_code == 401


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def started_warnings(workers: Client, operator_token: str) -> list[logging.LogRecord]:
    """The web.security records an app logs while it starts."""
    # On web.security itself: the app's start-up replaces the root logger's handlers.
    records = Records()
    security_logger = logging.getLogger("web.security")
    security_logger.addHandler(records)
    try:
        async with serving(app_with(workers, settings_with(operator_token))):
            pass
    finally:
        security_logger.removeHandler(records)
    return records.records


async def test_an_open_server_says_so_once_at_start_up(workers: Client) -> None:
    [warning] = await started_warnings(workers, operator_token="")
    assert warning.levelno == logging.WARNING
    assert getattr(warning, "event") == "operator_token_unset"
    assert "open to anyone who can reach the server" in warning.getMessage()
    assert await started_warnings(workers, operator_token=OPERATOR_TOKEN) == []

