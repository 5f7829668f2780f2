"""What the JSON API and the board's controllers both take from a request: the order id path
parameter and the order service."""

from __future__ import annotations

from typing import Annotated

from litestar.di import NamedDependency
from litestar.params import PathParameter

from web.schemas import IDENTIFIER_PATTERN
from web.service import OrderService

OrderId = Annotated[
    str,
    PathParameter(
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER_PATTERN,
        description="The caller's order id; the workflow id is `order-<order_id>`.",
    ),
]
Service = NamedDependency[OrderService]
