"""A worker process as the Procfile runs it (python -m orchestration.order.worker): on SIGTERM it
stops its worker, logs the stop and exits 0, leaving without the interpreter's teardown, where
the Temporal SDK's native runtime can abort the process (orchestration/temporal_client.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Printed by an exit hook, which runs first thing in the interpreter's teardown.
TEARDOWN_MARK = "interpreter teardown ran"
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 20


def wait_for_event(log: Path, event: str, process: subprocess.Popen) -> None:
    give_up_at = time.monotonic() + START_TIMEOUT_SECONDS
    while f'"event": "{event}"' not in log.read_text():
        assert process.poll() is None, f"the worker exited ({process.returncode}):\n{log.read_text()}"
        assert time.monotonic() < give_up_at, f"no {event} within {START_TIMEOUT_SECONDS} s:\n{log.read_text()}"
        time.sleep(0.1)


def test_order_worker_stops_cleanly_on_sigterm_and_skips_the_interpreter_teardown(
    postgres, dev_server, tmp_path
):
    env = {
        **os.environ,
        "DATABASE_URL": postgres,
        "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
        # A queue of its own: the session's workers serve `orders` for the other tests.
        "ORDERS_TASK_QUEUE": f"orders-{uuid.uuid4().hex[:8]}",
        "WORKER_METRICS_PORT": "0",
    }
    log = tmp_path / "worker.log"
    # The module runs as `python -m` does, with an exit hook that tells whether the teardown ran.
    run_worker = (
        f"import atexit, runpy; atexit.register(print, {TEARDOWN_MARK!r}, flush=True); "
        "runpy.run_module('orchestration.order.worker', run_name='__main__', alter_sys=True)"
    )
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-c", run_worker], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_event(log, "worker_started", worker)
        worker.send_signal(signal.SIGTERM)
        status = worker.wait(timeout=STOP_TIMEOUT_SECONDS)
    finally:
        if worker.poll() is None:
            worker.kill()
    output = log.read_text()
    assert status == 0, output
    assert TEARDOWN_MARK not in output
    last = json.loads(output.strip().splitlines()[-1])
    assert last["event"] == "worker_stopped", output
