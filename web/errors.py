"""Every error as JSON `{"status_code": N, "detail": "..."}`; never a traceback.

Validation failures answer 422 (Litestar's own default is 400) with a detail that names the bad
field in plain words; Litestar's per-field errors stay in `extra`.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Optional

from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    SerializationException,
    ValidationException,
)
from litestar.status_codes import (
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap

from web.schemas import MAX_BODY_BYTES, PATTERN_MEANINGS
from web.problems import ActionNotAllowed, DependencyUnavailable, OrderConflict, OrderNotFound

logger = logging.getLogger(__name__)


def error_response(
    status_code: int, detail: str, extra: Any = None, headers: Optional[dict[str, str]] = None
) -> Response:
    content: dict[str, Any] = {"status_code": status_code, "detail": detail}
    if extra:
        content["extra"] = extra
    return Response(content=content, status_code=status_code, headers=headers)


# msgspec's messages, reworded; each template is filled with its pattern's groups.
_REWORDINGS = [
    (re.compile(r"^Expected `(\w+)`, got `(\w+)`"), "must be of type {0}, not {1}"),
    (re.compile(r"^Expected `\w+` >= (\d+)"), "must be at least {0}"),
    (re.compile(r"^Expected `\w+` <= (\d+)"), "must be at most {0}"),
    (re.compile(r"^Expected `str` of length >= (\d+)"), "must be at least {0} characters long"),
    (re.compile(r"^Expected `str` of length <= (\d+)"), "must be at most {0} characters long"),
    (re.compile(r"^Expected `array` of length >= (\d+)"), "must have at least {0} element(s)"),
    (re.compile(r"^Expected `array` of length <= (\d+)"), "must have at most {0} element(s)"),
    (re.compile(r"^Expected `str` matching regex (.+)"), "must match the pattern {0}"),
    (re.compile(r"^Invalid enum value (.+)"), "has an unknown value {0}"),
]
_FIELD_PROBLEM = re.compile(
    r"^Object (missing required|contains unknown) field `(\w+)`(?: \(or its alias `(\w+)`\))?"
)
# An address field sent under two of its names (web/schemas.py's AddressBody).
_NAMED_TWICE = re.compile(r"^Object contains one field under several names: (.+)")
_BODY_KEYS = ("", "data")


def reworded(message: str) -> str:
    """One of msgspec's validation messages in plain words, e.g. "must not be blank"."""
    for pattern, meaning in PATTERN_MEANINGS.items():
        if message == f"Expected `str` matching regex {pattern!r}":
            return meaning
    for regex, template in _REWORDINGS:
        if match := regex.match(message):
            return template.format(*match.groups())
    return f"is invalid ({message})"


def _parameter_name(request: Request, key: str) -> str:
    """The name the client uses: a handler argument may be aliased (`state` is reserved)."""
    argument = request.route_handler.parsed_fn_signature.parameters.get(key)
    alias = getattr(argument.kwarg_definition, "name", None) if argument else None
    return alias or key


def _field_problem(request: Request, error: dict[str, Any]) -> str:
    """One of Litestar's field errors as a phrase, e.g. "field 'address.city' is required"."""
    message = str(error.get("message", ""))
    key = str(error.get("key", ""))
    source = getattr(error.get("source"), "value", error.get("source"))
    if source in ("path", "query"):
        return f"{source} parameter {_parameter_name(request, key)!r} {reworded(message)}"
    # For a field missing, unknown or sent twice, the key is the object holding it.
    parent = "" if key in _BODY_KEYS else key + "."
    if field_problem := _FIELD_PROBLEM.match(message):
        missing, name, alias = field_problem.groups()
        named = repr(parent + name) + (f" (or its alias {parent + alias!r})" if alias else "")
        what = "is required" if missing == "missing required" else "is not a known field"
        return f"field {named} {what}"
    if named_twice := _NAMED_TWICE.match(message):
        names = [repr(parent + name) for name in re.findall(r"`(\w+)`", named_twice.group(1))]
        return (
            f"fields {', '.join(names[:-1])} and {names[-1]} are one field under different "
            "names; send only one of them"
        )
    if key in _BODY_KEYS:
        # An absent body shows up as a KeyError message naming the `data` argument.
        problem = "is required" if message == repr("data") else reworded(message)
        return f"the request body {problem}"
    return f"field {key!r} {reworded(message)}"


def validation_detail(request: Request, exc: ValidationException) -> str:
    """A sentence naming every rejected field of the request."""
    errors = exc.extra if isinstance(exc.extra, list) else []
    problems = [_field_problem(request, error) for error in errors if isinstance(error, dict)]
    return "Invalid request: " + ("; ".join(problems) if problems else exc.detail) + "."


def _validation_error(request: Request, exc: ValidationException) -> Response:
    errors = exc.extra if isinstance(exc.extra, list) else []
    return error_response(HTTP_422_UNPROCESSABLE_ENTITY, validation_detail(request, exc), errors)


def _client_error(request: Request, exc: ClientException) -> Response:
    # Litestar reports a body that is not JSON as a plain 400 caused by a SerializationException.
    if isinstance(exc.__cause__, SerializationException):
        return error_response(
            HTTP_422_UNPROCESSABLE_ENTITY,
            f"Invalid request: the body is not valid JSON ({exc.detail}).",
        )
    return _http_error(request, exc)


def _body_too_large(_: Request, exc: HTTPException) -> Response:
    return error_response(
        exc.status_code,
        f"The request body is larger than the {MAX_BODY_BYTES // 1024} KiB allowed.",
    )


def _http_error(_: Request, exc: HTTPException) -> Response:
    # A 401 names the scheme it wants (WWW-Authenticate) in its headers.
    return error_response(exc.status_code, exc.detail, exc.extra, exc.headers)


def _not_found(_: Request, exc: OrderNotFound) -> Response:
    return error_response(HTTP_404_NOT_FOUND, str(exc))


def _conflict(_: Request, exc: Exception) -> Response:
    return error_response(HTTP_409_CONFLICT, str(exc))


def _unavailable(_: Request, exc: DependencyUnavailable) -> Response:
    exc.log()
    return error_response(HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers=exc.headers)


def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception(
        "unhandled error",
        extra={"event": "internal_error", "method": request.method, "path": request.url.path},
    )
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "Internal error; it has been logged.")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HTTP_413_REQUEST_ENTITY_TOO_LARGE: _body_too_large,
    ValidationException: _validation_error,
    ClientException: _client_error,
    HTTPException: _http_error,
    OrderNotFound: _not_found,
    OrderConflict: _conflict,
    ActionNotAllowed: _conflict,
    DependencyUnavailable: _unavailable,
    Exception: _internal_error,
}
