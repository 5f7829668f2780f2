"""What the board and the order page show of an order, worked out from OrderService's answers.

No HTTP here: web/board.py picks a view and a template. Times are computed against the caller's
`now`, so a view is the same however late it is rendered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from orchestration.models import (
    CANCELLED,
    CHARGED,
    DISPATCHED,
    FAILED,
    RECEIVED,
    SHIPPED,
    SHIPPING,
    TERMINAL_STATES,
    VALIDATED,
)
from web.summaries import OrderSummary

# The board's state filter: a name in the query string → the database states it shows. The
# database knows no `awaiting_approval` (that lives in the workflow), so filters are by what the
# database records.
BOARD_FILTERS: dict[str, Optional[tuple[str, ...]]] = {
    "all": None,
    "in_flight": (RECEIVED, VALIDATED, CHARGED, SHIPPING, DISPATCHED),
    SHIPPED: (SHIPPED,),
    CANCELLED: (CANCELLED,),
    FAILED: (FAILED,),
}
FILTER_LABELS = {
    "all": "All orders",
    "in_flight": "In flight",
    SHIPPED: "Shipped",
    CANCELLED: "Cancelled",
    FAILED: "Failed",
}


def parse_time(value: Optional[str]) -> Optional[datetime]:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def seconds_between(start: Optional[str], end: Optional[str]) -> Optional[float]:
    started, ended = parse_time(start), parse_time(end)
    if started is None or ended is None:
        return None
    return (ended - started).total_seconds()


@dataclass(frozen=True)
class LastError:
    step: str
    attempt: int
    """The failed attempt's number; 0 for a refused signal, which has no attempt."""
    message: str


@dataclass(frozen=True)
class Notice:
    """A message shown with a row after an action: `ok`, `refused` or `invalid`."""

    kind: str
    message: str


@dataclass(frozen=True)
class OrderRow:
    """One row of the board."""

    order_id: str
    state: str
    reason: str = ""
    current_step: Optional[str] = None
    attempts: Optional[int] = None
    """Activity attempts so far, the running ones included; None when Temporal did not say."""
    last_error: Optional[LastError] = None
    seconds_left: Optional[float] = None
    """Time left until the deadline while in flight."""
    deadline_seconds: Optional[float] = None
    run_seconds: Optional[float] = None
    """Start to finish, once finished."""
    allowed_actions: tuple[str, ...] = ()
    waiting_for: tuple[str, ...] = ()
    """While parked at review: `approval` and/or `shipping_address`."""
    closed: bool = False
    """The workflow has ended; nothing about the order changes any more."""
    live: bool = True
    """Temporal reported on the order; otherwise the row shows what the database holds."""
    loading: bool = False
    """Not live because Temporal's status is on its way, not because Temporal failed."""
    address: Optional[dict[str, Any]] = None

    @property
    def state_label(self) -> str:
        return self.state.replace("_", " ")

    @property
    def polls(self) -> bool:
        """Whether the row keeps asking for its fragment."""
        return not self.closed and (self.live or self.loading or self.state not in TERMINAL_STATES)

    @property
    def time_left_percent(self) -> float:
        if not self.seconds_left or not self.deadline_seconds:
            return 0.0
        return round(100 * min(1.0, self.seconds_left / self.deadline_seconds), 1)


def _last_error(summary: OrderSummary) -> Optional[LastError]:
    """The newest failure: a running step's last failed attempt, else the newest error the
    workflow recorded."""
    if summary.retrying:
        newest = max(summary.retrying, key=lambda step: step.last_failed_at)
        # The attempt running now is the one after the failure.
        return LastError(newest.step, newest.attempt - 1, newest.last_failure)
    if summary.status.errors:
        error = summary.status.errors[-1]
        return LastError(error.step, error.attempt, error.message)
    return None


def row_from_summary(summary: OrderSummary, now: datetime) -> OrderRow:
    status = summary.status
    started, deadline = parse_time(status.started_at), parse_time(status.deadline_at)
    assert started is not None and deadline is not None
    return OrderRow(
        order_id=status.order_id,
        state=status.state,
        reason=status.reason,
        current_step=status.current_step,
        # A step counts its attempts only when it completes; until then its recorded failures
        # say which attempt it is on.
        attempts=sum(step.attempts for step in status.steps)
        + sum(step.attempt for step in summary.retrying),
        last_error=_last_error(summary),
        seconds_left=None if summary.closed else max(0.0, (deadline - now).total_seconds()),
        deadline_seconds=(deadline - started).total_seconds(),
        run_seconds=seconds_between(status.started_at, status.finished_at),
        allowed_actions=tuple(status.allowed_actions),
        waiting_for=tuple(status.waiting_for),
        closed=summary.closed,
        address=None if status.address is None else vars(status.address),
    )


def row_from_record(order: dict[str, Any], *, loading: bool = False) -> OrderRow:
    """A row from the database alone, for an order Temporal cannot report on now, or whose
    status is still `loading`."""
    return OrderRow(
        order_id=order["id"],
        state=order["state"],
        reason=order["reason"],
        live=False,
        loading=loading,
        address=order["address"],
    )


def starting_row(order_id: str) -> OrderRow:
    """The row of an order whose workflow has just been started and has not run yet."""
    return OrderRow(order_id=order_id, state="started")


@dataclass(frozen=True)
class TimelineError:
    attempt: int
    message: str
    at: Optional[str]
    offset_seconds: Optional[float]
    """Since the order started."""


@dataclass(frozen=True)
class TimelineStep:
    name: str
    status: str
    attempts: int
    started_at: Optional[str]
    finished_at: Optional[str]
    offset_seconds: Optional[float]
    duration_seconds: Optional[float]
    errors: list[TimelineError] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


def timeline(workflow_status: dict[str, Any], now: datetime) -> list[TimelineStep]:
    """The steps of an order (from OrderService.order_status) with their attempts and errors,
    the shipping child's steps right after ship_order, and what is still retrying now."""
    started_at = workflow_status["started_at"]
    retrying = {step["step"]: step for step in workflow_status["live"]["retrying"]}
    errors: list[dict[str, Any]] = list(workflow_status["errors"])
    steps: list[dict[str, Any]] = []
    for step in workflow_status["steps"]:
        steps.append(step)
        if step["name"] == "ship_order" and workflow_status["shipping"]:
            steps.extend(workflow_status["shipping"]["steps"])
            errors.extend(workflow_status["shipping"]["errors"])
    for step in retrying.values():
        errors.append(
            {
                "step": step["step"],
                "attempt": step["attempt"] - 1,
                "message": step["last_failure"],
                "at": step["last_failed_at"],
            }
        )

    result = []
    for step in steps:
        if step["status"] == "pending" and not step["started_at"]:
            continue
        attempts = step["attempts"]
        if step["name"] in retrying:
            attempts = max(attempts, retrying[step["name"]]["attempt"])
        until = step["finished_at"] or (
            now.isoformat() if step["status"] == "running" else None
        )
        step_errors = sorted(
            {
                (error["attempt"], error["message"], error["at"])
                for error in errors
                if error["step"] == step["name"]
            },
            key=lambda error: (error[2] or "", error[0]),
        )
        result.append(
            TimelineStep(
                name=step["name"],
                status=step["status"],
                attempts=attempts,
                started_at=step["started_at"],
                finished_at=step["finished_at"],
                offset_seconds=seconds_between(started_at, step["started_at"]),
                duration_seconds=seconds_between(step["started_at"], until),
                errors=[
                    TimelineError(attempt, message, at, seconds_between(started_at, at))
                    for attempt, message, at in step_errors
                ],
            )
        )
    return result
