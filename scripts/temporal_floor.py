"""What the bare workflow shape costs Temporal: the floor under scripts/benchmark.py's figures.

Usage: .venv/bin/python scripts/temporal_floor.py [-n 300] [-c 50] [--shape local|regular|both]
       [--json-out FILE]

Runs the order's shape and nothing else: six steps that each await the real flaky_call (four in
the order workflow, two in a child workflow on its own queue), an approve signal, the same retry
policy and in-activity cut-off as the product, against its own Temporal dev server started
exactly as scripts/start starts it. Two shapes: `local`, the steps as local activities (as the
product runs them), and `regular`, the steps as regular activities (as it ran them before, with
the 2-s start-to-close backstop). No database, no web server, no logging or bookkeeping; both
workers and the client share this one process, which runs them with the product's worker options
and event loop (orchestration/worker.py). It prints, per shape, throughput, latency, the
CPU seconds per order of the server and of this process, and the throughput those allow on this
machine's cores. If the product is slower than this, the difference is ours; what this script
measures is not. scripts/benchmark.py --floor runs it beside the product.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.worker import Worker

# Not resolve(): this module is imported again inside the workflow sandbox, which forbids it.
REPO_ROOT = Path(__file__).parent.parent

with workflow.unsafe.imports_passed_through():
    from orchestration.flaky import flaky_call
    from orchestration.policy import OrderPolicy, retry_policy
    from orchestration.settings import WorkerSettings
    from orchestration.worker import run_process, workflow_runner

ORDER_QUEUE = "floor-orders"
SHIPPING_QUEUE = "floor-shipping"
POLICY = OrderPolicy()
WORKER = WorkerSettings()
ATTEMPT_TIMEOUT_SECONDS = WORKER.attempt_timeout_seconds
# No deadline: every order completes, however long it takes, so that the cost of a whole order
# is measured (the product fails an order that runs out of time, which costs less). A local
# activity needs some timeout; this one never ends a step.
UNBOUNDED = timedelta(minutes=10)
SHAPES = ("local", "regular")
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
BENIGN = ApplicationErrorCategory.BENIGN


@activity.defn
async def business_step(name: str) -> int:
    """One attempt at one business function: flaky_call, cut off while it hangs."""
    call = asyncio.ensure_future(flaky_call())
    await asyncio.wait({call}, timeout=ATTEMPT_TIMEOUT_SECONDS)
    if not call.done():
        call.cancel()
        raise ApplicationError(f"{name} attempt timed out", category=BENIGN)
    try:
        call.result()
    except RuntimeError as err:
        # As in the product: an expected failure, not worth a logged traceback.
        raise ApplicationError(str(err), category=BENIGN) from None
    return activity.info().attempt


async def run_step(name: str, local: bool) -> None:
    if local:
        await workflow.execute_local_activity(
            business_step, name, schedule_to_close_timeout=UNBOUNDED, retry_policy=retry_policy(POLICY)
        )
    else:
        await workflow.execute_activity(
            business_step,
            name,
            start_to_close_timeout=timedelta(seconds=WORKER.attempt_backstop_seconds),
            retry_policy=retry_policy(POLICY),
        )


@workflow.defn
class BareShipping:
    @workflow.run
    async def run(self, local: bool) -> None:
        await run_step("prepare_package", local)
        await run_step("dispatch_carrier", local)


@workflow.defn
class BareOrder:
    def __init__(self) -> None:
        self.approved = False

    @workflow.signal
    def approve(self) -> None:
        self.approved = True

    @workflow.run
    async def run(self, local: bool) -> None:
        await run_step("receive_order", local)
        await run_step("validate_order", local)
        await workflow.wait_condition(
            lambda: self.approved, timeout=timedelta(seconds=POLICY.review_timeout_seconds)
        )
        await run_step("charge_payment", local)
        await workflow.execute_child_workflow(
            BareShipping.run,
            local,
            id=f"{workflow.info().workflow_id}-shipping",
            task_queue=SHIPPING_QUEUE,
            task_timeout=timedelta(seconds=POLICY.workflow_task_timeout_seconds),
        )
        await run_step("mark_shipped", local)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def connect(address: str) -> Client:
    for _ in range(100):
        try:
            return await Client.connect(address)
        except RuntimeError:
            await asyncio.sleep(0.1)
    raise SystemExit(f"no Temporal dev server answered at {address}")


async def measure(
    client: Client, server_pid: int, orders: int, in_flight: int, local: bool
) -> dict[str, float]:
    slots = asyncio.Semaphore(in_flight)
    latencies: list[float] = []

    async def one_order() -> None:
        async with slots:
            began = time.monotonic()
            handle = await client.start_workflow(
                BareOrder.run,
                local,
                id=f"floor-{uuid.uuid4().hex}",
                task_queue=ORDER_QUEUE,
                task_timeout=timedelta(seconds=POLICY.workflow_task_timeout_seconds),
            )
            await handle.signal(BareOrder.approve)
            await handle.result()
            latencies.append(time.monotonic() - began)

    # The product's worker options (orchestration/worker.py) where they bear on the shape.
    options = {
        "activities": [business_step],
        "max_concurrent_activities": WORKER.max_concurrent_activities,
        "max_concurrent_local_activities": WORKER.max_concurrent_activities,
        "max_concurrent_workflow_tasks": WORKER.max_concurrent_workflow_tasks,
        "sticky_queue_schedule_to_start_timeout": timedelta(seconds=WORKER.sticky_schedule_to_start_seconds),
        "workflow_runner": workflow_runner(WORKER),
    }
    order_worker = Worker(client, task_queue=ORDER_QUEUE, workflows=[BareOrder], **options)
    shipping_worker = Worker(client, task_queue=SHIPPING_QUEUE, workflows=[BareShipping], **options)
    async with order_worker, shipping_worker:
        server_before, own_before = cpu_seconds(server_pid), cpu_seconds(os.getpid())
        began = time.monotonic()
        await asyncio.gather(*(one_order() for _ in range(orders)))
        wall = time.monotonic() - began
        server = cpu_seconds(server_pid) - server_before
        own = cpu_seconds(os.getpid()) - own_before
    latencies.sort()
    return {
        "orders_per_second": orders / wall,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[max(0, round(len(latencies) * 0.99) - 1)],
        "within_promise": sum(1 for latency in latencies if latency <= POLICY.deadline_seconds) / orders,
        "server_cpu_per_order": server / orders,
        "python_cpu_per_order": own / orders,
    }


async def run_shape(local: bool, orders: int, in_flight: int) -> dict[str, float]:
    """One shape against a dev server of its own, started as scripts/start starts it."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="temporal-floor-") as data:
        server = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "scripts" / "temporal_dev_server.py"),
             "--db-file", f"{data}/temporal.db", "--port", str(port), "--ui-port", str(free_port())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            client = await connect(f"127.0.0.1:{port}")
            return await measure(client, server.pid, orders, in_flight, local)
        finally:
            server.terminate()
            server.wait()


