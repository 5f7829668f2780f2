"""The operator board: HTML pages and htmx fragments over OrderService.

Every page works without JavaScript: forms post, and the answer is a page or a redirect to the
order's page. htmx makes the board live: each in-flight row polls its own fragment every second
and stops when the fragment answers 286 (the order has ended); a poller fetches orders not shown
yet; actions and the new-order form swap in the row they changed, with a refusal or a validation
error shown on that row. Errors of htmx requests are retargeted to the page's alert area, so an
error message never replaces a row.

Every form and htmx request carries the CSRF token; with OPERATOR_TOKEN set, changing an order
also needs the operator's login at /login (both are decided in web/security.py).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Awaitable, Callable, Literal, Optional, TypeVar
from urllib.parse import quote

from litestar import Controller, Response, get, post
from litestar.params import QueryParameter, URLEncodedBody
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER, HTTP_409_CONFLICT, HTTP_422_UNPROCESSABLE_ENTITY

from web.board_views import (
    BOARD_FILTERS,
    FILTER_LABELS,
    Notice,
    OrderRow,
    row_from_record,
    row_from_summary,
    starting_row,
    timeline,
)
from web.deps import OrderId, Service
from web.forms import (
    ITEM_ROWS,
    FieldErrors,
    FormState,
    address_from_form,
    cancel_from_form,
    fresh_form,
    new_order_from_form,
)
from web.html_errors import HTML_EXCEPTION_HANDLERS
from web.problems import ActionNotAllowed, OrderConflict, OrderNotFound
from web.schemas import DEFAULT_LIST_LIMIT
from web.service import OrderService
from web.summary_cache import NotLoadedYet
from web.temporal_gateway import ActionOutcome, shipping_workflow_id_for

T = TypeVar("T")

# htmx stops polling an element whose request is answered with this status.
HX_STOP_POLLING = 286
STATUS_AGE_HEADER = "X-Status-Age"
# A row whose status is older than this says so: the operator sees it is behind, not stuck.
STALE_STATUS_SECONDS = 3.0
FIRST_STATUS_WAIT_SECONDS = 0.1
BOARD_LIMIT = DEFAULT_LIST_LIMIT

BoardFilter = Literal[tuple(BOARD_FILTERS)]  # type: ignore[valid-type]
# `state` is a name Litestar reserves for the app state, hence the alias.
FilterParameter = Annotated[BoardFilter, QueryParameter(name="state")]
FormBody = URLEncodedBody[dict[str, str]]


def _now() -> datetime:
    return datetime.now(timezone.utc)


async def _rows(order_service: OrderService, orders: list[dict[str, Any]]) -> list[OrderRow]:
    summaries = await order_service.order_summaries(order["id"] for order in orders)
    now = _now()
    return [
        row_from_record(order)
        if (summary := summaries[order["id"]]) is None
        else row_from_summary(summary, now)
        for order in orders
    ]


async def _row(order_service: OrderService, order_id: str, *, fresh: bool = False) -> OrderRow:
    """The row from Temporal's status. A poll waits FIRST_STATUS_WAIT_SECONDS at most for the
    first status of an order the database knows, then shows the database's record (its next
    poll the status): under load a status query waits behind the order's workflow task, and a
    hundred new rows waiting for theirs made the board slow where it had something to show."""
    try:
        summary = await order_service.order_summary(
            order_id, fresh=fresh, wait=None if fresh else FIRST_STATUS_WAIT_SECONDS
        )
    except NotLoadedYet:
        if (order := await order_service.order_row(order_id)) is not None:
            return row_from_record(order, loading=True)
        # Nothing else to show (or no such order): wait for Temporal's answer.
        summary = await order_service.order_summary(order_id)
    return row_from_summary(summary, _now())


async def _board_page(
    order_service: OrderService,
    view: str,
    form: FormState,
    form_note: Optional[Notice] = None,
    status_code: int = 200,
) -> Template:
    orders = await order_service.recent_orders(BOARD_FILTERS[view], BOARD_LIMIT)
    return Template(
        template_name="board.html",
        context={
            "overview": await order_service.overview(),
            "rows": await _rows(order_service, orders),
            "view": view,
            "filters": FILTER_LABELS,
            "form": form,
            "form_note": form_note,
            "item_rows": range(ITEM_ROWS),
        },
        status_code=status_code,
    )


async def _order_page(
    order_service: OrderService,
    order_id: str,
    *,
    fragment: bool = False,
    notice: Optional[Notice] = None,
    forms: Optional[dict[str, FormState]] = None,
    status_code: int = 200,
) -> Template:
    record = await order_service.order_record(order_id)
    try:
        summary, workflow_status = await order_service.order_view(order_id)
    except OrderNotFound:
        # Temporal may have deleted a long-finished workflow; the database still knows it.
        if record.order is None:
            raise
        summary, workflow_status = None, None
    shipping_workflow_id = None
    if workflow_status and workflow_status["shipping_attempts"]:
        shipping_workflow_id = shipping_workflow_id_for(
            order_id, workflow_status["shipping_attempts"]
        )
        if not workflow_status["shipping"]:
            # The status follows the shipping child only while both run; the timeline of a
            # finished order shows its last shipping attempt too.
            workflow_status["shipping"] = await order_service.shipping_attempt_status(
                shipping_workflow_id
            )
    now = _now()
    row = row_from_record(record.order) if summary is None else row_from_summary(summary, now)
    context = {
        "row": row,
        "workflow": workflow_status,
        "record": record,
        "shipping_workflow_id": shipping_workflow_id,
        "timeline": timeline(workflow_status, now) if workflow_status else [],
        "notice": notice,
        "forms": forms or {},
    }
    if fragment:
        return HTMXTemplate(
            template_name="_order_detail.html",
            context=context,
            status_code=HX_STOP_POLLING if row.closed else status_code,
        )
    return Template(template_name="order.html", context=context, status_code=status_code)


async def _after_action(
    request: HTMXRequest,
    order_service: OrderService,
    order_id: str,
    notice: Notice,
    status_code: int,
    forms: Optional[dict[str, FormState]] = None,
) -> Response:
    """The changed row with the action's outcome; without htmx, the order's page."""
    if not request.htmx:
        return await _order_page(
            order_service, order_id, notice=notice, forms=forms, status_code=status_code
        )
    return HTMXTemplate(
        template_name="_order_group.html",
        context={
            "row": await _row(order_service, order_id, fresh=True),
            "notice": notice,
            "forms": forms or {},
        },
        status_code=status_code,
    )


async def _act(
    request: HTMXRequest,
    order_service: OrderService,
    order_id: str,
    action: Callable[[], Awaitable[ActionOutcome]],
) -> Response:
    """Run an operator action; the row shows its outcome in the workflow's words."""
    try:
        outcome = await action()
    except ActionNotAllowed as refusal:
        return await _after_action(
            request, order_service, order_id, Notice("refused", str(refusal)), HTTP_409_CONFLICT
        )
    if not request.htmx:
        return Redirect(f"/orders/{quote(order_id)}", status_code=HTTP_303_SEE_OTHER)
    notice = Notice("ok" if outcome.result else "queued", outcome.sentence(order_id))
    return await _after_action(request, order_service, order_id, notice, 200)


