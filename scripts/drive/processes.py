"""Server processes: run one as a child that can be signalled, stopped and started again, or find
the running ones in /proc and read the CPU time they used."""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import signal
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

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
    # honcho prints every log line of the others; scripts/start adds a relay behind it.
    (
        "honcho and log relay",
        lambda argv: any(Path(arg).name == "honcho" for arg in argv[:2])
        or (argv[1:2] == ["-c"] and "os.read(0" in argv[2]),
    ),
]


def procfile_uvicorn_flags() -> list[str]:
    """The uvicorn flags of the Procfile's web line, after its host and port: whoever starts the
    web process starts it as `scripts/start` does."""
    [line] = [line for line in (REPO_ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")]
    return line.split('--port "${WEB_PORT:-8000}"')[1].split()


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

    async def stop(self, signum: signal.Signals) -> Optional[int]:
        """Send `signum`, then SIGKILL the group if it has not exited STOP_TIMEOUT_SECONDS later.
        The exit status `signum` brought about, or None when it took the SIGKILL."""
        self.signal(signum)
        status = await self.wait_exit(STOP_TIMEOUT_SECONDS)
        if status is None:
            self.kill_group()
            await self.wait_exit(STOP_TIMEOUT_SECONDS)
        return status

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
