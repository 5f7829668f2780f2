"""Connecting to Temporal (local dev server, self-hosted cluster or Temporal Cloud), waiting for
it when it is still starting, and registering the search attribute the orders publish. Workers
and the web app connect through `connect_options`, so every process uses the same address,
namespace, TLS and API key settings."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Optional

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from orchestration.models import ORDER_STATE_ATTRIBUTE
from orchestration.settings import TemporalSettings

logger = logging.getLogger(__name__)


def _read(path: str) -> Optional[bytes]:
    return Path(path).read_bytes() if path else None


def tls_config(settings: TemporalSettings) -> TLSConfig | bool:
    """mTLS with the configured certificate, plain TLS for an API key or TEMPORAL_TLS, or none."""
    if settings.tls_cert_path or settings.tls_key_path or settings.tls_ca_path:
        return TLSConfig(
            client_cert=_read(settings.tls_cert_path),
            client_private_key=_read(settings.tls_key_path),
            server_root_ca_cert=_read(settings.tls_ca_path),
            domain=settings.tls_server_name or None,
        )
    return bool(settings.api_key) or settings.tls


def connect_options(settings: TemporalSettings) -> dict[str, Any]:
    """Keyword arguments of Client.connect for these settings (address aside)."""
    return {
        "namespace": settings.namespace,
        "tls": tls_config(settings),
        "api_key": settings.api_key or None,
    }


async def ensure_search_attributes(client: Client) -> None:
    """Register the OrderState search attribute in the client's namespace, once per server.

    A workflow that upserts an attribute the server does not know fails its workflow task, so
    every process registers it before it starts or runs an order. A server where the app may
    not register it (Temporal Cloud) needs it created once by hand: `tcld namespace
    search-attributes add ... --search-attribute "OrderState=Keyword"`."""
    request = AddSearchAttributesRequest(
        namespace=client.namespace,
        search_attributes={ORDER_STATE_ATTRIBUTE.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
    )
    try:
        await client.operator_service.add_search_attributes(request)
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:
            return
        if err.status == RPCStatusCode.PERMISSION_DENIED:
            logger.warning(
                "cannot register the OrderState search attribute; create it on the server",
                extra={"event": "search_attribute_missing", "error": err.message},
            )
            return
        raise


async def connect(settings: TemporalSettings, wait_seconds: float = 60.0) -> Client:
    """Connect, retrying while the server comes up (honcho starts everything at once)."""
    give_up_at = time.monotonic() + wait_seconds
    while True:
        try:
            client = await Client.connect(settings.address, **connect_options(settings))
            await ensure_search_attributes(client)
            return client
        except Exception as err:
            if time.monotonic() > give_up_at:
                raise
            logger.info(
                "waiting for Temporal",
                extra={"event": "dependency_wait", "address": settings.address, "error": str(err)},
            )
            await asyncio.sleep(1.0)
