"""The benchmark's figures, summarised from its records and samples, and the targets they are held to."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from orchestration.models import CANCELLED, FAILED, SHIPPED
from scripts.bench.metrics import coroutines_running
from scripts.bench.orders import OrderRecord
from scripts.bench.probes import RowSample

# A row answers 200, or 286 (htmx: stop polling) once its order has ended.
ROW_ANSWERED = (200, 286)


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
