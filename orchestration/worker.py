"""Running a worker process: logging, database pool, Temporal connection, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from datetime import timedelta
from typing import Any, Callable, Coroutine, NoReturn, Sequence

import uvloop
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from orchestration.attempts import StepActivities
from orchestration.database import close_pool, open_pool
from orchestration.logs import configure_logging, settings_or_exit
from orchestration.metrics import ActivityCounter, metrics_meter
from orchestration.settings import Settings, WorkerSettings
from orchestration.temporal_client import connect, exit_without_teardown

logger = logging.getLogger(__name__)


def workflow_runner(settings: WorkerSettings) -> WorkflowRunner:
    """Temporal's sandbox only where WORKER_SANDBOXED_WORKFLOWS asks for it (the tests do)."""
    return SandboxedWorkflowRunner() if settings.sandboxed_workflows else UnsandboxedWorkflowRunner()


def build_worker(
    client, settings: Settings, task_queue: str, workflows: Sequence[type], activities: Sequence
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=list(activities),
        workflow_runner=workflow_runner(settings.worker),
        # Every order keeps several short activities in flight; the default 100 slots fill up
        # under load while hung attempts wait for their cut-off.
        max_concurrent_activities=settings.worker.max_concurrent_activities,
        max_concurrent_local_activities=settings.worker.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker.max_concurrent_workflow_tasks,
        max_concurrent_activity_task_polls=settings.worker.activity_task_pollers,
        max_concurrent_workflow_task_polls=settings.worker.workflow_task_pollers,
        sticky_queue_schedule_to_start_timeout=timedelta(
            seconds=settings.worker.sticky_schedule_to_start_seconds
        ),
        # On SIGTERM, give running attempts (each well under a second) time to finish.
        graceful_shutdown_timeout=timedelta(seconds=settings.worker.attempt_backstop_seconds),
    )


async def serve(
    task_queue_of: Callable[[Settings], str],
    workflows: Sequence[type],
    activities_class: type[StepActivities],
    companions: Sequence[Callable[[Client, Settings], Coroutine[Any, Any, None]]] = (),
) -> None:
    """Run one worker until SIGTERM/SIGINT: `task_queue_of(settings)` names its queue, and it
    runs `workflows` and the activities of `activities_class`, with each of `companions`
    (background loops given the client and settings) running beside it."""
    settings = settings_or_exit()
    configure_logging(settings.log_level)
    # With WORKER_SANDBOXED_WORKFLOWS the sandbox imports the workflow modules afresh for every
    # workflow run. Without their bytecode on disk (PYTHONDONTWRITEBYTECODE=1 is common in
    # containers and dev shells) each import compiles the source again: 6 % of the order
    # worker's CPU under load.
    sys.dont_write_bytecode = False
    # Before connecting: the metrics endpoint lives in the runtime the client is created on.
    meter = metrics_meter(settings.worker.metrics_port, settings.worker.metrics_host)
    await open_pool(settings.database)
    client = await connect(settings.temporal)
    activities = activities_class(
        settings.worker.attempt_timeout_seconds,
        ActivityCounter(meter),
        backstop=settings.worker.attempt_backstop_seconds,
    )
    task_queue = task_queue_of(settings)
    worker = build_worker(client, settings, task_queue, workflows, activities.activities())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logger.info(
        "worker started",
        extra={
            "event": "worker_started",
            "task_queue": task_queue,
            "metrics_port": settings.worker.metrics_port,
            "event_loop": type(loop).__module__.partition(".")[0],
        },
    )
    async with worker:
        background = [asyncio.create_task(companion(client, settings)) for companion in companions]
        await stop.wait()
        logger.info("worker stopping", extra={"event": "worker_stopping", "task_queue": task_queue})
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    await activities.failure_log.written()
    await close_pool()
    logger.info("worker stopped", extra={"event": "worker_stopped", "task_queue": task_queue})


def run_process(main: Coroutine[Any, Any, Any]) -> NoReturn:
    """Run `main` as the process's whole life, on uvloop: status 0 when it returns, 1 (logged)
    when it raises.

    uvloop because a worker's event loop is woken from the SDK's native threads for every task,
    completion and client call, and serves a database round trip per step: against the Temporal
    server's CPU in the same run, the order worker used 7 % less CPU and the shipping worker 11 %,
    one log line fewer per step included (docs/performance.md)."""
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    except Exception:
        logger.exception("process stopped by an error", extra={"event": "process_failed"})
        exit_without_teardown(1)
    exit_without_teardown(0)
