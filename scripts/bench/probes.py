"""Timing the board while orders are in flight: each order's row fragment and status, and the
overview panel, polled as an open board and a following script poll them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Optional

import httpx

from scripts.bench.orders import Progress
from web.board import STATUS_AGE_HEADER

STATUS_EVERY = 3


@dataclass
class RowSample:
    seconds: float
    http_status: int
    in_flight: int
    status_age: Optional[float] = None
    """How old the status the row showed was (the board's X-Status-Age header), seconds."""


async def watch_board_rows(
    client: httpx.AsyncClient, progress: Progress, samples: list[RowSample], board: dict[str, Any],
    interval: float, status_samples: list[RowSample],
) -> None:
    """Poll the row fragment of every order in flight every `interval` seconds, as the board
    page does for each row it shows, and time each answer; every STATUS_EVERY polls, time the
    order's full status (GET /orders/{id}/status) too, as a script following it would.

    Which route to time is decided on the first order that ended (its row surely exists): a 404
    there means the board has no row route, and the order status is timed instead."""
    while not progress.finished:
        await asyncio.sleep(0.05)
    probe = await client.get(f"/board/orders/{progress.finished[0]}/row")
    if probe.status_code == 404:
        board["route"] = "/orders/{order_id}/status"
        board["note"] = "GET /board/orders/{id}/row answered 404: timed GET /orders/{id}/status instead"
    else:
        board["route"] = "/board/orders/{order_id}/row"
    watched: dict[str, asyncio.Task[None]] = {}

    async def watch(order_id: str) -> None:
        # On the board a new order's row first comes with the new-rows fragment, which asks
        # Temporal for it; the row then polls. That first answer stands for the fragment and
        # is not timed.
        route = board["route"].format(order_id=order_id)
        try:
            await client.get(route)
        except httpx.HTTPError:
            pass
        polls = 0
        while True:
            await asyncio.sleep(interval)
            if order_id not in progress.in_flight:
                return
            polls += 1
            began = time.perf_counter()
            try:
                response = await client.get(route)
                http_status, age = response.status_code, response.headers.get(STATUS_AGE_HEADER)
            except httpx.HTTPError:
                http_status, age = 0, None
            samples.append(RowSample(
                time.perf_counter() - began, http_status, len(progress.in_flight),
                None if age is None else float(age),
            ))
            if polls % STATUS_EVERY == 1:
                began = time.perf_counter()
                try:
                    http_status = (await client.get(f"/orders/{order_id}/status")).status_code
                except httpx.HTTPError:
                    http_status = 0
                status_samples.append(
                    RowSample(time.perf_counter() - began, http_status, len(progress.in_flight))
                )

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
    client: httpx.AsyncClient, progress: Progress, samples: list[RowSample], interval: float
) -> None:
    """Time the board's overview panel (GET /board/overview), as an open board polls it."""
    while True:
        began = time.perf_counter()
        try:
            http_status = (await client.get("/board/overview")).status_code
        except httpx.HTTPError:
            http_status = 0
        samples.append(RowSample(time.perf_counter() - began, http_status, len(progress.in_flight)))
        await asyncio.sleep(interval)
