"""Errors of the board's pages and fragments, as HTML: an error page, or for an htmx request a
message in the page's alert area (never in place of a row). The JSON API's errors are in
web/errors.py; both answer the same statuses with the same sentences."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from litestar import Request, Response
from litestar.exceptions import HTTPException, PermissionDeniedException, ValidationException
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Template
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap

from web.errors import validation_detail
from web.problems import DependencyUnavailable, OrderNotFound
from web.schemas import MAX_BODY_BYTES
from web.security import OperatorLoginRequired

logger = logging.getLogger(__name__)

ALERTS = "#alerts"


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
    exc.log()
    return _error_page(
        request, HTTP_503_SERVICE_UNAVAILABLE, "Temporarily unavailable", str(exc), headers=exc.headers
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
