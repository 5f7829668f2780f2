"""Timed orders through the JSON API: each started, approved and followed to its end, with what
the workflow and the client saw of its latency."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Optional

import aiohttp

from orchestration.models import TERMINAL_STATES
from scripts.drive.orders import start_body

PROMISE_SECONDS = 15.0
# A 503 at an admission limit says this (web/admission.py); any other 503 is an outage.
CAPACITY_REFUSAL = "the most this system takes at once"
# After a failed status request (e.g. 503 while the system is overloaded), wait before the next.
ERROR_PAUSE_SECONDS = 0.25
APPROVE_TRIES = 8
# Idle connections are dropped before uvicorn's 5-s keep-alive ends: at the same 5 s, a request
# could go out on a connection the server was closing ("Server disconnected").
KEEPALIVE_SECONDS = 2.0


HTTP_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
"""What a request raises when it gets no answer: no connection, a broken one, or time up."""


@dataclass
class Answer:
    """An HTTP answer, read whole."""

    status_code: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class HttpClient:
    """The benchmark's HTTP client, on aiohttp: it takes about a third of httpx's CPU per request
    (0.6 against 1.9 ms here), and the benchmark's clients share the machine's two cores with the
    system they measure. `connections` at once (unbounded if None)."""

    def __init__(self, base_url: str, timeout: float, connections: Optional[int] = None) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._connections = connections or 0
        self._session: Optional[aiohttp.ClientSession] = None

    async def __aenter__(self) -> HttpClient:
        self._session = aiohttp.ClientSession(
            base_url=self._base_url,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            connector=aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=KEEPALIVE_SECONDS),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def get(self, url: str, *, params: Optional[dict[str, Any]] = None,
                  timeout: Optional[float] = None) -> Answer:
        return await self._request("GET", url, params=params, timeout=timeout)

    async def post(self, url: str, *, json: Optional[dict[str, Any]] = None,
                   timeout: Optional[float] = None) -> Answer:
        return await self._request("POST", url, json=json, timeout=timeout)

    async def _request(self, method: str, url: str, *, timeout: Optional[float], **kwargs: Any) -> Answer:
        assert self._session is not None, "use the client in `async with`"
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        async with self._session.request(method, url, **kwargs) as response:
            return Answer(response.status, response.headers, await response.text())


@dataclass
class OrderRecord:
    order_id: str
    state: str = "not started"
    reason: str = ""
    start_http_status: Optional[int] = None
    approve_http_status: Optional[int] = None
    deadline_seconds: float = PROMISE_SECONDS
    workflow_started_at: Optional[str] = None
    workflow_finished_at: Optional[str] = None
    workflow_seconds: Optional[float] = None
    """finished_at - started_at, as the workflow recorded them: the promise."""
    client_seconds: Optional[float] = None
    """Start answered -> terminal status read."""
    start_seconds: Optional[float] = None
    """Accepted start request sent -> answered: the wait for a place at the admission limit, and
    the start itself."""
    status_requests: int = 0
    status_errors: int = 0
    capacity_refusals: int = 0
    """Starts answered 503 with Retry-After (the system at MAX_ORDERS_IN_FLIGHT), then retried."""
    outage_refusals: int = 0
    """Starts answered 503 for an outage (Temporal or the database not answering), retried."""
    total_seconds: Optional[float] = None
    """First start request sent -> terminal status read: what the client saw, refusals and
    waits for a place included."""
    gave_up: bool = False
    """Not admitted within --give-up-seconds of the first request."""
    error: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass
class Progress:
    """What the run has done so far; shared by the order tasks, the sampler and the reporter."""

    total: int
    started: int = 0
    in_flight: dict[str, OrderRecord] = field(default_factory=dict)
    states: Counter[str] = field(default_factory=Counter)
    finished: list[str] = field(default_factory=list)
    """Order ids that reached a terminal state, in that order."""
    over_deadline: int = 0


async def run_order(
    client: HttpClient, record: OrderRecord, args: argparse.Namespace, progress: Progress
) -> None:
    """Start, approve and follow one order to a terminal state (or to --order-timeout)."""
    first_sent_at = time.monotonic()
    while True:
        sent_at = time.monotonic()
        response = await client.post(
            f"/orders/{record.order_id}/start",
            json=start_body(record.order_id),
            timeout=args.start_timeout,
        )
        # At capacity the system holds a start for a while, then refuses it and says when to
        # come back, as a script user would do; an outage answers 503 with Retry-After too. The
        # client latency counts from the accepted start's answer; how long that start took,
        # waiting included, and the time from the first request are reported apart.
        if response.status_code != 503 or "retry-after" not in response.headers:
            break
        if CAPACITY_REFUSAL in response.text:
            record.capacity_refusals += 1
        else:
            record.outage_refusals += 1
        if time.monotonic() - first_sent_at > args.give_up_seconds:
            record.gave_up, record.state = True, "gave up"
            record.error = f"not admitted within {args.give_up_seconds:g} s: {response.text[:200]}"
            return
        await asyncio.sleep(float(response.headers["retry-after"]))
    answered_at = time.monotonic()
    record.start_http_status = response.status_code
    if response.status_code != 201:
        record.state, record.error = "start refused", response.text[:300]
        return
    record.start_seconds = answered_at - sent_at
    record.deadline_seconds = response.json()["deadline_seconds"]
    record.state = "started"
    progress.started += 1
    progress.in_flight[record.order_id] = record
    try:
        if args.approve_delay:
            await asyncio.sleep(args.approve_delay)
        for _ in range(APPROVE_TRIES):
            response = await client.post(f"/orders/{record.order_id}/signals/approve")
            record.approve_http_status = response.status_code
            # 503 means "try again shortly", and a script does.
            if response.status_code != 503:
                break
            await asyncio.sleep(ERROR_PAUSE_SECONDS)
        await follow_until_terminal(client, record, args, answered_at)
        if record.client_seconds is not None:
            record.total_seconds = record.client_seconds + (answered_at - first_sent_at)
    finally:
        del progress.in_flight[record.order_id]
    progress.states[record.state] += 1
    if record.terminal:
        progress.finished.append(record.order_id)
    if record.workflow_seconds is not None and record.workflow_seconds > record.deadline_seconds:
        progress.over_deadline += 1


async def follow_until_terminal(
    client: HttpClient, record: OrderRecord, args: argparse.Namespace, started_at: float
) -> None:
    give_up_at = started_at + args.order_timeout
    while time.monotonic() < give_up_at:
        record.status_requests += 1
        try:
            response = await client.get(
                f"/orders/{record.order_id}/status",
                params={"wait": args.wait_seconds},
                timeout=args.wait_seconds + 30,
            )
        except HTTP_ERRORS as err:
            record.status_errors += 1
            record.error = f"{type(err).__name__}: {err}"
            await asyncio.sleep(ERROR_PAUSE_SECONDS)
            continue
        if response.status_code != 200:
            record.status_errors += 1
            record.error = f"status {response.status_code}: {response.text[:200]}"
            await asyncio.sleep(ERROR_PAUSE_SECONDS)
            continue
        status = response.json()
        record.state = status["state"]
        if record.terminal:
            record.client_seconds = time.monotonic() - started_at
            record.reason = status.get("reason") or ""
            record.workflow_started_at = status["started_at"]
            record.workflow_finished_at = status["finished_at"]
            record.workflow_seconds = (
                datetime.fromisoformat(status["finished_at"]) - datetime.fromisoformat(status["started_at"])
            ).total_seconds()
            return
    record.error = record.error or f"not terminal after {args.order_timeout:g} s"