def report(shape: str, orders: int, in_flight: int, result: dict[str, float]) -> str:
    cores = os.cpu_count() or 1
    per_order = result["server_cpu_per_order"] + result["python_cpu_per_order"]
    return "\n".join([
        f"shape                         {shape} activities",
        f"orders / in flight            {orders} / {in_flight}",
        f"throughput orders/s           {result['orders_per_second']:.2f}",
        f"latency p50 / p99 s           {result['p50']:.2f} / {result['p99']:.2f}",
        f"within {POLICY.deadline_seconds:g} s                  {result['within_promise']:.1%}",
        f"CPU s per order: server       {result['server_cpu_per_order']:.3f}",
        f"CPU s per order: workers      {result['python_cpu_per_order']:.3f}  (both workers and the client)",
        f"ceiling on {cores} cores           {cores / per_order:.1f} orders/s  "
        f"(server alone: {cores / result['server_cpu_per_order']:.1f})",
    ])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--orders", type=int, default=300)
    parser.add_argument("-c", "--in-flight", type=int, default=50)
    parser.add_argument("--shape", choices=(*SHAPES, "both"), default="both")
    parser.add_argument("--json-out", help="write the figures of each shape as JSON here")
    args = parser.parse_args()
    results = {}
    for shape in SHAPES if args.shape == "both" else (args.shape,):
        results[shape] = await run_shape(shape == "local", args.orders, args.in_flight)
        print(report(shape, args.orders, args.in_flight, results[shape]), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    # As the product's workers run (orchestration/worker.py): on uvloop, and leaving with status 0,
    # not a crash of the SDK's runtime at the interpreter's exit.
    run_process(main())
