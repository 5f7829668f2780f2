"""What the bare workflow shape costs Temporal: the floor under scripts/benchmark.py's figures.

Usage: .venv/bin/python scripts/temporal_floor.py [-n 300] [-c 50]

Runs the order's shape and nothing else: six activities that each await the real flaky_call
(four on the order's queue, two in a child workflow on its own queue), an approve signal,
the same retry policy, timeouts and in-activity cut-off as the product, against its own Temporal
dev server started exactly as scripts/start starts it. No database, no web server, no logging or
bookkeeping; both workers and the client share this one process. It prints the CPU seconds per
order of the server and of this process, and the throughput those allow on this machine's cores.
If the product is slower than this, the difference is ours; what this script measures is not.
"""

from __future__ import annotations

import argparse
import asyncio
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
    from orchestration.models import OrderPolicy
    from orchestration.progress import retry_policy
    from orchestration.settings import WorkerSettings

ORDER_QUEUE = "floor-orders"
SHIPPING_QUEUE = "floor-shipping"
POLICY = OrderPolicy()
ATTEMPT_TIMEOUT_SECONDS = WorkerSettings().attempt_timeout_seconds
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


async def run_step(name: str) -> None:
    # No deadline: every order completes, however long it takes, so that the cost of a whole
    # order is measured (the product fails an order that runs out of time, which costs less).
    await workflow.execute_activity(
        business_step,
        name,
        start_to_close_timeout=timedelta(seconds=POLICY.attempt_backstop_seconds),
        retry_policy=retry_policy(POLICY),
    )


@workflow.defn
class BareShipping:
    @workflow.run
    async def run(self) -> None:
        await run_step("prepare_package")
        await run_step("dispatch_carrier")


@workflow.defn
class BareOrder:
    def __init__(self) -> None:
        self.approved = False

    @workflow.signal
    def approve(self) -> None:
        self.approved = True

    @workflow.run
    async def run(self) -> None:
        await run_step("receive_order")
        await run_step("validate_order")
        await workflow.wait_condition(
            lambda: self.approved, timeout=timedelta(seconds=POLICY.review_timeout_seconds)
        )
        await run_step("charge_payment")
        await workflow.execute_child_workflow(
            BareShipping.run,
            id=f"{workflow.info().workflow_id}-shipping",
            task_queue=SHIPPING_QUEUE,
        )
        await run_step("mark_shipped")


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


async def measure(client: Client, server_pid: int, orders: int, in_flight: int) -> dict[str, float]:
    slots = asyncio.Semaphore(in_flight)
    latencies: list[float] = []

    async def one_order() -> None:
        async with slots:
            began = time.monotonic()
            handle = await client.start_workflow(
                BareOrder.run, id=f"floor-{uuid.uuid4().hex}", task_queue=ORDER_QUEUE
            )
            await handle.signal(BareOrder.approve)
            await handle.result()
            latencies.append(time.monotonic() - began)

    order_worker = Worker(
        client, task_queue=ORDER_QUEUE, workflows=[BareOrder], activities=[business_step],
        max_concurrent_activities=500,
    )
    shipping_worker = Worker(
        client, task_queue=SHIPPING_QUEUE, workflows=[BareShipping], activities=[business_step],
        max_concurrent_activities=500,
    )
    async with order_worker, shipping_worker:
        server_before, own_before = cpu_seconds(server_pid), cpu_seconds(os.getpid())
        began = time.monotonic()
        await asyncio.gather(*(one_order() for _ in range(orders)))
        wall = time.monotonic() - began
        server = cpu_seconds(server_pid) - server_before
        own = cpu_seconds(os.getpid()) - own_before
    latencies.sort()
    return {
        "wall": wall,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[max(0, round(len(latencies) * 0.99) - 1)],
        "within_promise": sum(1 for latency in latencies if latency <= POLICY.deadline_seconds) / orders,
        "server": server / orders,
        "python": own / orders,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--orders", type=int, default=300)
    parser.add_argument("-c", "--in-flight", type=int, default=50)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="temporal-floor-") as data:
        server = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "scripts" / "temporal_dev_server.py"),
             "--db-file", f"{data}/temporal.db", "--port", str(port), "--ui-port", str(free_port())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            client = await connect(f"127.0.0.1:{port}")
            result = await measure(client, server.pid, args.orders, args.in_flight)
        finally:
            server.terminate()
            server.wait()
    cores = os.cpu_count() or 1
    per_order = result["server"] + result["python"]
    print(f"orders / in flight            {args.orders} / {args.in_flight}")
    print(f"throughput orders/s           {args.orders / result['wall']:.2f}")
    print(f"latency p50 / p99 s           {result['p50']:.2f} / {result['p99']:.2f}")
    print(f"within {POLICY.deadline_seconds:g} s                  {result['within_promise']:.1%}")
    print(f"CPU s per order: server       {result['server']:.3f}")
    print(f"CPU s per order: workers      {result['python']:.3f}  (both workers and the client)")
    print(f"ceiling on {cores} cores           {cores / per_order:.1f} orders/s  "
          f"(server alone: {cores / result['server']:.1f})")


if __name__ == "__main__":
    asyncio.run(main())
