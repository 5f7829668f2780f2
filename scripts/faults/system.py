"""A whole system of one fault test as child processes on free ports, and the faults done to it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Optional

import httpx

from scripts.drive.processes import (
    REPO_ROOT,
    STARTUP_TIMEOUT_SECONDS,
    STOP_TIMEOUT_SECONDS,
    Child,
    free_port,
    procfile_uvicorn_flags,
)

PYTHON = sys.executable
DATABASE_NAME = "orders"
# A worker given SIGTERM waits up to ACTIVITY_BACKSTOP_SECONDS (2 s) for running attempts, then
# closes its database pool; more than this is not a graceful stop. (It is given STOP_TIMEOUT_SECONDS
# before it is killed, so that a pool waiting for lost connections still reports them.)
GRACEFUL_STOP_LIMIT_SECONDS = 5.0


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
    last_lines: list[str] = field(default_factory=list)
    """The worker's last lines of output, which say why a stop was not clean."""

    @property
    def clean(self) -> bool:
        return self.status == 0 and self.seconds <= GRACEFUL_STOP_LIMIT_SECONDS and not self.connections_lost

    @property
    def outcome(self) -> str:
        exited = f"exit {self.status}" if self.status is not None else "no exit (killed)"
        lost = ", lost pooled connections" if self.connections_lost else ""
        return f"{exited} in {self.seconds:.1f} s{lost}"

    def __str__(self) -> str:
        said = "" if self.clean else f"; its last lines: {' | '.join(self.last_lines)}"
        return f"{self.worker} {self.moment}: {self.outcome}{said}"


@dataclass
class FaultCounts:
    kills: Counter[str] = field(default_factory=Counter)
    stalls: Counter[str] = field(default_factory=Counter)
    database_outage_seconds: list[float] = field(default_factory=list)
    """One entry per restart of PostgreSQL."""
    web_outage_seconds: list[float] = field(default_factory=list)
    """One entry per restart of the web process."""
    graceful_stops: list[GracefulStop] = field(default_factory=list)


class System:
    """PostgreSQL, Temporal, the web app and both workers of one run, in `root`; with
    `replicas` > 1, that many processes of each worker (`order-worker`, `order-worker-2`, ...),
    as `docker compose up --scale` runs them."""

    def __init__(self, root: Path, replicas: int = 1) -> None:
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
             "--port", str(self.web_port), *procfile_uvicorn_flags()],
            env, logs / "web.log",
        )
        self.workers = {
            name: Child(name, [PYTHON, "-m", f"orchestration.{area}.worker"], env, logs / f"{name}.log")
            for base, area in (("order-worker", "order"), ("shipping-worker", "shipping"))
            for name in (base, *(f"{base}-{n}" for n in range(2, replicas + 1)))
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

    async def stall_worker(self, name: str, seconds: float) -> None:
        """Freeze the worker for `seconds` (SIGSTOP), then let it go on (SIGCONT)."""
        group = self.workers[name].process.pid
        os.killpg(group, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.killpg(group, signal.SIGCONT)
        self.faults.stalls[name] += 1

    async def stop_worker_gracefully(self, name: str, moment: str) -> None:
        worker = self.workers[name]
        offset = worker.log_path.stat().st_size
        began = time.monotonic()
        status = await worker.stop(signal.SIGTERM)
        output = worker.output_since(offset)
        # orchestration.database.close_pool logs this when lent connections never came back.
        lost = "pool_terminated" in output
        self.faults.graceful_stops.append(
            GracefulStop(name, moment, status, time.monotonic() - began, lost, output.strip().splitlines()[-4:])
        )

    async def restart_worker_gracefully(self, name: str, pause: float) -> None:
        await self.stop_worker_gracefully(name, "mid-run")
        await asyncio.sleep(pause)
        await self._start_worker(name)

    async def restart_database(self, pause: float) -> None:
        # The wrapper turns SIGINT into postgres' fast shutdown: clients are disconnected at once.
        outage = await self._restart(self.postgres, signal.SIGINT, pause, self._start_postgres)
        self.faults.database_outage_seconds.append(outage)

    async def restart_web(self, pause: float) -> None:
        # uvicorn stops accepting connections at once, then finishes the requests under way.
        outage = await self._restart(self.web, signal.SIGTERM, pause, self._start_web)
        self.faults.web_outage_seconds.append(outage)

    async def _restart(
        self, child: Child, signum: signal.Signals, pause: float, start: Callable[[], Awaitable[None]]
    ) -> float:
        """Stop `child` with `signum`, start it again `pause` seconds later; the seconds it was down."""
        began = time.monotonic()
        await child.stop(signum)
        await asyncio.sleep(pause)
        await start()
        return time.monotonic() - began

    def stop(self) -> None:
        # Workers and web first, so that nothing is writing while the servers go.
        for child in reversed(self.children):
            child.stop_now()
