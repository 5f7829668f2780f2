"""The board's overview: how the desk is doing right now, from the orders' rows and admission.

Figures come from what the system already records: each order's row (state, started_at,
finished_at; see orchestration/tables.py) and this web process's admission counters. No
Temporal call per order: one database query per refresh, whatever the number of orders or of
open boards (OrderService caches the overview, see OVERVIEW_REFRESH_SECONDS there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Optional

from orchestration.models import (
    CANCELLED,
    CHARGED,
    DISPATCHED,
    FAILED,
    RECEIVED,
    SHIPPED,
    SHIPPING,
    TERMINAL_STATES,
    VALIDATED,
)

HISTORY = timedelta(minutes=5)
"""How far back the latency histogram looks."""
OPEN_ORDERS_LOOKBACK = timedelta(minutes=10)
"""Open rows older than this are not counted as in flight: every order ends within 15 s, so
such a row is left over from a crash and belongs to no running order."""
BIN_SECONDS = 1.0
BINS = 20
"""The histogram's 1-s bins, 0 to 20 s; slower orders go in the last bin."""


@dataclass(frozen=True)
class AdmissionSnapshot:
    """What this web process knows of admission (per replica)."""

    limit: int
    """MAX_ORDERS_IN_FLIGHT; 0 means no limit."""
    in_use: Optional[int]
    """Orders doing work at the last count; None before the first count."""
    waiting: int
    refused_in_window: int
    open_limit: int = 0
    """MAX_ORDERS_OPEN; 0 means no limit."""
    open: Optional[int] = None
    """Orders running at the last count, those parked at review included."""


@dataclass(frozen=True)
class Overview:
    window_seconds: float
    deadline_seconds: float
    awaiting_approval: int
    """At review (the database says `validated`): waiting for an approval or an address."""
    lacking_address: int
    in_progress: int
    ended: dict[str, int]
    """shipped / cancelled / failed within the window."""
    orders_per_second: float
    p50_seconds: Optional[float]
    p99_seconds: Optional[float]
    missed: int
    """Ended within the window, but later than the deadline after their start."""
    histogram: list[int]
    """Orders ended in the last HISTORY per BIN_SECONDS bin of start-to-end time."""
    history_missed: int
    admission: AdmissionSnapshot
    computed_at: datetime
    histogram_svg: str = field(default="", repr=False)


def _percentile(values: list[float], fraction: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def overview_from_rows(
    rows: Iterable[dict[str, Any]],
    now: datetime,
    window_seconds: float,
    deadline_seconds: float,
    admission: AdmissionSnapshot,
) -> Overview:
    """The overview of `rows` (each with state, no_address, started_at, finished_at, created_at)
    as of `now`."""
    window_start = now - timedelta(seconds=window_seconds)
    open_since = now - OPEN_ORDERS_LOOKBACK
    awaiting = lacking = in_progress = 0
    ended = {SHIPPED: 0, CANCELLED: 0, FAILED: 0}
    recent: list[float] = []
    histogram = [0] * BINS
    history_missed = 0
    for row in rows:
        state, finished = row["state"], row["finished_at"]
        if state not in TERMINAL_STATES or finished is None:
            if (row["created_at"] or now) < open_since:
                continue
            if state == VALIDATED:
                awaiting += 1
                lacking += bool(row["no_address"])
            elif state in (RECEIVED, CHARGED, SHIPPING, DISPATCHED):
                in_progress += 1
            continue
        seconds = (finished - (row["started_at"] or row["created_at"])).total_seconds()
        if finished >= now - HISTORY:
            histogram[min(BINS - 1, int(max(0.0, seconds) // BIN_SECONDS))] += 1
            history_missed += seconds > deadline_seconds
        if finished >= window_start:
            ended[state] += 1
            recent.append(seconds)
    return Overview(
        window_seconds=window_seconds,
        deadline_seconds=deadline_seconds,
        awaiting_approval=awaiting,
        lacking_address=lacking,
        in_progress=in_progress,
        ended=ended,
        orders_per_second=len(recent) / window_seconds,
        p50_seconds=_percentile(recent, 0.50),
        p99_seconds=_percentile(recent, 0.99),
        missed=sum(seconds > deadline_seconds for seconds in recent),
        histogram=histogram,
        history_missed=history_missed,
        admission=admission,
        computed_at=now,
        histogram_svg=histogram_svg(histogram, deadline_seconds),
    )


# The histogram's drawing, in SVG user units.
_WIDTH, _HEIGHT = 320, 96
_LEFT, _BOTTOM, _TOP = 28, 18, 8


def histogram_svg(histogram: list[int], deadline_seconds: float) -> str:
    """Bars of orders per second of start-to-end time, with the deadline as a dashed line. Bars
    past the deadline are hatched, so the chart reads the same without colour."""
    plot_width, plot_height = _WIDTH - _LEFT - 4, _HEIGHT - _BOTTOM - _TOP
    bar_width = plot_width / len(histogram)
    tallest = max(histogram) or 1
    parts = [
        f'<svg class="histogram" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        'aria-label="Orders ended in the last 5 minutes by seconds from start to end">',
        '<defs><pattern id="late" width="4" height="4" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="2" height="4" class="late-hatch"/></pattern></defs>',
        f'<line x1="{_LEFT}" y1="{_TOP + plot_height}" x2="{_LEFT + plot_width}" '
        f'y2="{_TOP + plot_height}" class="axis"/>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 8}" class="tick" text-anchor="end">{tallest}</text>',
        f'<text x="{_LEFT - 4}" y="{_TOP + plot_height}" class="tick" text-anchor="end">0</text>',
    ]
    for index, count in enumerate(histogram):
        if not count:
            continue
        height = plot_height * count / tallest
        late = index * BIN_SECONDS >= deadline_seconds
        parts.append(
            f'<rect x="{_LEFT + index * bar_width + 1:.1f}" y="{_TOP + plot_height - height:.1f}" '
            f'width="{bar_width - 2:.1f}" height="{height:.1f}" '
            f'class="bar{" late" if late else ""}">'
            f"<title>{count} order{'s' if count != 1 else ''} in "
            f"{index * BIN_SECONDS:g}–{(index + 1) * BIN_SECONDS:g} s</title></rect>"
        )
    deadline_x = _LEFT + plot_width * deadline_seconds / (len(histogram) * BIN_SECONDS)
    parts += [
        f'<line x1="{deadline_x:.1f}" y1="{_TOP - 4}" x2="{deadline_x:.1f}" '
        f'y2="{_TOP + plot_height}" class="deadline-line"/>',
        f'<text x="{deadline_x - 3:.1f}" y="{_TOP + 4}" class="tick" text-anchor="end">'
        f"{deadline_seconds:g} s promise</text>",
    ]
    for seconds in (0, 5, 10, 15, 20):
        x = _LEFT + plot_width * seconds / (len(histogram) * BIN_SECONDS)
        label = f"{seconds}+ s" if seconds == len(histogram) * BIN_SECONDS else f"{seconds} s"
        parts.append(
            f'<text x="{x:.1f}" y="{_HEIGHT - 4}" class="tick" text-anchor="middle">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
