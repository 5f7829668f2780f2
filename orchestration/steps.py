"""Step bookkeeping of both workflows: what the status query shows (steps, attempts, recent
errors), how a step's failure reads, and the time left. Workflow code only: time comes from
workflow.now(), logs go through workflow.logger (which stays quiet during replay)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Optional

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    RetryState,
    TimeoutError as TemporalTimeoutError,
)

from orchestration.models import ErrorRecord, StepStatus
from orchestration.policy import (
    BUSINESS_RULE_VIOLATION,
    DEADLINE_EXCEEDED_ERROR,
    MUST_COMPLETE_TIMEOUT,
    bookkeeping_retry_policy,
)

MAX_ERRORS_KEPT = 25

STEP_FAILURES = (ActivityError, ApplicationError)
"""What awaiting a failed step raises: ActivityError for an activity, but the activity's own
ApplicationError, unwrapped, for a local activity (temporalio 1.35)."""


async def bookkeeping(activity: Any, arg: Any) -> Any:
    """Run a local activity that calls nothing outside (a database write or read): it must
    happen however long it takes, so its budget only bounds a database outage, retried with
    backoff."""
    return await workflow.execute_local_activity_method(
        activity,
        arg,
        schedule_to_close_timeout=MUST_COMPLETE_TIMEOUT,
        retry_policy=bookkeeping_retry_policy(),
    )


def time_left(until: datetime) -> timedelta:
    return until - workflow.now()


def failure_message(err: BaseException) -> str:
    """The innermost meaningful message of a Temporal failure chain."""
    messages = []
    current: Optional[BaseException] = err
    while current is not None:
        if isinstance(current, FailureError) and current.message:
            messages.append(current.message)
        current = current.__cause__
    # The outermost message is generic ("Activity task failed"); the cause says what happened.
    return messages[-1] if messages else str(err)


def is_rejection(err: BaseException) -> bool:
    """True when a step failed because a business rule refused it: retrying cannot help."""
    failure = err.__cause__ if isinstance(err, ActivityError) else err
    return isinstance(failure, ApplicationError) and failure.type == BUSINESS_RULE_VIOLATION


def is_deadline(err: BaseException) -> bool:
    """True when an activity or child ran out of time (schedule-to-close or our own deadline)."""
    current: Optional[BaseException] = err
    while current is not None:
        if isinstance(current, TemporalTimeoutError):
            return True
        # Temporal stopped retrying because the next attempt would end past the budget; the
        # cause is then just the last attempt's own error.
        if isinstance(current, (ActivityError, ChildWorkflowError)) and current.retry_state == RetryState.TIMEOUT:
            return True
        if isinstance(current, ApplicationError) and current.type == DEADLINE_EXCEEDED_ERROR:
            return True
        if not isinstance(current, (ActivityError, ChildWorkflowError)):
            return False
        current = current.__cause__
    return False


class StepBook:
    """Steps, attempts and recent errors of one workflow, as the status query shows them."""

    def __init__(self, names: Iterable[str], context: dict[str, Any]) -> None:
        self.steps = {name: StepStatus(name=name) for name in names}
        self.errors: list[ErrorRecord] = []
        self.current: Optional[str] = None
        self._context = context

    def log(self, message: str, event: str, **fields: Any) -> None:
        workflow.logger.info(message, extra={"event": event, **self._context, **fields})

    def start(self, name: str) -> None:
        step = self.steps[name]
        step.status = "running"
        step.started_at = workflow.now().isoformat()
        # No log line: the state transition or the previous step's completion, logged at the
        # same moment, says it, and under load each line costs honcho alone about 0.3 ms of CPU.
        self.current = name

    def complete(self, name: str, attempts: int, errors: Iterable[ErrorRecord] = ()) -> None:
        step = self.steps[name]
        step.status = "completed"
        step.attempts = attempts
        step.finished_at = workflow.now().isoformat()
        for error in errors:
            self.add_error(error)
        if self.current == name:
            self.current = None
        self.log(f"step {name} completed", "step_completed", step=name, attempt=attempts)

    def fail(self, name: str, message: str, status: str = "failed") -> None:
        step = self.steps[name]
        step.status = status
        step.finished_at = workflow.now().isoformat()
        if self.current == name:
            self.current = None
        if status == "failed":
            self.add_error(ErrorRecord(step=name, attempt=step.attempts, message=message, at=workflow.now().isoformat()))
        workflow.logger.warning(
            f"step {name} {status}: {message}",
            extra={"event": f"step_{status}", **self._context, "step": name, "error": message},
        )

    def add_error(self, error: ErrorRecord) -> None:
        self.errors.append(error)
        del self.errors[:-MAX_ERRORS_KEPT]

    def note_refusal(self, what: str, message: str) -> None:
        self.add_error(ErrorRecord(step=what, attempt=0, message=message, at=workflow.now().isoformat()))
        workflow.logger.warning(
            f"{what} refused: {message}",
            extra={"event": "signal_refused", **self._context, "signal": what, "error": message},
        )

    def listed(self) -> list[StepStatus]:
        return list(self.steps.values())
