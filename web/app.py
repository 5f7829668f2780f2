"""The Litestar application: `uvicorn web.app:app`.

The operator board is at /, the JSON API under /orders, OpenAPI at /schema. Who may change
orders (CSRF, OPERATOR_TOKEN) is decided in web/security.py.
"""

from __future__ import annotations

from typing import Optional

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.plugins.htmx import HTMXPlugin
from litestar.static_files import create_static_files_router
from temporalio.client import Client

from orchestration.database import close_pool, open_pool
from orchestration.logs import configure_logging, settings_or_exit
from orchestration.settings import Settings
from web.api import OrderController, health
from web.board import BoardController
from web.login import LoginController
from web.templates import STATIC_DIR, template_config
from web.errors import EXCEPTION_HANDLERS
from web.schemas import MAX_BODY_BYTES, ClosedStructSchemaPlugin
from web.security import OperatorAccess, csrf_config, signing_key
from web.service import OrderService
from web.temporal_gateway import TemporalConnection


def create_app(
    temporal_client: Optional[Client] = None,
    *,
    settings: Optional[Settings] = None,
    manage_pool: bool = True,
) -> Litestar:
    """Build the app. Without `temporal_client` it connects to Temporal on first use.

    `manage_pool=False` leaves the database pool to the caller (tests share one pool across
    apps, so no app may close it)."""
    settings = settings or settings_or_exit()
    order_service = OrderService(settings, TemporalConnection(settings, temporal_client))
    secret_key = signing_key(settings.web)
    operator_access = OperatorAccess(token=settings.web.operator_token, secret_key=secret_key)

    async def start_up() -> None:
        configure_logging(settings.log_level)
        operator_access.warn_if_open()
        if manage_pool:
            await open_pool(settings.database)

    async def shut_down() -> None:
        # Litestar passes the app to a hook that takes an argument; close_pool's is a timeout.
        await close_pool()

    def provide_order_service() -> OrderService:
        return order_service

    def provide_operator_access() -> OperatorAccess:
        return operator_access

    return Litestar(
        route_handlers=[
            # The guards let reads through and check the operator credential on the rest.
            Router("/", route_handlers=[OrderController], guards=[operator_access.require_bearer]),
            health,
            Router("/", route_handlers=[BoardController], guards=[operator_access.require_login]),
            LoginController,
            create_static_files_router(path="/static", directories=[STATIC_DIR]),
        ],
        template_config=template_config(settings),
        csrf_config=csrf_config(secret_key),
        plugins=[HTMXPlugin(), ClosedStructSchemaPlugin()],
        dependencies={
            "order_service": Provide(provide_order_service, sync_to_thread=False),
            "operator_access": Provide(provide_operator_access, sync_to_thread=False),
        },
        on_startup=[start_up],
        on_shutdown=[shut_down] if manage_pool else [],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=MAX_BODY_BYTES,
        # Logging is the process's (orchestration/logs.py, uvicorn's --log-config web/logging.json):
        # Litestar's default would reset the root logger to plain text at import, and the errors it
        # would log are logged by EXCEPTION_HANDLERS.
        logging_config=None,
        debug=False,
    )


app = create_app()
