"""Who may change orders: CSRF protection for the board and the optional operator credential.

Reads stay open to anyone who can reach the server: the board's pages and fragments, the JSON
API's GET routes, /health and /schema. Only state-changing requests (POST) are checked:

- The board's forms and htmx actions carry Litestar's CSRF token (a cookie plus the same token in
  the `x-csrftoken` header or the `_csrf_token` form field), so another site cannot make an
  operator's browser start, approve, cancel or readdress orders.
- With OPERATOR_TOKEN set, the JSON API wants `Authorization: Bearer <token>`, and the board wants
  the operator cookie that /login sets. The cookie holds an HMAC of the token under the secret
  key, never the token itself, so a stolen cookie does not reveal the token, and changing the
  token or the key logs every browser out.

The secret key (WEB_SECRET_KEY) signs both. Left empty, each process draws a random one when it
starts: a restart then invalidates the tokens of open board pages (their actions answer 403 until
the page is reloaded) and logs operators out, and several web replicas would reject each other's
tokens, so they need one shared WEB_SECRET_KEY.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Optional

from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler

from orchestration.settings import WebSettings

logger = logging.getLogger(__name__)

CSRF_HEADER = "x-csrftoken"
OPERATOR_COOKIE = "operator"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The JSON API's state-changing routes take no cookies (the operator cookie counts only on the
# board), so a forged cross-site request carries no credential the browser adds by itself: there
# is nothing for CSRF to abuse. Scripts call them with curl and no CSRF token; with OPERATOR_TOKEN
# set they must send the token as a bearer header, which another site cannot make a browser add.
JSON_API_WRITES = r"^/orders/[^/]+/(start|signals/)"


def _hmac_hex(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def signing_key(settings: WebSettings) -> str:
    """WEB_SECRET_KEY, or a random key for this process when it is empty."""
    return settings.secret_key or secrets.token_hex(32)


def csrf_config(secret_key: str) -> CSRFConfig:
    # Litestar hands out whatever CSRF cookie a page request brings, without checking its
    # signature; a cookie signed by a previous key would then fail every action even after a
    # reload. A cookie name derived from the key makes a reload start afresh after a key change.
    return CSRFConfig(
        secret=secret_key,
        cookie_name=f"csrftoken-{_hmac_hex(secret_key, 'csrf cookie name')[:12]}",
        header_name=CSRF_HEADER,
        cookie_httponly=True,
        cookie_samesite="strict",
        exclude=JSON_API_WRITES,
    )


class OperatorLoginRequired(NotAuthorizedException):
    """A board action without a valid operator cookie."""


@dataclass(frozen=True)
class OperatorAccess:
    """The operator credential (empty: none required) and the key that signs its cookie."""

    token: str
    secret_key: str

    @property
    def required(self) -> bool:
        return bool(self.token)

    def token_matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def cookie_value(self) -> str:
        """What the operator cookie holds after a login."""
        return _hmac_hex(self.secret_key, self.token)

    def cookie_matches(self, cookie: Optional[str]) -> bool:
        expected = self.cookie_value()
        return cookie is not None and hmac.compare_digest(cookie.encode(), expected.encode())

    # The guards are coroutines, though they await nothing: Litestar runs a plain function
    # guard on a worker thread, a thread hop on every request.
    async def require_bearer(self, connection: ASGIConnection, _: BaseRouteHandler) -> None:
        """Guard of the JSON API: state-changing requests need the token as a bearer header."""
        if not self.required or connection.scope["method"] in SAFE_METHODS:
            return
        scheme, _, credential = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credential:
            problem = "needs the operator token"
        elif not self.token_matches(credential.strip()):
            problem = "was sent with a wrong operator token"
        else:
            return
        raise NotAuthorizedException(
            f"This request {problem}: send the header 'Authorization: Bearer <OPERATOR_TOKEN>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def require_login(self, connection: ASGIConnection, _: BaseRouteHandler) -> None:
        """Guard of the board: actions need the cookie that logging in sets."""
        if not self.required or connection.scope["method"] in SAFE_METHODS:
            return
        if not self.cookie_matches(connection.cookies.get(OPERATOR_COOKIE)):
            raise OperatorLoginRequired("Changing orders needs an operator login.")

    def warn_if_open(self) -> None:
        if not self.required:
            logger.warning(
                "OPERATOR_TOKEN is not set: state-changing endpoints are open to anyone who can "
                "reach the server",
                extra={"event": "operator_token_unset"},
            )
