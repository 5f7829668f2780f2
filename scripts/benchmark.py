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
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

if not __package__:
    # Run as a file, this script's folder is on sys.path and the checkout is not.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestration.models import FAILED
from scripts.bench.metrics import attempts_during, scrape_worker_metrics
from scripts.bench.orders import HTTP_ERRORS, HttpClient, OrderRecord, Progress, run_order
from scripts.bench.probes import BoardProbes
from scripts.bench.report import plot_histogram, report
from scripts.bench.summary import summarise
from scripts.drive.orders import in_slots
from scripts.drive.processes import PROCESS_KINDS, REPO_ROOT, cpu_seconds_by_kind, own_cpu_seconds, server_processes


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
    # One connection per order in flight: each does one request at a time.
    async with HttpClient(args.url, args.http_timeout, args.concurrency + 10) as client:
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
        probes = BoardProbes(args.url, args.http_timeout, args.row_interval, progress)
        began = time.monotonic()
        print(f"benchmark: run {run_id}, {args.orders} orders, {args.concurrency} in flight, against {args.url}",
              file=sys.stderr, flush=True)
        reporting = asyncio.create_task(report_progress(progress, began))
        probes.start()
        try:
            await in_slots(records, args.concurrency, lambda record: run_order(client, record, args, progress),
                           HTTP_ERRORS)
        finally:
            reporting.cancel()
            timings = await probes.stop()
        wall_seconds = time.monotonic() - began
        cpu_after, own_after = cpu_seconds_by_kind(processes), own_cpu_seconds()
        metrics_after_run = await scrape_worker_metrics(client, args.metrics_url)
        print(f"benchmark: run done in {wall_seconds:.1f} s; waiting {args.settle_seconds:g} s "
              "to read the workers' running activities again", file=sys.stderr, flush=True)
        await asyncio.sleep(args.settle_seconds)
        metrics_after_settle = await scrape_worker_metrics(client, args.metrics_url)

    cpu = {kind: cpu_after.get(kind, 0.0) - cpu_before.get(kind, 0.0) for kind, _ in PROCESS_KINDS if kind in cpu_before}
    cpu["benchmark client"] = own_after - own_before
    cpu["benchmark board probes"] = timings.cpu_seconds
    board = timings.board
    summary = summarise(records, wall_seconds, timings.rows, timings.statuses, timings.overviews,
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
            "row_fragment": {**board, "samples": [asdict(s) for s in timings.rows]},
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
