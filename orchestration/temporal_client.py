"""Connecting to Temporal (local dev server, self-hosted cluster or Temporal Cloud), waiting for
it when it is still starting. Workers and the web app connect through `connect_options`, so
every process uses the same address, namespace, TLS and API key settings."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Optional

from temporalio.client import Client
from temporalio.service import TLSConfig

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


async def connect(settings: TemporalSettings, wait_seconds: float = 60.0) -> Client:
    """Connect, retrying while the server comes up (honcho starts everything at once)."""
    give_up_at = time.monotonic() + wait_seconds
    while True:
        try:
            return await Client.connect(settings.address, **connect_options(settings))
        except Exception as err:
            if time.monotonic() > give_up_at:
                raise
            logger.info(
                "waiting for Temporal",
                extra={"event": "dependency_wait", "address": settings.address, "error": str(err)},
            )
            await asyncio.sleep(1.0)
