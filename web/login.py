"""The board's operator login and logout, used when OPERATOR_TOKEN is set (see web/security.py)."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import URLEncodedBody
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER, HTTP_401_UNAUTHORIZED

from web.html_errors import HTML_EXCEPTION_HANDLERS
from web.security import OPERATOR_COOKIE, OperatorAccess

FormBody = URLEncodedBody[dict[str, str]]
OperatorAccessDependency = NamedDependency[OperatorAccess]


class LoginController(Controller):
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
