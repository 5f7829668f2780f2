"""The short fault test, as CI runs it: `scripts/fault_test.py --short` starts a system of its own
(PostgreSQL, Temporal, web, two replicas of each worker), SIGKILLs and restarts each worker,
freezes (SIGSTOP) the second replica of each past its workflow task timeout, SIGTERMs the order
worker, restarts PostgreSQL and the web app while 40 orders run, then checks that money moved
exactly once and that the database, the workflows and the API agree. It takes about a minute."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from scripts.fault_test import INVARIANTS

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_SECONDS = 240
CLEANUP_TIMEOUT_SECONDS = 60


def run_short_fault_test() -> subprocess.CompletedProcess:
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "fault_test.py"), "--short"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the script stop the servers it started before it exits.
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=CLEANUP_TIMEOUT_SECONDS)
        raise AssertionError(f"the fault test did not finish within {RUN_TIMEOUT_SECONDS} s:\n{output}")
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def table_value(output: str, figure: str) -> str:
    """The value column of one row of the printed table."""
    match = re.search(rf"^{re.escape(figure)}\s*\|\s*([^|\n]*?)\s*(?:\|.*)?$", output, re.MULTILINE)
    assert match, f"no row {figure!r} in the report:\n{output}"
    return match.group(1)


def test_short_fault_run_keeps_every_invariant():
    result = run_short_fault_test()
    print(result.stdout)
    assert result.returncode == 0, result.stdout

    for invariant in INVARIANTS:
        assert table_value(result.stdout, invariant) == "0", invariant
    # The faults really happened.
    assert table_value(result.stdout, "kills: order worker (SIGKILL)") == "1"
    assert table_value(result.stdout, "kills: shipping worker (SIGKILL)") == "1"
    assert table_value(result.stdout, "stalls: order worker (SIGSTOP)") == "1"
    assert table_value(result.stdout, "stalls: shipping worker (SIGSTOP)") == "1"
    assert table_value(result.stdout, "worker replicas per queue") == "2"
    assert table_value(result.stdout, "db restarts").startswith("1 ")
    assert table_value(result.stdout, "web restarts").startswith("1 ")
    assert table_value(result.stdout, "SIGTERM order-worker mid-run").startswith("exit 0 in ")
    # Operators cancelled orders among the faults (about a quarter of the 40).
    cancels = table_value(result.stdout, "operator cancels: sent; answered 200 / 202 / 409")
    assert int(cancels.split(";")[0]) > 0, cancels
    states = sum(int(table_value(result.stdout, state)) for state in ("shipped", "cancelled", "failed"))
    assert states == int(table_value(result.stdout, "orders")) == 40
