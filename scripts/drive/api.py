"""The JSON API as a patient client (httpx), for scripts that must see every order through an
outage."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Optional

import httpx

# A request is retried through an outage for this long before the run gives up on it.
REQUEST_RETRY_SECONDS = 90.0
REQUEST_TIMEOUT_SECONDS = 15.0
RETRIED_STATUSES = (503,)


class Api:
    """The JSON API as a patient client: connection errors and 503 are retried with backoff.

    Every request of this run may be repeated safely (a repeated start or approval answers 409).
    An outage must answer 503 with Retry-After; any other 5xx, and a 503 without Retry-After, is
    kept in `server_errors`, which fail the run (a 500 is not retried: the next answer could hide
    it). `retried` counts each cause, so that they show in the report."""

    def __init__(self, base_url: str) -> None:
        # With OPERATOR_TOKEN set (the children inherit it), the API's writes want it as a bearer.
        token = os.environ.get("OPERATOR_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_SECONDS, headers=headers)
        self.retried = Counter[str]()
        self.server_errors: list[str] = []

    async def request(self, method: str, path: str, json: Optional[dict] = None) -> tuple[httpx.Response, bool]:
        """The answer, and whether the request had to be sent again (so it may have been
        carried out by an attempt whose answer was lost)."""
        give_up_at = time.monotonic() + REQUEST_RETRY_SECONDS
        pause = 0.2
        retried = False
        while True:
            try:
                response = await self.client.request(method, path, json=json)
            except httpx.TransportError as err:
                if time.monotonic() > give_up_at:
                    raise
                cause = type(err).__name__
            else:
                if response.status_code >= 500 and not (
                    response.status_code == 503 and "retry-after" in response.headers
                ):
                    self.server_errors.append(
                        f"{method} {path}: {response.status_code} {response.text[:200]}"
                    )
                if response.status_code not in RETRIED_STATUSES or time.monotonic() > give_up_at:
                    return response, retried
                cause = f"HTTP {response.status_code}"
            self.retried[cause] += 1
            retried = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, 3.0)

    async def close(self) -> None:
        await self.client.aclose()
