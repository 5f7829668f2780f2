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

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Awaitable, Callable, Literal, Optional
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, PermissionDeniedException, ValidationException
from litestar.params import QueryParameter, URLEncodedBody
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.status_codes import (
    HTTP_303_SEE_OTHER,
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.template.config import TemplateConfig
from litestar.types import ExceptionHandlersMap

from orchestration.settings import Settings
from web.api import OrderId, Service
from web.board_views import (
    BOARD_FILTERS,
    FILTER_LABELS,
    Notice,
    OrderRow,
    parse_time,
    row_from_record,
    row_from_summary,
    starting_row,
    timeline,
)
from web.errors import validation_detail
from web.forms import (
    ITEM_ROWS,
    FormState,
    address_from_form,
    cancel_from_form,
    new_order_from_form,
)
from web.schemas import DEFAULT_LIST_LIMIT, MAX_BODY_BYTES
from web.security import CSRF_HEADER, OPERATOR_COOKIE, OperatorAccess, OperatorLoginRequired
from web.service import (
    ActionNotAllowed,
    ActionOutcome,
    DependencyUnavailable,
    OrderConflict,
    OrderNotFound,
    OrderService,
    shipping_workflow_id_for,
    workflow_id_for,
)

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

# htmx stops polling an element whose request is answered with this status.
HX_STOP_POLLING = 286
STATUS_AGE_HEADER = "X-Status-Age"
# A row whose status is older than this says so: the operator sees it is behind, not stuck.
STALE_STATUS_SECONDS = 3.0
ALERTS = "#alerts"
BOARD_LIMIT = DEFAULT_LIST_LIMIT

BoardFilter = Literal[tuple(BOARD_FILTERS)]  # type: ignore[valid-type]
# `state` is a name Litestar reserves for the app state, hence the alias.
FilterParameter = Annotated[BoardFilter, QueryParameter(name="state")]
FormBody = URLEncodedBody[dict[str, str]]
OperatorAccessDependency = NamedDependency[OperatorAccess]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _seconds(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _clock(value: Any) -> str:
    """A time of day in UTC with milliseconds, from an ISO string or a datetime."""
    moment = parse_time(value) if isinstance(value, str) else value
    if moment is None:
        return "—"
    return moment.astimezone(timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def template_config(settings: Settings) -> TemplateConfig:
    """Jinja over templates/, autoescaping everything, with the board's filters."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    ui_url = settings.temporal.ui_url.rstrip("/")
    namespace = quote(settings.temporal.namespace, safe="")
    environment.globals["temporal_ui_url"] = ui_url

    def workflow_url(workflow_id: str) -> str:
        return f"{ui_url}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}"

    environment.globals["workflow_url"] = workflow_url
    environment.globals["workflow_id_for"] = workflow_id_for
    environment.globals["csrf_header"] = CSRF_HEADER
    environment.globals["operator_login"] = bool(settings.web.operator_token)
    environment.globals["operator_cookie"] = OPERATOR_COOKIE
    environment.filters["seconds"] = _seconds
    environment.filters["clock"] = _clock
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def fresh_form() -> FormState:
    """The new-order form with a new order id and payment id filled in."""
    order_id = f"ord-{uuid.uuid4().hex[:8]}"
    return FormState(
        values={
            "order_id": order_id,
            "payment_id": f"pay-{order_id}",
            "items.0.sku": "ABC",
            "items.0.qty": "1",
        }
    )


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
    return row_from_summary(await order_service.order_summary(order_id, fresh=fresh), _now())


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
        summary, workflow_status = await asyncio.gather(
            # Fresh, so that the row agrees with the live status beside it.
            order_service.order_summary(order_id, fresh=True),
            order_service.order_status(order_id),
        )
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
            # order_status follows the shipping child only while both run; the timeline of a
            # finished order shows its last shipping attempt too.
            workflow_status["shipping"] = await order_service.shipping_status(
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


async def _invalid(
    request: HTMXRequest, order_service: OrderService, order_id: str, form_name: str, form: FormState
) -> Response:
    """The row again with the rejected form open, its input kept and its errors shown."""
    return await _after_action(
        request,
        order_service,
        order_id,
        Notice("invalid", "Nothing was sent: correct the fields marked below."),
        HTTP_422_UNPROCESSABLE_ENTITY,
        {form_name: form},
    )


@dataclass(frozen=True)
class Link:
    """Where an error message sends the operator next, e.g. to log in."""

    href: str
    text: str


def _error_page(
    request: Request,
    status_code: int,
    title: str,
    message: str,
    link: Optional[Link] = None,
    headers: Optional[dict[str, str]] = None,
) -> Response:
    context = {"title": title, "message": message, "link": link}
    if isinstance(request, HTMXRequest) and request.htmx:
        return HTMXTemplate(
            template_name="_alert.html",
            context=context,
            status_code=status_code,
            headers=headers,
            re_target=ALERTS,
            re_swap="innerHTML",
        )
    return Template(
        template_name="error.html", context=context, status_code=status_code, headers=headers
    )


def _not_found(request: Request, exc: OrderNotFound) -> Response:
    return _error_page(request, HTTP_404_NOT_FOUND, "Order not found", str(exc))


def _bad_request(request: Request, exc: ValidationException) -> Response:
    return _error_page(
        request, HTTP_400_BAD_REQUEST, "Invalid request", validation_detail(request, exc)
    )


def _unavailable(request: Request, exc: DependencyUnavailable) -> Response:
    # The message is written for the operator at the board; what actually failed is for the log.
    logger.warning(
        "dependency unavailable",
        extra={
            "event": "dependency_unavailable",
            "component": exc.component,
            "error": str(exc),
            "cause": repr(exc.__cause__) if exc.__cause__ else None,
        },
    )
    return _error_page(
        request,
        HTTP_503_SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        str(exc),
        headers={"Retry-After": str(exc.retry_after_seconds)},
    )


def _csrf_refused(request: Request, _: PermissionDeniedException) -> Response:
    # CSRF is the only check that answers 403; Litestar's own detail does not say what to do.
    return _error_page(
        request,
        HTTP_403_FORBIDDEN,
        "Request refused",
        "The page's security token is missing or out of date (the server may have restarted); "
        "nothing was done. Reload the page and try again.",
    )


def _login_required(request: Request, exc: OperatorLoginRequired) -> Response:
    return _error_page(
        request, HTTP_401_UNAUTHORIZED, "Log in required", exc.detail, Link("/login", "Log in")
    )


def _body_too_large(request: Request, _: HTTPException) -> Response:
    return _error_page(
        request,
        HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        "Request too large",
        f"The form is larger than the {MAX_BODY_BYTES // 1024} KiB allowed; nothing was done.",
    )


def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error_page(request, exc.status_code, "Request failed", exc.detail)


def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception(
        "unhandled error",
        extra={"event": "internal_error", "method": request.method, "path": request.url.path},
    )
    return _error_page(
        request, HTTP_500_INTERNAL_SERVER_ERROR, "Internal error", "Internal error; it has been logged."
    )


HTML_EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    # The app's JSON handler for 413 is keyed by status, which wins over exception classes.
    HTTP_413_REQUEST_ENTITY_TOO_LARGE: _body_too_large,
    ValidationException: _bad_request,
    PermissionDeniedException: _csrf_refused,
    OperatorLoginRequired: _login_required,
    HTTPException: _http_error,
    OrderNotFound: _not_found,
    DependencyUnavailable: _unavailable,
    Exception: _internal_error,
}


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
            context={"rows": await _rows(order_service, new_orders)},
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
        cancel, errors = cancel_from_form(data)
        if cancel is None:
            return await _invalid(
                request, order_service, order_id, "cancel", FormState(dict(data), errors)
            )
        return await _act(
            request,
            order_service,
            order_id,
            lambda: order_service.cancel(order_id, cancel.reason),
        )

    @post("/board/orders/{order_id:str}/address", status_code=200)
    async def update_address(
        self, request: HTMXRequest, order_service: Service, order_id: OrderId, data: FormBody
    ) -> Response:
        address, errors = address_from_form(data)
        if address is None:
            return await _invalid(
                request, order_service, order_id, "address", FormState(dict(data), errors)
            )
        return await _act(
            request,
            order_service,
            order_id,
            lambda: order_service.update_address(order_id, address.to_address()),
        )

    @get("/orders/{order_id:str}")
    async def order_page(
        self, request: HTMXRequest, order_service: Service, order_id: OrderId
    ) -> Template:
        return await _order_page(order_service, order_id, fragment=bool(request.htmx))


class LoginController(Controller):
    """The operator login of the board, used when OPERATOR_TOKEN is set (see web/security.py)."""

    include_in_schema = False
    exception_handlers = HTML_EXCEPTION_HANDLERS

    @get("/login")
    async def login_page(self, operator_access: OperatorAccessDependency) -> Template:
        return Template(
            template_name="login.html", context={"required": operator_access.required}
        )

    @post("/login", status_code=HTTP_303_SEE_OTHER)
    async def login(
        self, request: Request, operator_access: OperatorAccessDependency, data: FormBody
    ) -> Response:
        token = data.get("token", "")
        if operator_access.required and not operator_access.token_matches(token):
            return Template(
                template_name="login.html",
                context={"required": True, "error": "That is not the operator token."},
                status_code=HTTP_401_UNAUTHORIZED,
            )
        response = Redirect("/", status_code=HTTP_303_SEE_OTHER)
        if operator_access.required:
            response.set_cookie(
                Cookie(
                    key=OPERATOR_COOKIE,
                    value=operator_access.cookie_value(),
                    path="/",
                    httponly=True,
                    samesite="strict",
                    # Over plain HTTP (the local default) a Secure cookie would never come back.
                    secure=request.url.scheme == "https",
                )
            )
        return response

    @post("/logout", status_code=HTTP_303_SEE_OTHER)
    async def logout(self) -> Redirect:
        response = Redirect("/", status_code=HTTP_303_SEE_OTHER)
        response.delete_cookie(OPERATOR_COOKIE, path="/")
        return response
