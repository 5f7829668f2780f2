"""Queries to a workflow busy in a step wait for its workflow task instead of being refused.

A step runs as a local activity inside a workflow task, and a query that arrives meanwhile is
buffered by the server until that task completes. Temporal buffers one query per workflow by
default and refuses the next ("consistent query buffer is full"), which the web app can only
turn into a 503: the board's refresh and a script's `GET /orders/<id>/status` asking at the same
moment were enough. The servers run with a larger buffer (scripts/temporal_dev_server.py,
scripts/temporal-dynamic-config.yaml); this runs against the tests' dev server, started the same way.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from web.temporal_gateway import WEB_RETRY_CONFIG

STEP_SECONDS = 2.0
CONCURRENT_QUERIES = 4


@activity.defn
async def slow_step() -> None:
    await asyncio.sleep(STEP_SECONDS)


@workflow.defn(sandboxed=False)
class BusyInAStep:
    def __init__(self) -> None:
        self._step = "waiting"
        self._go = False

    @workflow.run
    async def run(self) -> None:
        # Queries before a workflow's first task completes take another path in the server.
        await workflow.wait_condition(lambda: self._go)
        self._step = "slow_step"
        await workflow.execute_local_activity(slow_step, schedule_to_close_timeout=timedelta(seconds=30))
        self._step = "done"

    @workflow.signal
    def go(self) -> None:
        self._go = True

    @workflow.query
    def step(self) -> str:
        return self._step


async def test_concurrent_queries_during_a_step_all_answer(dev_server):
    # Queried as the web app queries: its client gives a refused query two quick retries.
    client = await Client.connect(
        dev_server.client.service_client.config.target_host, retry_config=WEB_RETRY_CONFIG
    )
    task_queue = f"query-buffer-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=task_queue, workflows=[BusyInAStep], activities=[slow_step],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await client.start_workflow(
            BusyInAStep.run, id=f"busy-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        assert await handle.query(BusyInAStep.step) == "waiting"
        await handle.signal(BusyInAStep.go)
        # The signal's workflow task now runs the local activity, and stays open for its 2 s.
        await asyncio.sleep(0.5)
        answers = await asyncio.gather(
            *(handle.query(BusyInAStep.step) for _ in range(CONCURRENT_QUERIES)), return_exceptions=True
        )
        await handle.result()
    refused = [answer for answer in answers if isinstance(answer, BaseException)]
    assert not refused, refused
    assert set(answers) <= {"slow_step", "done"}, answers