async def _act_on_form(
    request: HTMXRequest,
    order_service: OrderService,
    order_id: str,
    form_name: str,
    data: dict[str, str],
    parsed: tuple[Optional[T], FieldErrors],
    action: Callable[[T], Awaitable[ActionOutcome]],
) -> Response:
    """Run the action a row's form asks for, once the form parsed; otherwise the row again with
    the form open, its input kept and its errors shown."""
    request_body, errors = parsed
    if request_body is not None:
        return await _act(request, order_service, order_id, lambda: action(request_body))
    return await _after_action(
        request,
        order_service,
        order_id,
        Notice("invalid", "Nothing was sent: correct the fields marked below."),
        HTTP_422_UNPROCESSABLE_ENTITY,
        {form_name: FormState(dict(data), errors)},
    )


class BoardController(Controller):
    include_in_schema = False
    # Pages and fragments answer errors in HTML; the JSON API keeps its JSON errors.
    exception_handlers = HTML_EXCEPTION_HANDLERS

    @get("/", name="board")
    async def board(self, order_service: Service, view: FilterParameter = "all") -> Template:
        return await _board_page(order_service, view, fresh_form())

    @get("/board/overview")
    async def overview(self, order_service: Service) -> HTMXTemplate:
        """The overview panel, polled by every open board (cached: web/service.py)."""
        return HTMXTemplate(
            template_name="_overview.html", context={"overview": await order_service.overview()}
        )

    @get("/board/rows")
    async def new_rows(
        self,
        order_service: Service,
        view: FilterParameter = "all",
        shown: Annotated[Optional[list[str]], QueryParameter()] = None,
    ) -> HTMXTemplate:
        """The recent orders the page does not show yet, newest first."""
        orders = await order_service.recent_orders(BOARD_FILTERS[view], BOARD_LIMIT)
        known = set(shown or ())
        new_orders = [order for order in orders if order["id"] not in known]
        return HTMXTemplate(
            template_name="_new_rows.html",
            context={"rows": await _rows(order_service, new_orders), "view": view},
        )

    @get("/board/orders/{order_id:str}/row")
    async def row(self, order_service: Service, order_id: OrderId) -> HTMXTemplate:
        row = await _row(order_service, order_id)
        age = order_service.summary_age(order_id)
        return HTMXTemplate(
            template_name="_order_row.html",
            context={"row": row, "stale_seconds": age if age and age >= STALE_STATUS_SECONDS else None},
            status_code=HX_STOP_POLLING if row.closed else 200,
            # How old the shown status is (rows are served from the live cache); for scripts
            # and the benchmark, which report it beside the row's answer time.
            headers={} if age is None else {STATUS_AGE_HEADER: f"{age:.3f}"},
        )

    @post("/board/orders", status_code=200)
    async def start_order(
        self, request: HTMXRequest, order_service: Service, data: FormBody
    ) -> Response:
        form = FormState(values=dict(data))
        new_order, form.errors = new_order_from_form(data)
        status_code = HTTP_422_UNPROCESSABLE_ENTITY
        if new_order is not None:
            body = new_order.body
            try:
                await order_service.start_order(
                    new_order.order_id,
                    body.payment_id,
                    [item.to_item() for item in body.items],
                    body.address.to_address() if body.address else None,
                )
            except OrderConflict as conflict:
                form.errors["form"] = str(conflict)
                status_code = HTTP_409_CONFLICT
        if form.errors:
            if not request.htmx:
                return await _board_page(order_service, "all", form, status_code=status_code)
            return HTMXTemplate(
                template_name="_new_order_form.html",
                context={"form": form, "item_rows": range(ITEM_ROWS)},
                status_code=status_code,
            )
        assert new_order is not None
        if not request.htmx:
            return Redirect(f"/orders/{quote(new_order.order_id)}", status_code=HTTP_303_SEE_OTHER)
        try:
            row = await _row(order_service, new_order.order_id)
        except OrderNotFound:
            row = starting_row(new_order.order_id)
        return HTMXTemplate(
            template_name="_order_started.html",
            context={
                "row": row,
                "form": fresh_form(),
                "form_note": Notice("ok", f"Order {new_order.order_id} started."),
                "item_rows": range(ITEM_ROWS),
            },
        )

    @post("/board/orders/{order_id:str}/approve", status_code=200)
    async def approve(
        self, request: HTMXRequest, order_service: Service, order_id: OrderId
    ) -> Response:
        return await _act(request, order_service, order_id, lambda: order_service.approve(order_id))

    @post("/board/orders/{order_id:str}/cancel", status_code=200)
    async def cancel(
        self, request: HTMXRequest, order_service: Service, order_id: OrderId, data: FormBody
    ) -> Response:
        return await _act_on_form(
            request, order_service, order_id, "cancel", data, cancel_from_form(data),
            lambda cancel: order_service.cancel(order_id, cancel.reason),
        )

    @post("/board/orders/{order_id:str}/address", status_code=200)
    async def update_address(
        self, request: HTMXRequest, order_service: Service, order_id: OrderId, data: FormBody
    ) -> Response:
        return await _act_on_form(
            request, order_service, order_id, "address", data, address_from_form(data),
            lambda address: order_service.update_address(order_id, address.to_address()),
        )

    @get("/orders/{order_id:str}")
    async def order_page(
        self, request: HTMXRequest, order_service: Service, order_id: OrderId
    ) -> Template:
        return await _order_page(order_service, order_id, fragment=bool(request.htmx))
