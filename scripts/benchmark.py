"""Benchmark the 15-second promise against the running system, through its JSON API.

Usage (with the system up, e.g. `scripts/start`, and `pip install -e '.[bench]'`):

    .venv/bin/python scripts/benchmark.py -n 50 -c 1 --json-out bench.json --png-out bench.png
    .venv/bin/python scripts/benchmark.py -n 1000 -c 50 --fail-over-seconds 15   # CI gate
    .venv/bin/python scripts/benchmark.py --url http://127.0.0.1:8100 \\
        --metrics-url http://127.0.0.1:9111/metrics --metrics-url http://127.0.0.1:9112/metrics

It does what a script user would: keeps C orders in flight out of N, each started with
POST /orders/{id}/start, approved at once (or after --approve-delay) with
POST /orders/{id}/signals/approve, and followed with GET /orders/{id}/status?wait=S (the server
answers as soon as the order has ended, or after S seconds with its current status, and then it
is asked again) until it is shipped, cancelled or failed. The real flaky_call runs as it is:
nothing is patched or seeded.

Reported: latency start -> terminal from the workflow's own started_at/finished_at (the
promise) and as the client saw it (start answered -> terminal status read), p50/p90/p99/max,
and how long the accepted start took to answer (at MAX_ORDERS_IN_FLIGHT it waits for a place);
the share terminal within each order's deadline; failed and cancelled orders with their
reasons; orders per second; the CPU seconds each server process used during the run (found in
/proc by command line, among the processes whose working directory is inside
--processes-under); the activity coroutines still running in the workers right after the run
and --settle-seconds later, with the activity attempts by outcome (from the workers' /metrics); and the latency of the board's row fragment GET /board/orders/{id}/row
while orders are in flight, each polled once a second as the board does (GET /orders/{id}/status
instead when the board has no such route), and how old the status each row showed was.
Each figure is printed beside its target. Progress goes to stderr once a second.

Exit status: 0; 1 with --fail-over-seconds S when an order failed, or did not end within S
seconds of its start; 2 when the system is not healthy at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import httpx

from orchestration.metrics import ATTEMPTS_METRIC, RUNNING_METRIC
from orchestration.models import CANCELLED, FAILED, SHIPPED

REPO_ROOT = Path(__file__).resolve().parent.parent
TERMINAL_STATES = (SHIPPED, CANCELLED, FAILED)
PROMISE_SECONDS = 15.0
ADDRESS = {"line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
STATUS_AGE_HEADER = "X-Status-Age"
# A 503 at the admission limit says this (web/service.py); any other 503 is an outage.
CAPACITY_REFUSAL = "orders are being processed"
# A row answers 200, or 286 (htmx: stop polling) once its order has ended.
ROW_ANSWERED = (200, 286)
# After a failed status request (e.g. 503 while the system is overloaded), wait before the next.
ERROR_PAUSE_SECONDS = 0.25
APPROVE_TRIES = 8
STATUS_EVERY = 3

# Which server process a command line belongs to; the first match wins.
PROCESS_KINDS: list[tuple[str, Callable[[list[str]], bool]]] = [
    ("temporal server", lambda argv: Path(argv[0]).name == "temporal" and "server" in argv),
    ("order worker", lambda argv: "orchestration.order.worker" in argv),
    ("shipping worker", lambda argv: "orchestration.shipping.worker" in argv),
    ("web", lambda argv: "web.app:app" in argv),
    # The postmaster, its backends (which rename themselves "postgres: ...") and the wrapper.
    (
        "postgres",
        lambda argv: Path(argv[0]).name == "postgres"
        or argv[0].startswith("postgres:")
        or any(arg.endswith("local_postgres.py") for arg in argv),
    ),
]


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
class RowSample:
    seconds: float
    http_status: int
    in_flight: int
    status_age: Optional[float] = None
    """How old the status the row showed was (the board's X-Status-Age header), seconds."""


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


def percentile(values: Sequence[float], fraction: float) -> Optional[float]:
    """Nearest-rank percentile: the smallest value with `fraction` of all values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def latency_summary(values: Sequence[float]) -> dict[str, Optional[float]]:
    return {
        "count": len(values),
        "p50": percentile(values, 0.50),
        "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else None,
    }


# Orders.


async def run_order(
    client: httpx.AsyncClient, record: OrderRecord, args: argparse.Namespace, progress: Progress
) -> None:
    """Start, approve and follow one order to a terminal state (or to --order-timeout)."""
    first_sent_at = time.monotonic()
    while True:
        sent_at = time.monotonic()
        response = await client.post(
            f"/orders/{record.order_id}/start",
            json={"payment_id": f"pay-{record.order_id}", "items": [{"sku": "ABC", "qty": 1}], "address": ADDRESS},
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
    client: httpx.AsyncClient, record: OrderRecord, args: argparse.Namespace, started_at: float
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
        except httpx.HTTPError as err:
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


async def run_orders(
    client: httpx.AsyncClient, records: list[OrderRecord], args: argparse.Namespace, progress: Progress
) -> None:
    slots = asyncio.Semaphore(args.concurrency)

    async def in_slot(record: OrderRecord) -> None:
        async with slots:
            try:
                await run_order(client, record, args, progress)
            except httpx.HTTPError as err:
                record.error = f"{type(err).__name__}: {err}"

    await asyncio.gather(*(in_slot(record) for record in records))


# Board row fragment.


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


# Processes and worker metrics.


def server_processes(root: Path) -> dict[int, str]:
    """pid -> kind of every server process whose working directory is inside `root`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone, or not ours to read
            continue
        if not argv[0] or not (cwd == root or root in cwd.parents):
            continue
        kind = next((kind for kind, matches in PROCESS_KINDS if matches(argv)), None)
        if kind:
            found[int(entry.name)] = kind
    return found


def cpu_seconds_by_kind(processes: dict[int, str]) -> dict[str, float]:
    """CPU seconds used so far per kind, each process's own plus its reaped children's.

    Counting reaped children keeps the time of postgres backends that exit during the run: it
    moves into the postmaster's count when they go."""
    totals: Counter[str] = Counter()
    for pid, kind in processes.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat; [0] here is field 3.
        totals[kind] += sum(int(ticks) for ticks in fields[11:15]) / CLOCK_TICKS_PER_SECOND
    return dict(totals)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def scrape_worker_metrics(client: httpx.AsyncClient, urls: Sequence[str]) -> dict[str, Any]:
    """Per metrics URL: activity coroutines running and attempts by outcome, or the error."""
    scraped: dict[str, Any] = {}
    for url in urls:
        try:
            response = await client.get(url, timeout=5)
            response.raise_for_status()
        except httpx.HTTPError as err:
            scraped[url] = {"error": f"{type(err).__name__}: {err}"}
            continue
        running: Optional[float] = None
        attempts: Counter[str] = Counter()
        for line in response.text.splitlines():
            name, _, rest = line.partition("{")
            if name == RUNNING_METRIC:
                running = float(line.rsplit(" ", 1)[1])
            elif name == ATTEMPTS_METRIC:
                outcome = rest.split('outcome="', 1)[1].split('"', 1)[0]
                attempts[outcome] += int(float(line.rsplit(" ", 1)[1]))
        scraped[url] = {"running": running, "attempts": dict(attempts)}
    return scraped


def attempts_during(before: dict[str, Any], after: dict[str, Any]) -> Counter[str]:
    moved: Counter[str] = Counter()
    for url, sample in after.items():
        earlier = before.get(url, {}).get("attempts", {})
        for outcome, count in sample.get("attempts", {}).items():
            moved[outcome] += count - earlier.get(outcome, 0)
    return moved


def coroutines_running(scraped: dict[str, Any]) -> Optional[int]:
    """Sum over the workers; None when any worker could not be read."""
    values = [sample.get("running") for sample in scraped.values()]
    return None if not values or None in values else int(sum(values))


# Reporting.


@dataclass
class Target:
    figure: str
    key: str
    """Key of the measured value in the summary."""
    limit: Union[float, str]
    """The bound, or the key of a figure of this run that is the bound (e.g. the floor's)."""
    at_most: bool
    applies_to: str
    applies: Callable[[argparse.Namespace], bool]

    def bound(self, summary: dict[str, Any]) -> Optional[float]:
        return summary.get(self.limit) if isinstance(self.limit, str) else self.limit

    def verdict(self, summary: dict[str, Any]) -> str:
        measured, bound = summary.get(self.key), self.bound(summary)
        if measured is None or bound is None:
            return "no data"
        holds = measured <= bound if self.at_most else measured >= bound
        return "pass" if holds else "MISS"


def c1(a: argparse.Namespace) -> bool:
    return a.orders == 50 and a.concurrency == 1


def c50(a: argparse.Namespace) -> bool:
    return a.orders == 1000 and a.concurrency == 50


TARGETS = [
    Target("latency p50 (workflow), at most the local floor's", "workflow_p50_s", "floor_local_p50_s",
           True, "N=50 C=1", c1),
    Target("latency p99 (workflow)", "workflow_p99_s", 1.0, True, "N=50 C=1", c1),
    Target("terminal within 15 s (%)", "within_promise_pct", 100.0, False, "N=1000 C=50", c50),
    Target("failed orders", "failed", 0, True, "N=1000 C=50", c50),
    Target("latency p99 (workflow)", "workflow_p99_s", 3.0, True, "N=1000 C=50", c50),
    Target("throughput (orders/s)", "orders_per_second", 8.0, False, "C=50",
           lambda a: a.concurrency == 50),
    Target("throughput as a share of the local floor", "share_of_local_floor", 0.85, False, "C=50",
           lambda a: a.concurrency == 50),
    Target("Temporal server CPU s per order", "server_cpu_per_order", 0.10, True, "C=50",
           lambda a: a.concurrency == 50),
    Target("client-seen p99, first request to end (s)", "total_p99_s", 15.0, True,
           "N=300 C=50", lambda a: a.orders == 300 and a.concurrency == 50),
    Target("starts given up", "gave_up", 0, True, "N=300 C=50",
           lambda a: a.orders == 300 and a.concurrency == 50),
    Target("activity coroutines after settle", "coroutines_after_settle", 0, True, "every run",
           lambda a: True),
    Target("board row p95 (ms)", "row_p95_ms", 150.0, True, "100 in flight",
           lambda a: a.concurrency >= 100),
    Target("overview panel p95 (ms)", "overview_p95_ms", 150.0, True, "100 in flight",
           lambda a: a.concurrency >= 100),
]


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def summarise(
    records: list[OrderRecord], wall_seconds: float, row_samples: list[RowSample],
    status_samples: list[RowSample], overview_samples: list[RowSample],
    after_run: dict[str, Any], after_settle: dict[str, Any],
    attempts: Counter[str], cpu: dict[str, float], floor: dict[str, Any],
) -> dict[str, Any]:
    workflow_times = [r.workflow_seconds for r in records if r.workflow_seconds is not None]
    client_times = [r.client_seconds for r in records if r.client_seconds is not None]
    total_times = [r.total_seconds for r in records if r.total_seconds is not None]
    status_ms = [s.seconds * 1000 for s in status_samples if s.http_status == 200]
    overview_ms = [s.seconds * 1000 for s in overview_samples if s.http_status == 200]
    start_times = [r.start_seconds for r in records if r.start_seconds is not None]
    terminal = [r for r in records if r.terminal]
    within = [r for r in terminal if r.workflow_seconds is not None and r.workflow_seconds <= r.deadline_seconds]
    row_ms = [s.seconds * 1000 for s in row_samples if s.http_status in ROW_ANSWERED]
    row_ages = [s.status_age for s in row_samples if s.status_age is not None]
    workflow, client = latency_summary(workflow_times), latency_summary(client_times)
    total = latency_summary(total_times)
    throughput = len(terminal) / wall_seconds if wall_seconds else None
    shares = {
        f"share_of_{shape}_floor": throughput / figures["orders_per_second"] if throughput else None
        for shape, figures in floor.items()
    }
    return {
        "orders": len(records),
        "states": dict(Counter(r.state for r in records)),
        "terminal": len(terminal),
        "within_promise": len(within),
        "within_promise_pct": 100.0 * len(within) / len(records) if records else None,
        "failed": sum(r.state == FAILED for r in records),
        "cancelled": sum(r.state == CANCELLED for r in records),
        "reasons": dict(Counter(f"{r.state}: {r.reason or r.error}" for r in records if r.state != SHIPPED)),
        "workflow_latency_s": workflow,
        "client_latency_s": client,
        "start_answer_s": latency_summary(start_times),
        "total_latency_s": total,
        "total_p99_s": total["p99"],
        "gave_up": sum(r.gave_up for r in records),
        "outage_refusals": sum(r.outage_refusals for r in records),
        "workflow_p50_s": workflow["p50"],
        "workflow_p99_s": workflow["p99"],
        "server_cpu_per_order": cpu["temporal server"] / len(terminal)
        if terminal and "temporal server" in cpu else None,
        "floor": floor,
        **{f"floor_{shape}_p50_s": figures["p50"] for shape, figures in floor.items()},
        **shares,
        "status_samples": len(status_samples),
        "status_errors_sampled": sum(s.http_status != 200 for s in status_samples),
        "status_p50_ms": percentile(status_ms, 0.50),
        "status_p95_ms": percentile(status_ms, 0.95),
        "overview_samples": len(overview_samples),
        "overview_errors": sum(s.http_status != 200 for s in overview_samples),
        "overview_p50_ms": percentile(overview_ms, 0.50),
        "overview_p95_ms": percentile(overview_ms, 0.95),
        "overview_mean_in_flight": (
            sum(s.in_flight for s in overview_samples) / len(overview_samples) if overview_samples else None
        ),
        "wall_seconds": wall_seconds,
        "status_requests": sum(r.status_requests for r in records),
        "status_errors": sum(r.status_errors for r in records),
        "capacity_refusals": sum(r.capacity_refusals for r in records),
        "orders_per_second": throughput,
        "row_samples": len(row_samples),
        "row_errors": sum(s.http_status not in ROW_ANSWERED for s in row_samples),
        "row_p50_ms": percentile(row_ms, 0.50),
        "row_p95_ms": percentile(row_ms, 0.95),
        "row_status_age_p50_s": percentile(row_ages, 0.50),
        "row_status_age_p95_s": percentile(row_ages, 0.95),
        "row_mean_in_flight": (
            sum(s.in_flight for s in row_samples) / len(row_samples) if row_samples else None
        ),
        "coroutines_after_run": coroutines_running(after_run),
        "coroutines_after_settle": coroutines_running(after_settle),
        "activity_attempts": dict(attempts),
    }


def report(
    summary: dict[str, Any], cpu: dict[str, float], board: dict[str, Any],
    args: argparse.Namespace,
) -> tuple[str, list[dict[str, Any]]]:
    wall = summary["wall_seconds"]
    workflow, client = summary["workflow_latency_s"], summary["client_latency_s"]
    rows = [
        ("orders / in flight", f"{summary['orders']} / {args.concurrency}"),
        ("states", ", ".join(f"{state} {n}" for state, n in sorted(summary["states"].items()))),
        ("terminal within deadline", f"{summary['within_promise']} ({fmt(summary['within_promise_pct'], 1)} %)"),
        ("failed / cancelled", f"{summary['failed']} / {summary['cancelled']}"),
        *[(f"  {reason}", str(n)) for reason, n in sorted(summary["reasons"].items())],
        ("latency workflow p50/p90/p99/max s",
         " / ".join(fmt(workflow[k]) for k in ("p50", "p90", "p99", "max"))),
        ("latency client p50/p90/p99/max s",
         " / ".join(fmt(client[k]) for k in ("p50", "p90", "p99", "max"))),
        ("client-seen, first request to end, p50/p90/p99/max s",
         " / ".join(fmt(summary["total_latency_s"][k]) for k in ("p50", "p90", "p99", "max"))
         + f"  ({summary['gave_up']} gave up after {args.give_up_seconds:g} s)"),
        ("start answered after p50/p99/max s",
         " / ".join(fmt(summary["start_answer_s"][k]) for k in ("p50", "p99", "max"))
         + "  (waiting for a place included)"),
        ("wall time s", fmt(wall)),
        (f"status requests (wait={args.wait_seconds:g} s) / errors",
         f"{summary['status_requests']} / {summary['status_errors']}"),
        ("throughput orders/s", fmt(summary["orders_per_second"])),
        *[(f"  floor ({shape} activities): orders/s, p50 / p99 s, product's share",
           f"{fmt(figures['orders_per_second'])}, {fmt(figures['p50'])} / {fmt(figures['p99'])},"
           f" {fmt(summary[f'share_of_{shape}_floor'])}")
          for shape, figures in summary["floor"].items()],
        ("Temporal server CPU s per order", fmt(summary["server_cpu_per_order"], 3)),
        ("starts refused at capacity / for an outage, retried",
         f"{summary['capacity_refusals']} / {summary['outage_refusals']}"),
        ("activity attempts by outcome",
         ", ".join(f"{k} {v}" for k, v in sorted(summary["activity_attempts"].items())) or "-"),
        ("activity coroutines running: right after / settled",
         f"{fmt(summary['coroutines_after_run'])} / {fmt(summary['coroutines_after_settle'])}"
         f"  ({args.settle_seconds:g} s later)"),
        (f"row fragment p50/p95 ms ({board.get('route', 'not measured')})",
         f"{fmt(summary['row_p50_ms'], 1)} / {fmt(summary['row_p95_ms'], 1)}"
         f"  ({summary['row_samples']} samples, {summary['row_errors']} errors,"
         f" mean {fmt(summary['row_mean_in_flight'], 1)} in flight)"),
        ("row status age p50/p95 s (how old the shown status was)",
         f"{fmt(summary['row_status_age_p50_s'])} / {fmt(summary['row_status_age_p95_s'])}"),
        ("overview panel p50/p95 ms (GET /board/overview)",
         f"{fmt(summary['overview_p50_ms'], 1)} / {fmt(summary['overview_p95_ms'], 1)}"
         f"  ({summary['overview_samples']} samples, {summary['overview_errors']} errors,"
         f" mean {fmt(summary['overview_mean_in_flight'], 1)} in flight)"),
        ("GET /orders/{id}/status p50/p95 ms while in flight",
         f"{fmt(summary['status_p50_ms'], 1)} / {fmt(summary['status_p95_ms'], 1)}"
         f"  ({summary['status_samples']} samples, {summary['status_errors_sampled']} errors)"),
        *[(f"CPU s {kind}", f"{seconds:.1f} ({100 * seconds / wall:.0f} % of a core)" if wall else f"{seconds:.1f}")
          for kind, seconds in cpu.items()],
    ]
    text = "Summary\n" + table(("figure", "measured"), rows)
    if board.get("note"):
        text += f"\nnote: {board['note']}"
    verdicts = []
    for target in TARGETS:
        measured = summary.get(target.key)
        verdicts.append({
            "figure": target.figure, "measured": measured,
            "target": f"{'<=' if target.at_most else '>='} {fmt(target.bound(summary))}",
            "applies_to": target.applies_to, "this_run_is_that_run": target.applies(args),
            "verdict": target.verdict(summary),
        })
    text += "\n\nTargets (a verdict counts only where this run is the target's run)\n" + table(
        ("figure", "measured", "target", "target's run", "this run?", "verdict"),
        [(v["figure"], fmt(v["measured"]), v["target"], v["applies_to"],
          "yes" if v["this_run_is_that_run"] else "no", v["verdict"]) for v in verdicts],
    )
    return text, verdicts


def plot_histogram(records: list[OrderRecord], summary: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    workflow = [r.workflow_seconds for r in records if r.workflow_seconds is not None]
    client = [r.client_seconds for r in records if r.client_seconds is not None]
    top = max([PROMISE_SECONDS + 1, *workflow, *client])
    bins = [i * 0.25 for i in range(int(top / 0.25) + 2)]
    figure, axes = pyplot.subplots(figsize=(12, 4.5))
    axes.hist(workflow, bins=bins, color="tab:blue", alpha=0.75, label="workflow started_at → finished_at")
    axes.hist(client, bins=bins, histtype="step", color="tab:orange", linewidth=1.5,
              label="client: start answered → terminal status")
    axes.axvline(PROMISE_SECONDS, color="red", linestyle="--", linewidth=2, label="15-s promise")
    for name, style in (("p50", ":"), ("p99", "-.")):
        value = summary["workflow_latency_s"][name]
        if value is not None:
            axes.axvline(value, color="tab:blue", linestyle=style, label=f"workflow {name} {value:.2f} s")
    axes.set_xlabel("seconds from start to shipped / cancelled / failed")
    axes.set_ylabel("orders")
    axes.set_title(
        f"N={args.orders} C={args.concurrency}: {summary['within_promise']}/{summary['orders']} within the deadline, "
        f"{summary['failed']} failed, {fmt(summary['orders_per_second'])} orders/s"
    )
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


# The run.


async def report_progress(progress: Progress, began: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        states = ", ".join(f"{state} {n}" for state, n in sorted(progress.states.items())) or "none yet"
        print(
            f"[{time.monotonic() - began:6.1f}s] started {progress.started}/{progress.total}, "
            f"in flight {len(progress.in_flight)}, ended: {states}; over deadline {progress.over_deadline}",
            file=sys.stderr, flush=True,
        )


def run_floor(args: argparse.Namespace) -> dict[str, Any]:
    """scripts/temporal_floor.py's figures for both shapes at this run's concurrency, measured
    now, before the product (one after the other: they would share the CPU otherwise)."""
    orders = min(args.orders, args.floor_orders)
    print(f"benchmark: the floor first: {orders} orders, {args.concurrency} in flight, each shape",
          file=sys.stderr, flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [sys.executable, str(REPO_ROOT / "scripts" / "temporal_floor.py"), "-n", str(orders),
             "-c", str(args.concurrency), "--json-out", out.name],
            check=True, stdout=sys.stderr,
        )
        return json.loads(Path(out.name).read_text())


async def benchmark(args: argparse.Namespace) -> int:
    floor = run_floor(args) if args.floor else {}
    run_id = args.run_id or uuid.uuid4().hex[:8]
    records = [OrderRecord(f"bench-{run_id}-{i:05d}") for i in range(args.orders)]
    limits = httpx.Limits(max_connections=args.concurrency + 10, max_keepalive_connections=args.concurrency + 10)
    async with httpx.AsyncClient(base_url=args.url, timeout=args.http_timeout, limits=limits) as client:
        health = await client.get("/health")
        if health.status_code != 200:
            print(f"benchmark: {args.url}/health answered {health.status_code}: {health.text}", file=sys.stderr)
            return 2
        processes = server_processes(Path(args.processes_under).resolve())
        missing = {kind for kind, _ in PROCESS_KINDS} - set(processes.values())
        if missing:
            print(f"benchmark: no process found under {args.processes_under} for: {', '.join(sorted(missing))}"
                  " (their CPU is not reported)", file=sys.stderr)
        metrics_before = await scrape_worker_metrics(client, args.metrics_url)
        cpu_before, own_before = cpu_seconds_by_kind(processes), own_cpu_seconds()

        progress = Progress(total=args.orders)
        row_samples: list[RowSample] = []
        status_samples: list[RowSample] = []
        overview_samples: list[RowSample] = []
        board: dict[str, Any] = {}
        began = time.monotonic()
        print(f"benchmark: run {run_id}, {args.orders} orders, {args.concurrency} in flight, against {args.url}",
              file=sys.stderr, flush=True)
        helpers = [
            asyncio.create_task(report_progress(progress, began)),
            asyncio.create_task(watch_board_rows(
                client, progress, row_samples, board, args.row_interval, status_samples
            )),
            asyncio.create_task(watch_overview(client, progress, overview_samples, args.row_interval)),
        ]
        try:
            await run_orders(client, records, args, progress)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        wall_seconds = time.monotonic() - began
        cpu_after, own_after = cpu_seconds_by_kind(processes), own_cpu_seconds()
        metrics_after_run = await scrape_worker_metrics(client, args.metrics_url)
        print(f"benchmark: run done in {wall_seconds:.1f} s; waiting {args.settle_seconds:g} s "
              "to read the workers' running activities again", file=sys.stderr, flush=True)
        await asyncio.sleep(args.settle_seconds)
        metrics_after_settle = await scrape_worker_metrics(client, args.metrics_url)

    cpu = {kind: cpu_after.get(kind, 0.0) - cpu_before.get(kind, 0.0) for kind, _ in PROCESS_KINDS if kind in cpu_before}
    cpu["benchmark client"] = own_after - own_before
    summary = summarise(records, wall_seconds, row_samples, status_samples, overview_samples,
                        metrics_after_run, metrics_after_settle,
                        attempts_during(metrics_before, metrics_after_run), cpu, floor)
    text, verdicts = report(summary, cpu, board, args)
    print(text)
    unreadable = {url: s["error"] for url, s in metrics_after_settle.items() if "error" in s}
    for url, error in unreadable.items():
        print(f"warning: worker metrics {url} unreadable: {error}")

    if args.json_out:
        Path(args.json_out).write_text(json.dumps({
            "run_id": run_id,
            "config": {k: v for k, v in vars(args).items() if k not in ("json_out", "png_out")},
            "summary": summary,
            "targets": verdicts,
            "cpu_seconds": cpu,
            "worker_metrics": {"before": metrics_before, "after_run": metrics_after_run,
                               "after_settle": metrics_after_settle},
            "row_fragment": {**board, "samples": [asdict(s) for s in row_samples]},
            "orders": [asdict(r) for r in records],
        }, indent=2))
        print(f"wrote {args.json_out}")
    if args.png_out:
        plot_histogram(records, summary, args, Path(args.png_out))
        print(f"wrote {args.png_out}")

    if args.fail_over_seconds is not None:
        late = [r.order_id for r in records
                if r.workflow_seconds is None or r.workflow_seconds > args.fail_over_seconds]
        failed = [r.order_id for r in records if r.state == FAILED]
        if late or failed:
            print(f"FAIL: {len(late)} order(s) not terminal within {args.fail_over_seconds:g} s, "
                  f"{len(failed)} failed (first: {(late + failed)[:5]})")
            return 1
    return 0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the web API")
    parser.add_argument("-n", "--orders", type=int, default=50, help="orders to run (default 50)")
    parser.add_argument("-c", "--concurrency", type=int, default=1, help="orders in flight at once (default 1)")
    parser.add_argument("--approve-delay", type=float, default=0.0,
                        help="seconds between an order's start and its approval (default 0)")
    parser.add_argument("--wait-seconds", type=float, default=10.0,
                        help="how long one status request waits for its order to end (default 10)")
    parser.add_argument("--order-timeout", type=float, default=60.0,
                        help="stop following an order that is not terminal after this many seconds (default 60)")
    parser.add_argument("--http-timeout", type=float, default=10.0, help="per request, seconds (default 10)")
    parser.add_argument("--start-timeout", type=float, default=60.0,
                        help="per start request, which may wait for a place (default 60)")
    parser.add_argument("--give-up-seconds", type=float, default=90.0,
                        help="give a start up when not admitted this long after its first request (default 90)")
    parser.add_argument("--floor", action="store_true",
                        help="first run scripts/temporal_floor.py (both shapes) at this concurrency, and "
                             "report the product's throughput as a share of each")
    parser.add_argument("--floor-orders", type=int, default=300,
                        help="orders per floor shape, at most -n (default 300)")
    parser.add_argument("--row-interval", type=float, default=1.0,
                        help="seconds between polls of one row, as the board polls (default 1)")
    parser.add_argument("--metrics-url", action="append",
                        help="a worker's Prometheus /metrics (repeat; default the Procfile's 9101 and 9102)")
    parser.add_argument("--settle-seconds", type=float, default=10.0,
                        help="read the workers' running activities again this long after the run (default 10)")
    parser.add_argument("--processes-under", default=str(REPO_ROOT),
                        help="report CPU of server processes whose working directory is inside this one "
                             "(default: this checkout)")
    parser.add_argument("--fail-over-seconds", type=float,
                        help="exit 1 if an order failed or did not end within this many seconds of its start")
    parser.add_argument("--json-out", help="write the full result as JSON here")
    parser.add_argument("--png-out", help="write the latency histogram here")
    parser.add_argument("--run-id", help="order ids are bench-<run id>-<n> (default random)")
    args = parser.parse_args(argv)
    args.metrics_url = args.metrics_url or ["http://127.0.0.1:9101/metrics", "http://127.0.0.1:9102/metrics"]
    return args


def main() -> int:
    return asyncio.run(benchmark(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
