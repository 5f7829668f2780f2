"""The board overview's figures (web/overview.py), worked out from order rows without servers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from web.overview import BINS, AdmissionSnapshot, overview_from_rows

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)
ADMISSION = AdmissionSnapshot(limit=12, in_use=3, waiting=2, refused_in_window=1)


def row(state: str, *, ended_ago: float | None = None, took: float = 1.0, no_address: bool = False,
        created_ago: float = 5.0) -> dict:
    finished = None if ended_ago is None else NOW - timedelta(seconds=ended_ago)
    started = (finished or NOW) - timedelta(seconds=took)
    return {
        "state": state,
        "no_address": no_address,
        "started_at": started,
        "finished_at": finished,
        "created_at": NOW - timedelta(seconds=created_ago),
    }


def test_counts_now_and_in_the_window():
    rows = [
        row("validated", no_address=True),
        row("validated"),
        row("received"),
        row("shipping"),
        row("shipped", ended_ago=10, took=2.0),
        row("shipped", ended_ago=20, took=4.0),
        row("cancelled", ended_ago=30, took=1.0),
        row("failed", ended_ago=50, took=16.0),
        # Ended before the window: in the histogram only.
        row("shipped", ended_ago=120, took=3.0),
        # Open, but from before any running order could have started: left over from a crash.
        row("received", created_ago=3600),
    ]
    overview = overview_from_rows(rows, NOW, 60.0, 15.0, ADMISSION)
    assert (overview.awaiting_approval, overview.lacking_address, overview.in_progress) == (2, 1, 2)
    assert overview.ended == {"shipped": 2, "cancelled": 1, "failed": 1}
    assert overview.orders_per_second == 4 / 60
    assert overview.p50_seconds == 2.0 and overview.p99_seconds == 16.0
    assert overview.missed == 1
    assert sum(overview.histogram) == 5 and overview.history_missed == 1
    assert overview.histogram[1] == 1 and overview.histogram[16] == 1, "the 1-s and 16-s orders"
    assert overview.admission == ADMISSION


def test_the_histogram_reads_without_colour():
    rows = [row("shipped", ended_ago=5, took=seconds) for seconds in (0.5, 0.7, 1.2, 17.0, 42.0)]
    overview = overview_from_rows(rows, NOW, 60.0, 15.0, ADMISSION)
    assert overview.histogram[0] == 2 and overview.histogram[BINS - 1] == 1
    svg = overview.histogram_svg
    assert svg.startswith("<svg") and "15 s promise" in svg and 'class="deadline-line"' in svg
    # Late bars carry a hatch pattern, not only a colour, and every bar says what it counts.
    assert svg.count('class="bar late"') == 2 and 'id="late"' in svg
    assert "<title>2 orders in 0–1 s</title>" in svg


def test_an_empty_desk():
    overview = overview_from_rows([], NOW, 60.0, 15.0, ADMISSION)
    assert overview.p50_seconds is None and overview.orders_per_second == 0
    assert overview.histogram == [0] * BINS
