"""Timing the board while orders are in flight: each order's row fragment and status, and the
overview panel, polled as an open board and a following script poll them, from a process of
their own."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Optional

from scripts.bench.orders import HTTP_ERRORS, HttpClient, Progress
from web.board import STATUS_AGE_HEADER

STATUS_EVERY = 3
# How often the benchmark tells the probe process which orders started and ended.
FORWARD_SECONDS = 0.05


@dataclass
class RowSample:
    seconds: float
    http_status: int
    in_flight: int
    status_age: Optional[float] = None
    """How old the status the row showed was (the board's X-Status-Age header), seconds."""
    order_id: str = ""
    sent_at: float = 0.0
    """time.monotonic() of the request; with order_id, for finding what a slow answer was."""


async def watch_board_rows(
    client: HttpClient, progress: Progress, samples: list[RowSample], board: dict[str, Any],
    interval: float, status_samples: list[RowSample],
) -> None:
    """Poll the row fragment of every order in flight every `interval` seconds, as the board
    page does for each row it shows, and time each answer; every STATUS_EVERY polls, time the
    order's full status (GET /orders/{id}/status) too, as a script following it would.

    A row is watched from its order's start, as a board shows a new order's row. Which route to
    time is decided on the first order started: a 404 there means the board has no row route,
    and the order status is timed instead."""
    while not progress.in_flight and not progress.finished:
        await asyncio.sleep(0.05)
    first = next(iter(progress.in_flight), None) or progress.finished[0]
    probe = await client.get(f"/board/orders/{first}/row")
    if probe.status_code == 404:
        board["route"] = "/orders/{order_id}/status"
        board["note"] = "GET /board/orders/{id}/row answered 404: timed GET /orders/{id}/status instead"
    else:
        board["route"] = "/board/orders/{order_id}/row"
    watched: dict[str, asyncio.Task[None]] = {}

    async def watch(order_id: str) -> None:
        # On the board a new order's row first comes with the new-rows fragment (or the page),
        # which asks Temporal for its status; the row then polls. That first answer stands for
        # the fragment and is not timed: timed, most samples at C=50 (orders of about a second)
        # would be first answers, not polls.
        route = board["route"].format(order_id=order_id)
        try:
            await client.get(route)
        except HTTP_ERRORS:
            pass
        polls = 0
        # Each row at its own phase, as rows that appeared at different moments poll: a
        # hundred polls fired at the same instant would time this client's own queue.
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            if order_id not in progress.in_flight:
                return
            polls += 1
            began, sent_at = time.perf_counter(), time.monotonic()
            try:
                response = await client.get(route)
                http_status, age = response.status_code, response.headers.get(STATUS_AGE_HEADER)
            except HTTP_ERRORS:
                http_status, age = 0, None
            samples.append(RowSample(
                time.perf_counter() - began, http_status, len(progress.in_flight),
                None if age is None else float(age), order_id, sent_at,
            ))
            if polls % STATUS_EVERY == 1:
                began = time.perf_counter()
                try:
                    http_status = (await client.get(f"/orders/{order_id}/status")).status_code
                except HTTP_ERRORS:
                    http_status = 0
                status_samples.append(
                    RowSample(time.perf_counter() - began, http_status, len(progress.in_flight))
                )
            await asyncio.sleep(interval)

    try:
        while True:
            for order_id in list(progress.in_flight):
                if order_id not in watched:
                    watched[order_id] = asyncio.create_task(watch(order_id))
            await asyncio.sleep(0.05)
    finally:
        for task in watched.values():
            task.cancel()


async def watch_overview(
    client: HttpClient, progress: Progress, samples: list[RowSample], interval: float
) -> None:
    """Time the board's overview panel (GET /board/overview), as an open board polls it."""
    while True:
        began = time.perf_counter()
        try:
            http_status = (await client.get("/board/overview")).status_code
        except HTTP_ERRORS:
            http_status = 0
        samples.append(RowSample(time.perf_counter() - began, http_status, len(progress.in_flight)))
        await asyncio.sleep(interval)


@dataclass
class BoardTimings:
    """What the probe process measured."""

    rows: list[RowSample] = field(default_factory=list)
    statuses: list[RowSample] = field(default_factory=list)
    overviews: list[RowSample] = field(default_factory=list)
    board: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0


class BoardProbes:
    """The board's polls, run in a process of their own, as the browsers showing boards are
    other clients than the scripts driving the orders. Timed inside the benchmark's own event
    loop, busy with a hundred orders, a row's answer time included that loop's lag: p95 2.1 s
    there, 1.0 s from a process of its own, in runs where curl beside them timed 20 ms."""

    def __init__(self, url: str, http_timeout: float, interval: float, progress: Progress) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=_probe_board, args=(url, http_timeout, interval, child_end), daemon=True
        )
        self._progress = progress
        self._forwarding: Optional[asyncio.Task[None]] = None

    def start(self) -> None:
        self._process.start()
        self._forwarding = asyncio.create_task(self._forward())

    async def stop(self) -> BoardTimings:
        """Stop the polls and collect their timings."""
        if self._forwarding:
            self._forwarding.cancel()
        self._connection.send(None)
        timings = await asyncio.to_thread(self._connection.recv)
        await asyncio.to_thread(self._process.join)
        return timings

    async def _forward(self) -> None:
        in_flight: set[str] = set()
        finished = 0
        while True:
            now = set(self._progress.in_flight)
            news = self._progress.finished[finished:]
            if now != in_flight or news:
                self._connection.send((sorted(now - in_flight), sorted(in_flight - now), news))
            in_flight, finished = now, finished + len(news)
            await asyncio.sleep(FORWARD_SECONDS)


def _probe_board(url: str, http_timeout: float, interval: float, connection: Connection) -> None:
    asyncio.run(_probe_board_until_stopped(url, http_timeout, interval, connection))


async def _probe_board_until_stopped(
    url: str, http_timeout: float, interval: float, connection: Connection
) -> None:
    progress = Progress(total=0)
    timings = BoardTimings()
    cpu_at_start = _cpu_seconds()  # after the imports, which a browser would not count
    async with HttpClient(url, http_timeout) as client:
        polls = [
            asyncio.create_task(watch_board_rows(
                client, progress, timings.rows, timings.board, interval, timings.statuses
            )),
            asyncio.create_task(watch_overview(client, progress, timings.overviews, interval)),
        ]
        while True:
            message = connection.recv() if connection.poll() else ()
            if message is None:
                break
            if message:
                started, ended, finished = message
                progress.in_flight.update(dict.fromkeys(started))
                for order_id in ended:
                    progress.in_flight.pop(order_id, None)
                progress.finished.extend(finished)
            else:
                await asyncio.sleep(FORWARD_SECONDS)
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
    timings.cpu_seconds = _cpu_seconds() - cpu_at_start
    connection.send(timings)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
