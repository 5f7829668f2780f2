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
POST /orders/{id}/signals/approve and polled with GET /orders/{id}/status, C at a time; every
request is retried with backoff through connection errors and 503 (see Api). Meanwhile, each
fault fires once a random number of orders (seeded RNG; the seed is printed) has started:

  workers   SIGKILL the order worker and the shipping worker --kills times each, restarting each
            after a short pause
  graceful  SIGTERM the order worker once, then restart it
  database  stop PostgreSQL (SIGINT: fast shutdown) and start it again on the same port and data
  web       stop the web process (SIGTERM) and start it again on the same port

Once every order is terminal (or --settle-seconds after its start passed), both workers get
SIGTERM, and the invariants are checked against PostgreSQL (asyncpg) and Temporal (each
workflow's result):
- every order is terminal;
- a shipped order has exactly one payment, charged; a cancelled or failed order has no payment
  left charged; no order has two payments or two charges;
- no fact is recorded twice: the unique index on events.event_key exists, and once-only facts
  (received, charged, dispatched, shipped, refunded, closed) appear at most once per order;
- orders.state, the payment's status and the API's last answer equal the workflow's result;
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
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

import asyncpg
import httpx
from temporalio.client import Client, WorkflowExecutionStatus

from orchestration.models import CANCELLED, FAILED, SHIPPED, TERMINAL_STATES

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DATABASE_NAME = "orders"
ADDRESS = {"line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}

SCENARIOS = ("workers", "graceful", "database", "web")
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
# A worker given SIGTERM waits up to ACTIVITY_BACKSTOP_SECONDS (2 s) for running attempts, then
# closes its database pool; more than this is not a graceful stop. (It is given STOP_TIMEOUT_SECONDS
# before it is killed, so that a pool waiting for lost connections still reports them.)
GRACEFUL_STOP_LIMIT_SECONDS = 5.0
# Faults fire between these shares of the orders started, so that orders are in flight before,
# during and after each of them.
FAULT_WINDOW = (0.1, 0.8)
RESTART_PAUSE_SECONDS = (0.5, 2.0)
# A request is retried through an outage for this long before the run gives up on it.
REQUEST_RETRY_SECONDS = 90.0
REQUEST_TIMEOUT_SECONDS = 15.0
RETRIED_STATUSES = (503,)
WORKFLOW_CHECK_CONCURRENCY = 10
PROGRESS_INTERVAL_SECONDS = 5.0

# Facts an order records at most once, whatever retried; package_prepared is once per shipping
# attempt, attempt_failed once per failed attempt, refusals and address versions per signal.
ONCE_PER_ORDER_EVENTS = (
    "order_received",
    "order_validated",
    "payment_charged",
    "carrier_dispatched",
    "order_shipped",
    "payment_refunded",
)
# close_order records order_cancelled or order_failed under one key; shipped excludes both.
TERMINAL_EVENTS = ("order_shipped", "order_cancelled", "order_failed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _own_group_dying_with_parent(death_signal: signal.Signals):
    """preexec_fn: a process group of its own (signals reach its children too), and
    `death_signal` from the kernel when this script dies without cleaning up (SIGKILL, OOM)."""

    def prepare() -> None:
        os.setpgid(0, 0)
        _libc.prctl(_PR_SET_PDEATHSIG, int(death_signal))

    return prepare


# Child processes.


@dataclass
class Child:
    """One server process that can be stopped, killed and started again with the same command."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    stop_signal: signal.Signals = signal.SIGTERM
    process: Optional[subprocess.Popen] = None

    def start(self) -> int:
        """Start the process; returns the log offset from which its new output begins."""
        with self.log_path.open("ab") as log:
            offset = log.tell()
            self.process = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_own_group_dying_with_parent(self.stop_signal),
            )
        return offset

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        """Signal the process alone (a wrapper forwards it as it sees fit)."""
        if self.running:
            self.process.send_signal(signum)

    def kill_group(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def wait_exit(self, timeout: float) -> Optional[int]:
        """The exit status, or None if the process was still running after `timeout` seconds."""
        give_up_at = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > give_up_at:
                return None
            await asyncio.sleep(0.05)
        return self.process.returncode

    def stop_now(self) -> None:
        """Synchronous stop for the final cleanup: the stop signal, then SIGKILL to the group."""
        if self.running:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()
        if self.process is not None:
            self.process.wait()

    def output_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    async def wait_for_output(self, marker: str, offset: int, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        give_up_at = time.monotonic() + timeout
        while marker not in self.output_since(offset):
            if not self.running:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}); see {self.log_path}")
            if time.monotonic() > give_up_at:
                raise TimeoutError(f"{self.name} did not print {marker!r} within {timeout:g} s; see {self.log_path}")
            await asyncio.sleep(0.1)


class StartupFailed(Exception):
    pass


@dataclass
class GracefulStop:
    worker: str
    moment: str  # "mid-run" or "at the end"
    status: Optional[int]
    """Exit status, or None when it had not exited STOP_TIMEOUT_SECONDS after SIGTERM."""
    seconds: float
    connections_lost: bool
    """The worker had to terminate pooled connections that were never given back."""

    @property
    def clean(self) -> bool:
        return self.status == 0 and self.seconds <= GRACEFUL_STOP_LIMIT_SECONDS and not self.connections_lost

    def __str__(self) -> str:
        exited = f"exit {self.status}" if self.status is not None else "no exit (killed)"
        lost = ", lost pooled connections" if self.connections_lost else ""
        return f"{self.worker} {self.moment}: {exited} in {self.seconds:.1f} s{lost}"


@dataclass
class FaultCounts:
    kills: Counter[str] = field(default_factory=Counter)
    database_restarts: int = 0
    database_outage_seconds: list[float] = field(default_factory=list)
    web_restarts: int = 0
    web_outage_seconds: list[float] = field(default_factory=list)
    graceful_stops: list[GracefulStop] = field(default_factory=list)


class System:
    """PostgreSQL, Temporal, the web app and both workers of one run, in `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        logs = root / "logs"
        logs.mkdir(parents=True)
        self.postgres_port, self.temporal_port, self.web_port = free_port(), free_port(), free_port()
        self.database_url = f"postgresql://postgres@127.0.0.1:{self.postgres_port}/{DATABASE_NAME}"
        self.temporal_address = f"127.0.0.1:{self.temporal_port}"
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "PYTHONUNBUFFERED": "1",
            # Metrics ports would collide with a running system; this run does not read them.
            "WORKER_METRICS_PORT": "0",
        }
        self.postgres = Child(
            "postgres",
            [PYTHON, "scripts/local_postgres.py", "--data-dir", str(root / "postgres"),
             "--port", str(self.postgres_port), "--database", DATABASE_NAME],
            env, logs / "postgres.log", stop_signal=signal.SIGINT,
        )
        self.temporal = Child(
            "temporal",
            [PYTHON, "scripts/temporal_dev_server.py", "--db-file", str(root / "temporal.db"),
             "--port", str(self.temporal_port), "--ui-port", str(free_port())],
            env, logs / "temporal.log",
        )
        self.web = Child(
            "web",
            [PYTHON, "-m", "uvicorn", "web.app:app", "--host", "127.0.0.1",
             "--port", str(self.web_port), "--no-access-log"],
            env, logs / "web.log",
        )
        self.workers = {
            name: Child(name, [PYTHON, "-m", f"orchestration.{area}.worker"], env, logs / f"{name}.log")
            for name, area in (("order-worker", "order"), ("shipping-worker", "shipping"))
        }
        self.migrate_argv = [PYTHON, "scripts/migrate.py"]
        self.env = env
        self.faults = FaultCounts()

    @property
    def children(self) -> list[Child]:
        return [self.postgres, self.temporal, self.web, *self.workers.values()]

    async def start(self) -> None:
        try:
            await self._start_postgres()
            self.temporal.start()
            with (self.root / "logs" / "migrate.log").open("wb") as log:
                migrated = await asyncio.to_thread(
                    subprocess.run, self.migrate_argv, cwd=REPO_ROOT, env=self.env,
                    stdout=log, stderr=subprocess.STDOUT,
                )
            if migrated.returncode != 0:
                raise StartupFailed(f"migrations failed; see {self.root / 'logs' / 'migrate.log'}")
            await asyncio.gather(self._start_web(), *(self._start_worker(name) for name in self.workers))
        except (RuntimeError, TimeoutError) as err:
            raise StartupFailed(str(err)) from err

    async def _start_postgres(self) -> None:
        offset = self.postgres.start()
        await self.postgres.wait_for_output("PostgreSQL ready", offset)

    async def _start_web(self) -> None:
        self.web.start()
        give_up_at = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        async with httpx.AsyncClient(base_url=self.web_url, timeout=5) as client:
            while True:
                try:
                    if (await client.get("/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if not self.web.running:
                    raise RuntimeError(f"web exited ({self.web.process.returncode}); see {self.web.log_path}")
                if time.monotonic() > give_up_at:
                    raise TimeoutError(f"web was not healthy within {STARTUP_TIMEOUT_SECONDS:g} s")
                await asyncio.sleep(0.2)

    async def _start_worker(self, name: str) -> None:
        worker = self.workers[name]
        offset = worker.start()
        await worker.wait_for_output("worker_started", offset)

    # Faults.

    async def kill_worker(self, name: str, pause: float) -> None:
        worker = self.workers[name]
        worker.kill_group()
        await worker.wait_exit(STOP_TIMEOUT_SECONDS)
        self.faults.kills[name] += 1
        await asyncio.sleep(pause)
        await self._start_worker(name)

    async def stop_worker_gracefully(self, name: str, moment: str) -> None:
        worker = self.workers[name]
        offset = worker.log_path.stat().st_size
        began = time.monotonic()
        worker.signal(signal.SIGTERM)
        status = await worker.wait_exit(STOP_TIMEOUT_SECONDS)
        if status is None:
            worker.kill_group()
            await worker.wait_exit(STOP_TIMEOUT_SECONDS)
        # orchestration.database.close_pool logs this when lent connections never came back.
        lost = "pool_terminated" in worker.output_since(offset)
        self.faults.graceful_stops.append(GracefulStop(name, moment, status, time.monotonic() - began, lost))

    async def restart_worker_gracefully(self, name: str, pause: float) -> None:
        await self.stop_worker_gracefully(name, "mid-run")
        await asyncio.sleep(pause)
        await self._start_worker(name)

    async def restart_database(self, pause: float) -> None:
        began = time.monotonic()
        # The wrapper turns SIGINT into postgres' fast shutdown: clients are disconnected at once.
        self.postgres.signal(signal.SIGINT)
        if await self.postgres.wait_exit(STOP_TIMEOUT_SECONDS) is None:
            self.postgres.kill_group()
            await self.postgres.wait_exit(STOP_TIMEOUT_SECONDS)
        await asyncio.sleep(pause)
        await self._start_postgres()
        self.faults.database_restarts += 1
        self.faults.database_outage_seconds.append(time.monotonic() - began)

    async def restart_web(self, pause: float) -> None:
        began = time.monotonic()
        # uvicorn stops accepting connections at once, then finishes the requests under way.
        self.web.signal(signal.SIGTERM)
        if await self.web.wait_exit(STOP_TIMEOUT_SECONDS) is None:
            self.web.kill_group()
            await self.web.wait_exit(STOP_TIMEOUT_SECONDS)
        await asyncio.sleep(pause)
        await self._start_web()
        self.faults.web_restarts += 1
        self.faults.web_outage_seconds.append(time.monotonic() - began)

    def stop(self) -> None:
        # Workers and web first, so that nothing is writing while the servers go.
        for child in reversed(self.children):
            child.stop_now()


# Faults, planned from the seed.


@dataclass
class Fault:
    action: str  # kill, graceful, database, web
    target: str
    after_started: int
    """Fires once this many orders have been started."""
    pause: float
    """Seconds between stopping the process and starting it again."""

    @property
    def label(self) -> str:
        return {
            "kill": f"SIGKILL {self.target}",
            "graceful": f"SIGTERM {self.target}",
            "database": "restart PostgreSQL",
            "web": "restart web",
        }[self.action]


def plan_faults(rng: random.Random, args: argparse.Namespace) -> list[Fault]:
    wanted: list[tuple[str, str]] = []
    if "workers" in args.scenarios:
        wanted += [("kill", "order-worker"), ("kill", "shipping-worker")] * args.kills
    if "graceful" in args.scenarios:
        wanted.append(("graceful", "order-worker"))
    if "database" in args.scenarios:
        wanted += [("database", "postgres")] * args.database_restarts
    if "web" in args.scenarios:
        wanted += [("web", "web")] * args.web_restarts
    rng.shuffle(wanted)
    # One random moment in each of len(wanted) equal slices of the window, so that the faults
    # are spread over the run rather than bunched.
    low, high = (share * args.orders for share in FAULT_WINDOW)
    slice_width = (high - low) / max(1, len(wanted))
    moments = [
        max(1, round(low + (index + rng.random()) * slice_width)) for index in range(len(wanted))
    ]
    return [
        Fault(action, target, moment, rng.uniform(*RESTART_PAUSE_SECONDS))
        for (action, target), moment in zip(wanted, moments)
    ]


# Orders, through the API.


@dataclass
class OrderRecord:
    order_id: str
    started: bool = False
    api_state: str = "not started"
    """The state the API answered last."""
    error: str = ""


@dataclass
class RunProgress:
    started: int = 0
    terminal: int = 0
    orders_done: bool = False
    faults_done: int = 0


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


async def run_order(api: Api, record: OrderRecord, progress: RunProgress, args: argparse.Namespace) -> None:
    response, retried = await api.request(
        "POST",
        f"/orders/{record.order_id}/start",
        {"payment_id": f"pay-{record.order_id}", "items": [{"sku": "ABC", "qty": 1}], "address": ADDRESS},
    )
    # 409 after a resend: the first attempt started the order and its answer was lost.
    if response.status_code != 201 and not (response.status_code == 409 and retried):
        record.error = f"start answered {response.status_code}: {response.text[:200]}"
        return
    record.started = True
    record.api_state = "started"
    progress.started += 1
    # 409 is a valid answer: review may be over (timed out while a worker was down) or an
    # earlier attempt of this request got through.
    await api.request("POST", f"/orders/{record.order_id}/signals/approve")
    give_up_at = time.monotonic() + args.settle_seconds
    while time.monotonic() < give_up_at:
        await asyncio.sleep(args.poll_interval)
        try:
            response, _ = await api.request("GET", f"/orders/{record.order_id}/status")
        except httpx.TransportError as err:
            record.error = f"status: {type(err).__name__}: {err}"
            continue
        if response.status_code != 200:
            record.error = f"status answered {response.status_code}: {response.text[:200]}"
            continue
        record.api_state = response.json()["state"]
        if record.api_state in TERMINAL_STATES:
            record.error = ""
            progress.terminal += 1
            return
    record.error = record.error or f"not terminal {args.settle_seconds:g} s after its start"


async def run_orders(api: Api, records: list[OrderRecord], progress: RunProgress, args: argparse.Namespace) -> None:
    slots = asyncio.Semaphore(args.concurrency)

    async def in_slot(record: OrderRecord) -> None:
        async with slots:
            try:
                await run_order(api, record, progress, args)
            except httpx.TransportError as err:
                record.error = f"{type(err).__name__}: {err}"

    try:
        await asyncio.gather(*(in_slot(record) for record in records))
    finally:
        progress.orders_done = True


async def inject_faults(system: System, faults: list[Fault], progress: RunProgress) -> None:
    for fault in faults:
        while progress.started < fault.after_started and not progress.orders_done:
            await asyncio.sleep(0.1)
        began, started, terminal = time.monotonic(), progress.started, progress.terminal
        if fault.action == "kill":
            await system.kill_worker(fault.target, fault.pause)
        elif fault.action == "graceful":
            await system.restart_worker_gracefully(fault.target, fault.pause)
        elif fault.action == "database":
            await system.restart_database(fault.pause)
        else:
            await system.restart_web(fault.pause)
        progress.faults_done += 1
        log(f"{fault.label} at {started} started / {terminal} terminal; "
            f"back after {time.monotonic() - began:.1f} s")


async def report_progress(progress: RunProgress, total: int, faults: int) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
        log(f"{progress.started}/{total} started, {progress.terminal} terminal, "
            f"{progress.faults_done}/{faults} faults done")


# Invariants.


@dataclass
class WorkflowOutcome:
    execution_status: str
    state: Optional[str] = None
    reason: str = ""
    payment_status: Optional[str] = None
    shipping_attempts: int = 0
    seconds: Optional[float] = None
    """Start to end, as the workflow recorded them."""
    deadline_seconds: Optional[float] = None


async def workflow_outcomes(temporal_address: str, order_ids: Sequence[str]) -> dict[str, WorkflowOutcome]:
    client = await Client.connect(temporal_address)
    slots = asyncio.Semaphore(WORKFLOW_CHECK_CONCURRENCY)

    async def outcome(order_id: str) -> WorkflowOutcome:
        handle = client.get_workflow_handle(f"order-{order_id}")
        async with slots:
            try:
                description = await handle.describe()
            except Exception as err:  # never started, or the server did not answer
                return WorkflowOutcome(f"unknown ({type(err).__name__})")
            if description.status != WorkflowExecutionStatus.COMPLETED:
                return WorkflowOutcome(description.status.name if description.status else "unknown")
            result: dict[str, Any] = await handle.result()
        started, finished, deadline = (
            datetime.fromisoformat(result[key]) for key in ("started_at", "finished_at", "deadline_at")
        )
        return WorkflowOutcome(
            "COMPLETED", result["state"], result["reason"], result["payment"]["status"],
            result["shipping_attempts"], (finished - started).total_seconds(),
            (deadline - started).total_seconds(),
        )

    outcomes = await asyncio.gather(*(outcome(order_id) for order_id in order_ids))
    return dict(zip(order_ids, outcomes))


@dataclass
class Findings:
    states: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    """"state: reason" of each cancelled or failed order."""
    charges: int = 0
    refunds: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)
    """Invariant -> the orders (with details) that break it; every invariant has an entry."""

    def expect(self, invariant: str) -> None:
        self.problems.setdefault(invariant, [])

    def broken(self, invariant: str, detail: str) -> None:
        self.problems.setdefault(invariant, []).append(detail)


NOT_STARTED = "orders not started"
NOT_TERMINAL = "orders not terminal"
SHIPPED_NOT_CHARGED_ONCE = "shipped without exactly one charge"
LEFT_CHARGED = "cancelled/failed still charged"
SEVERAL_PAYMENTS = "orders with more than one payment"
DUPLICATE_CHARGES = "duplicate charges found"
DUPLICATE_EVENTS = "duplicate events found"
STATE_MISMATCHES = "state mismatches (db vs workflow)"
PAYMENT_MISMATCHES = "payment mismatches (db vs workflow)"
API_MISMATCHES = "api mismatches (api vs workflow)"
UNGRACEFUL_STOPS = "graceful stops not clean"
SERVER_ERRORS = "5xx other than 503 + Retry-After"
LATE = "orders ended past their 15 s"
INVARIANTS = (
    NOT_STARTED, NOT_TERMINAL, SHIPPED_NOT_CHARGED_ONCE, LEFT_CHARGED, SEVERAL_PAYMENTS,
    DUPLICATE_CHARGES, DUPLICATE_EVENTS, STATE_MISMATCHES, PAYMENT_MISMATCHES, API_MISMATCHES,
    UNGRACEFUL_STOPS, SERVER_ERRORS, LATE,
)


async def check_invariants(system: System, records: list[OrderRecord], api: Api) -> Findings:
    findings = Findings()
    for invariant in INVARIANTS:
        findings.expect(invariant)
    order_ids = [record.order_id for record in records]
    outcomes = await workflow_outcomes(system.temporal_address, order_ids)

    connection = await asyncpg.connect(system.database_url)
    try:
        order_states = dict(await connection.fetch(
            "SELECT id, state FROM orders WHERE id = ANY($1)", order_ids))
        payments: dict[str, list[str]] = {}
        for row in await connection.fetch(
                "SELECT order_id, status FROM payments WHERE order_id = ANY($1)", order_ids):
            payments.setdefault(row["order_id"], []).append(row["status"])
        event_counts: dict[str, Counter[str]] = {}
        for row in await connection.fetch(
                "SELECT order_id, type, count(*) AS n FROM events "
                "WHERE order_id = ANY($1) AND type <> 'attempt_failed' GROUP BY order_id, type", order_ids):
            event_counts.setdefault(row["order_id"], Counter())[row["type"]] = row["n"]
        unique_key_index = await connection.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'events' "
            "AND indexdef ILIKE 'CREATE UNIQUE INDEX%(event_key)%'")
        repeated_keys = await connection.fetchval(
            "SELECT count(*) FROM (SELECT event_key FROM events GROUP BY event_key HAVING count(*) > 1) AS d")
    finally:
        await connection.close()

    if not unique_key_index:
        findings.broken(DUPLICATE_EVENTS, "events.event_key has no unique index")
    if repeated_keys:
        findings.broken(DUPLICATE_EVENTS, f"{repeated_keys} event keys recorded more than once")

    for record in records:
        order_id = record.order_id
        if not record.started:
            findings.broken(NOT_STARTED, f"{order_id}: {record.error}")
            continue
        outcome = outcomes[order_id]
        if outcome.state not in TERMINAL_STATES:
            findings.broken(NOT_TERMINAL, f"{order_id}: workflow {outcome.execution_status}, "
                                          f"API said {record.api_state} {record.error}".rstrip())
            continue
        findings.states[outcome.state] += 1
        # A worker killed mid-step is noticed when its workflow task times out (2 s) and the
        # order carries on elsewhere: even an order caught by a kill ends in time.
        if outcome.seconds is not None and outcome.seconds > outcome.deadline_seconds:
            findings.broken(LATE, f"{order_id}: ended after {outcome.seconds:.1f} s ({outcome.state})")
        if outcome.reason:
            findings.reasons[f"{outcome.state}: {outcome.reason}"] += 1
        statuses = payments.get(order_id, [])
        findings.charges += len(statuses)
        findings.refunds += statuses.count("refunded")
        if outcome.state == SHIPPED and statuses != ["charged"]:
            findings.broken(SHIPPED_NOT_CHARGED_ONCE, f"{order_id}: payments {statuses}")
        if outcome.state in (CANCELLED, FAILED) and "charged" in statuses:
            findings.broken(LEFT_CHARGED, f"{order_id} ({outcome.state}): payments {statuses}")
        if len(statuses) > 1:
            findings.broken(SEVERAL_PAYMENTS, f"{order_id}: payments {statuses}")
        facts = event_counts.get(order_id, Counter())
        if facts["payment_charged"] > 1:
            findings.broken(DUPLICATE_CHARGES, f"{order_id}: {facts['payment_charged']} payment_charged events")
        repeated = {kind: facts[kind] for kind in ONCE_PER_ORDER_EVENTS if facts[kind] > 1}
        if sum(facts[kind] for kind in TERMINAL_EVENTS) > 1:
            repeated.update({kind: facts[kind] for kind in TERMINAL_EVENTS if facts[kind]})
        if facts["package_prepared"] > outcome.shipping_attempts:
            repeated["package_prepared"] = facts["package_prepared"]
        if repeated:
            findings.broken(DUPLICATE_EVENTS, f"{order_id}: {repeated}")
        if order_states.get(order_id) != outcome.state:
            findings.broken(STATE_MISMATCHES, f"{order_id}: db {order_states.get(order_id)}, "
                                              f"workflow {outcome.state}")
        expected_payments = [outcome.payment_status] if outcome.payment_status in ("charged", "refunded") else []
        if statuses != expected_payments:
            findings.broken(PAYMENT_MISMATCHES, f"{order_id}: db {statuses}, workflow {outcome.payment_status}")
        if record.api_state != outcome.state:
            findings.broken(API_MISMATCHES, f"{order_id}: api {record.api_state}, workflow {outcome.state}")

    for stop in system.faults.graceful_stops:
        if not stop.clean:
            findings.broken(UNGRACEFUL_STOPS, str(stop))
    for error in api.server_errors:
        findings.broken(SERVER_ERRORS, error)
    return findings


# Report.


def table(rows: Sequence[tuple[str, str, str]]) -> str:
    headers = ("figure", "value", "invariant")
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(headers, widths))]
    lines.append("-+-".join("-" * width for width in widths))
    lines += [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def report(args: argparse.Namespace, system: System, api: Api, findings: Findings, wall_seconds: float) -> str:
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
        *((f"SIGTERM {stop.worker} {stop.moment}", str(stop).split(": ", 1)[1], "")
          for stop in faults.graceful_stops),
        ("db restarts", f"{faults.database_restarts}{outages(faults.database_outage_seconds)}", ""),
        ("web restarts", f"{faults.web_restarts}{outages(faults.web_outage_seconds)}", ""),
        ("client retries", str(sum(api.retried.values())) + (
            f" ({', '.join(f'{cause} {n}' for cause, n in api.retried.most_common())})" if api.retried else ""), ""),
        ("shipped", str(findings.states[SHIPPED]), ""),
        ("cancelled", str(findings.states[CANCELLED]), ""),
        ("failed", str(findings.states[FAILED]), ""),
        ("charges", str(findings.charges), ""),
        ("refunds", str(findings.refunds), ""),
        ("reasons", ", ".join(f"{reason} {n}" for reason, n in findings.reasons.most_common()) or "-", ""),
        *(check(invariant) for invariant in INVARIANTS),
        ("run time", f"{wall_seconds:.0f} s", ""),
    ]
    return table(rows)


def log(message: str) -> None:
    print(f"fault test: {message}", file=sys.stderr, flush=True)


async def fault_test(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    faults = plan_faults(rng, args)
    root = Path(tempfile.mkdtemp(prefix="orders-fault-test-"))
    system = System(root)
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
        records = [OrderRecord(f"{run_id}-{n}") for n in range(args.orders)]
        progress = RunProgress()
        api = Api(system.web_url)
        reporter = asyncio.create_task(report_progress(progress, args.orders, len(faults)))
        try:
            await asyncio.gather(
                run_orders(api, records, progress, args), inject_faults(system, faults, progress)
            )
        except (RuntimeError, TimeoutError) as err:
            keep_dir = True
            print(f"fault test: FAILED: a process did not come back after a fault: {err}", flush=True)
            return 1
        finally:
            reporter.cancel()
            await api.close()
        wall_seconds = time.monotonic() - began
        log("all orders settled; stopping the workers with SIGTERM, then checking the invariants")
        await asyncio.gather(*(system.stop_worker_gracefully(name, "at the end") for name in system.workers))
        findings = await check_invariants(system, records, api)

        print(report(args, system, api, findings, wall_seconds), flush=True)
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
    if not args.scenarios or "all" in args.scenarios:
        args.scenarios = list(SCENARIOS)
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
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal SDK's native runtime sometimes crashes the interpreter at exit (see
    # tests/conftest.py); leave with the run's own status instead of risking that.
    os._exit(status)


if __name__ == "__main__":
    main()
