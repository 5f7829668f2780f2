"""Fault test: run orders through a system of our own while breaking it for real, then check
that money moved exactly once and that PostgreSQL, Temporal and the API agree.

Usage:

    .venv/bin/python scripts/fault_test.py                     # 200 orders, 50 in flight, every fault
    .venv/bin/python scripts/fault_test.py --short             # CI: 40 orders, 10 in flight, one of each
    .venv/bin/python scripts/fault_test.py --scenario workers --seed 7
    .venv/bin/python scripts/fault_test.py --scenario database --scenario web -n 100 -c 20

It starts everything as child processes in a temporary directory, on free ports, so it runs
beside `scripts/start` and the test suite: PostgreSQL (scripts/local_postgres.py), the Temporal
dev server (scripts/temporal_dev_server.py), the migrations (scripts/migrate.py), the web app
(uvicorn) and both workers. Every child gets a process group of its own and is stopped when the
run ends, however it ends (and killed by the kernel if this process dies first).

Orders are started with POST /orders/{id}/start, approved right after with
POST /orders/{id}/signals/approve and polled with GET /orders/{id}/status, C at a time; a
quarter of them (--cancel-share) an operator cancels with POST /orders/{id}/signals/cancel 0 to
1.5 s after the start, racing the approval, so that cancels land before it, during the charge
and shipping, and after the end, and paid orders are refunded while the faults fire. Every request is retried with
backoff through connection errors and 503 (see Api). Meanwhile, each
fault fires once a random number of orders (seeded RNG; the seed is printed) has started:

  workers   SIGKILL the order worker and the shipping worker --kills times each, restarting each
            after a short pause
  stalls    freeze (SIGSTOP) the order worker and the shipping worker --stalls times each for
            2.5 to 4 s, past the workflow task timeout, then let them go on (SIGCONT); with this
            scenario each worker runs as two replicas, which take over a frozen one's orders.
            The second replicas are frozen and the first ones killed, so that stalls may come
            while another fault is under way
  graceful  SIGTERM the order worker once, then restart it
  database  stop PostgreSQL (SIGINT: fast shutdown) and start it again on the same port and data
  web       stop the web process (SIGTERM) and start it again on the same port

Once every order is terminal (or --settle-seconds after its start passed), and the order
workers' sweep has refunded any charge recorded after its order closed (a frozen worker's
attempt; up to LATE_CHARGE_WAIT_SECONDS), the workers get SIGTERM, and the invariants are
checked against PostgreSQL (asyncpg) and Temporal (each workflow's result):
- every order is terminal;
- a shipped order has exactly one payment, charged; a cancelled or failed order has no payment
  left charged; no order has two payments or two charges;
- no fact is recorded twice: the unique index on events.event_key exists, and once-only facts
  (received, charged, dispatched, shipped, refunded, closed) appear at most once per order;
- orders.state, the payment's status and the API's last answer equal the workflow's result (a
  late charge the sweep refunded is refunded in the database, unknown to the workflow);
- a cancel answered 200 names the state the order ended in, and one refused (409) did not
  cancel it;
- every SIGTERM ends its worker with status 0 within GRACEFUL_STOP_LIMIT_SECONDS, with every
  pooled database connection given back;
- the API answered every outage with 503 and Retry-After: any other 5xx (a 500 is an outage
  the web app did not recognise, or a bug) or a 503 without Retry-After fails the run;
- every order ended within its 15 s, also one whose worker was killed under it (its workflow
  task times out after 2 s and another worker carries it on). An order slowed by a fault may
  fail with "deadline exceeded" (and be refunded): that is correct behaviour, and it still ends
  in time.

Exit status: 0 when every invariant holds, 1 when one does not, 2 when the system did not start.
The children's logs are kept in the temporary directory (its path is printed) when the run
fails, or always with --keep-dir.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

if not __package__:
    # Run as a file, this script's folder is on sys.path and the checkout is not.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestration.models import CANCELLED, FAILED, SHIPPED
from orchestration.temporal_client import exit_without_teardown
from orchestration.order.late_charges import SWEEP_INTERVAL_SECONDS
from scripts.drive.api import Api
from scripts.drive.recorded import unrefunded_late_charges
from scripts.drive.tables import table
from scripts.faults.invariants import INVARIANTS, Findings, check_invariants
from scripts.faults.plan import SCENARIOS, plan_cancels, plan_faults
from scripts.faults.run import OrderRecord, RunProgress, inject_faults, log, report_progress, run_orders
from scripts.faults.system import StartupFailed, System

# A late charge is refunded by the order workers' sweep, every SWEEP_INTERVAL_SECONDS.
LATE_CHARGE_WAIT_SECONDS = 3 * SWEEP_INTERVAL_SECONDS


def cancel_answers(records: list[OrderRecord]) -> str:
    sent = [record.cancel_status for record in records if record.cancel_after is not None]
    return f"{len(sent)}; " + " / ".join(str(sent.count(status)) for status in (200, 202, 409))


def report(
    args: argparse.Namespace,
    system: System,
    api: Api,
    records: list[OrderRecord],
    findings: Findings,
    wall_seconds: float,
) -> str:
    faults = system.faults

    def check(invariant: str) -> tuple[str, str, str]:
        count = len(findings.problems[invariant])
        return invariant, str(count), "ok" if count == 0 else "FAIL"

    def outages(seconds: list[float]) -> str:
        return f" (down {', '.join(f'{s:.1f} s' for s in seconds)})" if seconds else ""

    rows = [
        ("seed", str(args.seed), ""),
        ("scenarios", ",".join(args.scenarios), ""),
        ("orders", str(args.orders), ""),
        ("in flight", str(args.concurrency), ""),
        ("kills: order worker (SIGKILL)", str(faults.kills["order-worker"]), ""),
        ("kills: shipping worker (SIGKILL)", str(faults.kills["shipping-worker"]), ""),
        ("stalls: order worker (SIGSTOP)", str(faults.stalls["order-worker-2"]), ""),
        ("stalls: shipping worker (SIGSTOP)", str(faults.stalls["shipping-worker-2"]), ""),
        ("worker replicas per queue", str(args.replicas), ""),
        *((f"SIGTERM {stop.worker} {stop.moment}", stop.outcome, "")
          for stop in faults.graceful_stops),
        ("db restarts", f"{len(faults.database_outage_seconds)}{outages(faults.database_outage_seconds)}", ""),
        ("web restarts", f"{len(faults.web_outage_seconds)}{outages(faults.web_outage_seconds)}", ""),
        ("client retries", str(sum(api.retried.values())) + (
            f" ({', '.join(f'{cause} {n}' for cause, n in api.retried.most_common())})" if api.retried else ""), ""),
        ("operator cancels: sent; answered 200 / 202 / 409", cancel_answers(records), ""),
        ("shipped", str(findings.states[SHIPPED]), ""),
        ("cancelled", str(findings.states[CANCELLED]), ""),
        ("failed", str(findings.states[FAILED]), ""),
        ("charges", str(findings.charges), ""),
        ("refunds", str(findings.refunds), ""),
        ("of them late charges refunded by the sweep", str(findings.late_charge_refunds), ""),
        ("reasons", ", ".join(f"{reason} {n}" for reason, n in findings.reasons.most_common()) or "-", ""),
        *(check(invariant) for invariant in INVARIANTS),
        ("run time", f"{wall_seconds:.0f} s", ""),
    ]
    return table(("figure", "value", "invariant"), rows, gap=" | ", rule_gap="-+-", trim=True)


async def settle_late_charges(system: System, order_ids: list[str]) -> str:
    """Give the order workers' sweep time to refund the charges recorded after their order closed
    (a stalled worker's attempt); whatever it leaves is an order left charged. Says what it saw."""
    give_up_at = time.monotonic() + LATE_CHARGE_WAIT_SECONDS
    waiting = await unrefunded_late_charges(system.database_url, order_ids)
    seen = len(waiting)
    while waiting and time.monotonic() < give_up_at:
        await asyncio.sleep(0.5)
        waiting = await unrefunded_late_charges(system.database_url, order_ids)
    return f" ({seen} late charges waited for the sweep, {len(waiting)} left)" if seen else ""


async def fault_test(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    faults = plan_faults(rng, args)
    cancels = plan_cancels(rng, args)
    root = Path(tempfile.mkdtemp(prefix="orders-fault-test-"))
    system = System(root, args.replicas)
    keep_dir = args.keep_dir
    print(f"fault test: seed {args.seed}; {args.orders} orders, {args.concurrency} in flight; "
          f"scenarios {','.join(args.scenarios)}; processes and logs in {root}", flush=True)
    for fault in faults:
        log(f"planned: {fault.label} after {fault.after_started} orders started, pause {fault.pause:.1f} s")
    try:
        try:
            await system.start()
        except StartupFailed as err:
            keep_dir = True
            print(f"fault test: the system did not start: {err}", flush=True)
            return 2
        log(f"system up: web {system.web_url}, Temporal {system.temporal_address}, "
            f"PostgreSQL port {system.postgres_port}")

        began = time.monotonic()
        run_id = f"ft{args.seed}-{int(time.time())}"
        records = [OrderRecord(f"{run_id}-{n}", cancel_after) for n, cancel_after in enumerate(cancels)]
        progress = RunProgress()
        api = Api(system.web_url)
        reporter = asyncio.create_task(report_progress(progress, args.orders, len(faults)))
        try:
            stalls = [fault for fault in faults if fault.action == "stall"]
            others = [fault for fault in faults if fault.action != "stall"]
            await asyncio.gather(
                run_orders(api, records, progress, args),
                inject_faults(system, others, progress),
                inject_faults(system, stalls, progress),
            )
        except (RuntimeError, TimeoutError) as err:
            keep_dir = True
            print(f"fault test: FAILED: a process did not come back after a fault: {err}", flush=True)
            return 1
        finally:
            reporter.cancel()
            await api.close()
        wall_seconds = time.monotonic() - began
        late = await settle_late_charges(system, [record.order_id for record in records])
        log(f"all orders settled{late}; stopping the workers with SIGTERM, then checking the invariants")
        await asyncio.gather(*(system.stop_worker_gracefully(name, "at the end") for name in system.workers))
        findings = await check_invariants(system, records, api)

        print(report(args, system, api, records, findings, wall_seconds), flush=True)
        failed = {name: details for name, details in findings.problems.items() if details}
        for invariant, details in failed.items():
            print(f"FAIL {invariant}: {len(details)}; first: {details[:5]}", flush=True)
        if failed:
            keep_dir = True
            print("fault test: FAILED", flush=True)
            return 1
        print("fault test: PASSED: every invariant holds", flush=True)
        return 0
    finally:
        system.stop()
        if keep_dir:
            print(f"fault test: logs kept in {root / 'logs'}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true",
                        help="the CI form: 40 orders, 10 in flight, one fault of each kind")
    parser.add_argument("-n", "--orders", type=int, help="orders to run (default 200; --short 40)")
    parser.add_argument("-c", "--concurrency", type=int, help="orders in flight (default 50; --short 10)")
    parser.add_argument("--scenario", dest="scenarios", action="append", choices=(*SCENARIOS, "all"),
                        help="faults to inject (repeatable; default all)")
    parser.add_argument("--kills", type=int, help="SIGKILLs per worker (default 3; --short 1)")
    parser.add_argument("--stalls", type=int, help="SIGSTOPs per worker (default 2; --short 1)")
    parser.add_argument("--cancel-share", type=float, default=0.25,
                        help="share of orders an operator cancels, 0-1.5 s after their start (default 0.25)")
    parser.add_argument("--database-restarts", type=int, default=1, help="default 1")
    parser.add_argument("--web-restarts", type=int, default=1, help="default 1")
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1_000_000),
                        help="seed of the fault plan (default random, printed)")
    parser.add_argument("--settle-seconds", type=float, default=120.0,
                        help="stop polling an order this long after its start (default 120)")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="seconds between status polls of one order (default 1)")
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary directory and logs")
    args = parser.parse_args(argv)
    args.orders = args.orders or (40 if args.short else 200)
    args.concurrency = args.concurrency or (10 if args.short else 50)
    args.kills = args.kills if args.kills is not None else (1 if args.short else 3)
    args.stalls = args.stalls if args.stalls is not None else (1 if args.short else 2)
    if not args.scenarios or "all" in args.scenarios:
        args.scenarios = list(SCENARIOS)
    # A frozen worker's orders need a replica to carry them on within their 15 s.
    args.replicas = 2 if "stalls" in args.scenarios else 1
    return args


def main() -> None:
    args = parse_args()
    loop = asyncio.new_event_loop()
    run = loop.create_task(fault_test(args))
    # Ctrl-C or SIGTERM (a CI timeout, say) cancels the run, so the children are still stopped.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, run.cancel)
    try:
        status = loop.run_until_complete(run)
    except asyncio.CancelledError:
        status = 130
    # The run's own status, not a crash of the Temporal SDK's runtime at the interpreter's exit.
    exit_without_teardown(status)


if __name__ == "__main__":
    main()
