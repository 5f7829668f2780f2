"""A worker process as the Procfile runs it (python -m orchestration.order.worker): it runs on
uvloop; on SIGTERM it stops its worker, logs the stop and exits 0, leaving without the
interpreter's teardown, where the Temporal SDK's native runtime can abort the process
(orchestration/temporal_client.py); and every line it writes is one JSON object, the SDK core's
own warnings during an outage included."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from orchestration.logs import BAD_SETTING_EXIT_STATUS
from orchestration.models import CANCELLED
from orchestration.records import utc_now
from orchestration.tables import Payment
from scripts.temporal_dev_server import dynamic_config_args
from tests.conftest import BIN
from tests.test_late_charges import insert_order_with_payment

REPO = Path(__file__).resolve().parent.parent
# Printed by an exit hook, which runs first thing in the interpreter's teardown.
TEARDOWN_MARK = "interpreter teardown ran"
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 20
# The core warns once a poll has been retried six times, a few seconds into an outage.
CORE_WARNING_TIMEOUT_SECONDS = 30


def start_worker(
    log: Path, database_url: str, temporal_address: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": temporal_address,
        # A queue of its own: the session's workers serve `orders` for the other tests.
        "ORDERS_TASK_QUEUE": f"orders-{uuid.uuid4().hex[:8]}",
        "WORKER_METRICS_PORT": "0",
        **(extra_env or {}),
    }
    # The module runs as `python -m` does, with an exit hook that tells whether the teardown ran.
    run_worker = (
        f"import atexit, runpy; atexit.register(print, {TEARDOWN_MARK!r}, flush=True); "
        "runpy.run_module('orchestration.order.worker', run_name='__main__', alter_sys=True)"
    )
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", run_worker], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def wait_for_event(log: Path, event: str, process: subprocess.Popen, seconds: float) -> None:
    give_up_at = time.monotonic() + seconds
    while f'"event": "{event}"' not in log.read_text():
        assert process.poll() is None, f"the worker exited ({process.returncode}):\n{log.read_text()}"
        assert time.monotonic() < give_up_at, f"no {event} within {seconds} s:\n{log.read_text()}"
        await asyncio.sleep(0.1)


async def stop(worker: subprocess.Popen) -> int:
    worker.send_signal(signal.SIGTERM)
    give_up_at = time.monotonic() + STOP_TIMEOUT_SECONDS
    while worker.poll() is None and time.monotonic() < give_up_at:
        await asyncio.sleep(0.1)
    if worker.poll() is None:
        worker.kill()
    return worker.wait()


async def test_order_worker_runs_on_uvloop_and_stops_cleanly_skipping_the_interpreter_teardown(
    postgres, dev_server, tmp_path
):
    log = tmp_path / "worker.log"
    worker = start_worker(log, postgres, dev_server.client.service_client.config.target_host)
    try:
        await wait_for_event(log, "worker_started", worker, START_TIMEOUT_SECONDS)
    finally:
        status = await stop(worker)
    output = log.read_text()
    assert status == 0, output
    assert TEARDOWN_MARK not in output
    entries = [json.loads(line) for line in output.strip().splitlines()]
    started = next(entry for entry in entries if entry.get("event") == "worker_started")
    assert started["event_loop"] == "uvloop", started
    assert entries[-1]["event"] == "worker_stopped", output


async def test_the_sdk_cores_warnings_during_an_outage_are_json_lines(postgres, tmp_path):
    # A Temporal server of its own, to take away under the running worker.
    server = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"), dev_server_extra_args=dynamic_config_args()
    )
    log = tmp_path / "worker.log"
    worker = start_worker(log, postgres, server.client.service_client.config.target_host)
    try:
        await wait_for_event(log, "worker_started", worker, START_TIMEOUT_SECONDS)
        await server.shutdown()
        await wait_for_event(log, "sdk_core_log", worker, CORE_WARNING_TIMEOUT_SECONDS)
    finally:
        status = await stop(worker)
    lines = log.read_text().strip().splitlines()
    assert status == 0, lines
    entries = [json.loads(line) for line in lines]  # every line, or this fails
    warning = next(entry for entry in entries if entry.get("event") == "sdk_core_log")
    assert warning["level"] == "warning" and warning["core_target"], warning


def test_an_unknown_log_level_stops_the_worker_naming_the_levels_to_use(tmp_path):
    log = tmp_path / "worker.log"
    worker = start_worker(log, "postgresql://127.0.0.1:1/none", "127.0.0.1:1", {"LOG_LEVEL": "loud"})
    assert worker.wait(timeout=START_TIMEOUT_SECONDS) == BAD_SETTING_EXIT_STATUS
    # Logging at INFO, since the level asked for is the bad setting.
    [line] = [json.loads(text) for text in log.read_text().splitlines() if text.startswith("{")]
    assert line["event"] == "bad_setting"
    assert line["message"] == "LOG_LEVEL='loud' is not a log level: use one of DEBUG, INFO, WARNING, ERROR."


async def test_the_order_worker_refunds_a_charge_recorded_after_its_order_closed(
    database, dev_server, tmp_path, order_id
):
    """The sweep runs in the order worker: a late charge on record (what a worker that stalled
    mid-charge leaves) is refunded without anyone asking (tests/test_late_charges.py has how)."""
    now = utc_now()
    await insert_order_with_payment(order_id, CANCELLED, now, "charged", now)
    log = tmp_path / "worker.log"
    worker = start_worker(log, database, dev_server.client.service_client.config.target_host)
    try:
        await wait_for_event(log, "late_charge_refunded", worker, START_TIMEOUT_SECONDS)
    finally:
        await stop(worker)
    assert await Payment.select(Payment.status).where(Payment.order_id == order_id) == [{"status": "refunded"}]
    events = [json.loads(line)["event"] for line in log.read_text().splitlines() if order_id in line]
    assert [event for event in events if event.startswith("late_charge")] == [
        "late_charge_found",
        "late_charge_refunded",
    ], events
