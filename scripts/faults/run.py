"""The run of a fault test: orders through the API, C at a time, with the planned faults fired among them."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Optional

import httpx

from orchestration.models import TERMINAL_STATES
from scripts.drive.api import Api
from scripts.drive.orders import in_slots, start_body
from scripts.faults.plan import Fault
from scripts.faults.system import System

PROGRESS_INTERVAL_SECONDS = 5.0
OPERATOR_CANCEL_REASON = "fault test: operator cancel"


def log(message: str) -> None:
    print(f"fault test: {message}", file=sys.stderr, flush=True)


@dataclass
class OrderRecord:
    order_id: str
    cancel_after: Optional[float] = None
    """Seconds after its start at which an operator cancels the order; None: never."""
    started: bool = False
    api_state: str = "not started"
    """The state the API answered last."""
    error: str = ""
    cancel_status: Optional[int] = None
    """The HTTP status of the operator's cancel (200: its outcome, 202: queued or pending)."""
    cancel_state: Optional[str] = None
    """The state a cancel answered 200 said the order ended in."""
    cancel_retried: bool = False


@dataclass
class RunProgress:
    started: int = 0
    terminal: int = 0
    orders_done: bool = False
    faults_done: int = 0


async def run_order(api: Api, record: OrderRecord, progress: RunProgress, args: argparse.Namespace) -> None:
    response, retried = await api.request("POST", f"/orders/{record.order_id}/start", start_body(record.order_id))
    # 409 after a resend: the first attempt started the order and its answer was lost.
    if response.status_code != 201 and not (response.status_code == 409 and retried):
        record.error = f"start answered {response.status_code}: {response.text[:200]}"
        return
    record.started = True
    record.api_state = "started"
    progress.started += 1
    # The operator's cancel races the approval and the steps, as it would from the board.
    cancel = None if record.cancel_after is None else asyncio.create_task(cancel_order(api, record))
    try:
        # 409 is a valid answer: review may be over (timed out while a worker was down), the
        # order cancelled, or an earlier attempt of this request got through.
        await api.request("POST", f"/orders/{record.order_id}/signals/approve")
        await follow_order(api, record, progress, args)
    finally:
        if cancel is not None:
            await cancel


async def follow_order(api: Api, record: OrderRecord, progress: RunProgress, args: argparse.Namespace) -> None:
    """Poll the order's status until it is terminal, or until --settle-seconds have passed."""
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


async def cancel_order(api: Api, record: OrderRecord) -> None:
    """Cancel as an operator would, `cancel_after` seconds after the start answered: before the
    approval, while charging, while shipping, or after the end (409)."""
    await asyncio.sleep(record.cancel_after or 0.0)
    try:
        response, record.cancel_retried = await api.request(
            "POST", f"/orders/{record.order_id}/signals/cancel", {"reason": OPERATOR_CANCEL_REASON}
        )
    except httpx.TransportError as err:
        record.error = f"cancel: {type(err).__name__}: {err}"
        return
    record.cancel_status = response.status_code
    if response.status_code == 200:
        record.cancel_state = response.json().get("state")


async def run_orders(api: Api, records: list[OrderRecord], progress: RunProgress, args: argparse.Namespace) -> None:
    try:
        await in_slots(
            records, args.concurrency, lambda record: run_order(api, record, progress, args), httpx.TransportError
        )
    finally:
        # Faults still waiting for their share of started orders would wait for ever.
        progress.orders_done = True


async def inject_faults(system: System, faults: list[Fault], progress: RunProgress) -> None:
    for fault in faults:
        while progress.started < fault.after_started and not progress.orders_done:
            await asyncio.sleep(0.1)
        began, started, terminal = time.monotonic(), progress.started, progress.terminal
        if fault.action == "kill":
            await system.kill_worker(fault.target, fault.pause)
        elif fault.action == "stall":
            await system.stall_worker(fault.target, fault.pause)
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
