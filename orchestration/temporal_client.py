"""Connecting to Temporal (local dev server, self-hosted cluster or Temporal Cloud), waiting for
it when it is still starting, registering the search attribute the orders publish, and leaving
a process that connected. Workers and the web app connect through `connect_options`, so every
process uses the same address, namespace, TLS and API key settings."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Optional

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.converter import DataConverter, DefaultFailureConverter, PayloadConverter
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from orchestration.models import ORDER_PARKED_ATTRIBUTE
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


class QuietFailureConverter(DefaultFailureConverter):
    """Sends an expected failure (category BENIGN: the outside call failed or hung, as it does
    in two attempts of three) without its stack trace and cause. Formatting a traceback for
    every failed attempt cost about 4 % of a worker's CPU, and says nothing the message does
    not; other failures keep theirs."""

    def to_failure(
        self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure
    ) -> None:
        if isinstance(exception, ApplicationError) and exception.category == ApplicationErrorCategory.BENIGN:
            exception = ApplicationError(
                exception.message,
                *exception.details,
                type=exception.type,
                non_retryable=exception.non_retryable,
                next_retry_delay=exception.next_retry_delay,
                category=exception.category,
            )
        super().to_failure(exception, payload_converter, failure)


DATA_CONVERTER = dataclasses.replace(
    DataConverter.default, failure_converter_class=QuietFailureConverter
)


def connect_options(settings: TemporalSettings) -> dict[str, Any]:
    """Keyword arguments of Client.connect for these settings (address aside)."""
    return {
        "namespace": settings.namespace,
        "tls": tls_config(settings),
        "api_key": settings.api_key or None,
        "data_converter": DATA_CONVERTER,
    }


async def ensure_search_attributes(client: Client) -> None:
    """Register the OrderParked search attribute in the client's namespace, once per server.

    A workflow that upserts an attribute the server does not know fails its workflow task, so
    every process registers it before it starts or runs an order. A server where the app may
    not register it (Temporal Cloud) needs it created once by hand: `tcld namespace
    search-attributes add ... --search-attribute "OrderParked=Bool"`."""
    request = AddSearchAttributesRequest(
        namespace=client.namespace,
        search_attributes={ORDER_PARKED_ATTRIBUTE.name: IndexedValueType.INDEXED_VALUE_TYPE_BOOL},
    )
    try:
        await client.operator_service.add_search_attributes(request)
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:
            return
        if err.status == RPCStatusCode.PERMISSION_DENIED:
            logger.warning(
                "cannot register the OrderParked search attribute; create it on the server",
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


def exit_without_teardown(status: int) -> NoReturn:
    """Leave the process with `status` once its work is done, skipping the interpreter's teardown.

    The SDK's native runtime keeps threads that can call into Python while the interpreter
    finalizes, and that aborts the process ("Fatal Python error: PyGILState_Release ... runtime
    state: finalizing", SIGABRT; temporalio/sdk-python#300). Here one worker stop in about 70
    did so under load, after a complete shutdown, and a supervisor took the clean stop for a
    crash. Leaving with os._exit skips only that teardown."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
