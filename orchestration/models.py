"""Inputs, outputs and status of the order workflows and activities.

Plain dataclasses, so Temporal's default converter stores them as JSON in workflow history and
the API can return them as they are. Times are ISO-8601 UTC strings: the converter does not
decode datetime fields.

Annotations here are real types, not strings (no `from __future__ import annotations`):
Temporal's converter resolves a dataclass's field types on every decode, and string annotations
made decoding a status about 1.5 times as slow (each query answer, each activity input).
"""

from dataclasses import dataclass, field
from typing import Any, Optional

# Order states. The first seven are in flight; the last three are terminal.
STARTED = "started"
RECEIVED = "received"
VALIDATED = "validated"
AWAITING_APPROVAL = "awaiting_approval"
CHARGED = "charged"
SHIPPING = "shipping"
DISPATCHED = "dispatched"
SHIPPED = "shipped"
CANCELLED = "cancelled"
FAILED = "failed"
TERMINAL_STATES = frozenset({SHIPPED, CANCELLED, FAILED})

# Workflow steps, in order; the status query reports attempts for each.
ORDER_STEPS = (
    "receive_order",
    "validate_order",
    "manual_review",
    "charge_payment",
    "ship_order",
    "mark_shipped",
)
COMPENSATION_STEPS = ("refund_payment", "close_order")
SHIPPING_STEPS = ("prepare_package", "dispatch_carrier")

REVIEW_TIMED_OUT = "review timed out"
DEADLINE_EXCEEDED = "deadline exceeded"


@dataclass
class Item:
    sku: str
    qty: int = 1


@dataclass
class Address:
    line1: str
    city: str
    postal_code: str
    country: str
    name: str = ""
    line2: str = ""


@dataclass
class OrderPolicy:
    """The time budget of one order; part of the workflow input so history records it."""

    deadline_seconds: float = 15.0
    """Every order is shipped, cancelled or failed this long after it starts."""
    compensation_reserve_seconds: float = 3.0
    """Kept free at the end of the deadline for refund and close-out."""
    review_timeout_seconds: float = 6.0
    """How long manual review waits for approval before the order is cancelled."""
    retry_interval_seconds: float = 0.01
    """Pause between attempts of a failed activity. flaky_call fails at once or hangs; waiting
    longer before the next try buys nothing but latency (0.05 s cost 0.3 s per order), while
    5 ms made the server work harder at 10 orders in flight (p99 4.4 -> 6.0 s)."""
    attempt_backstop_seconds: float = 2.0
    """Server-side start-to-close of one attempt: it only catches crashed or stuck workers,
    because the worker itself cuts a hung attempt off much sooner."""
    dispatch_budget_seconds: float = 2.5
    """Time one shipping attempt gives DispatchCarrier before asking the parent for a retry."""


@dataclass
class OrderInput:
    order_id: str
    payment_id: str
    items: list[Item]
    address: Optional[Address]
    policy: OrderPolicy
    shipping_task_queue: str


@dataclass
class CancelOrder:
    reason: str = "cancelled by operator"


@dataclass
class AddressUpdate:
    address: Address


@dataclass
class DispatchFailure:
    shipping_attempt: int
    reason: str


# Activity inputs and results. Every result carries the attempt that succeeded, so the workflow
# can report attempts per step without asking the server.


@dataclass
class ReceiveOrderInput:
    order_id: str
    payment_id: str
    items: list[Item]
    address: Optional[Address]


@dataclass
class OrderRef:
    order_id: str


@dataclass
class ChargePaymentInput:
    order_id: str
    payment_id: str


@dataclass
class RefundPaymentInput:
    order_id: str
    payment_id: str
    reason: str


@dataclass
class ShippingStepInput:
    order_id: str
    shipping_attempt: int
    address: Optional[Address]


@dataclass
class RecordAddressInput:
    order_id: str
    address: Address
    version: int


@dataclass
class CloseOrderInput:
    order_id: str
    state: str
    reason: str
    payment_id: str
    items: list[Item]


@dataclass
class RecordEventInput:
    order_id: str
    event_type: str
    event_key: str
    payload: dict[str, Any] = field(default_factory=dict)


# Status, as the `status` query returns it.


@dataclass
class StepStatus:
    name: str
    status: str = "pending"  # pending | running | completed | failed | skipped
    attempts: int = 0
    started_at: Optional[str] = None
    finished_at: Optional[str] = None


@dataclass
class ErrorRecord:
    step: str
    attempt: int
    message: str
    at: str


@dataclass
class StepResult:
    attempt: int
    detail: str = ""
    errors: list[ErrorRecord] = field(default_factory=list)
    """Failures of the earlier attempts of this activity, oldest first."""


@dataclass
class PaymentResult:
    payment_id: str
    status: str
    amount: int
    attempt: int
    already_processed: bool = False
    errors: list[ErrorRecord] = field(default_factory=list)


@dataclass
class PaymentStatus:
    payment_id: str
    status: str  # pending | charged | refunded | not_charged
    amount: int = 0


@dataclass
class OrderStatus:
    order_id: str
    state: str
    current_step: Optional[str]
    approved: bool
    address: Optional[Address]
    payment: PaymentStatus
    steps: list[StepStatus]
    errors: list[ErrorRecord]
    shipping_attempts: int
    shipping_workflow_id: Optional[str]
    started_at: str
    deadline_at: str
    finished_at: Optional[str] = None
    reason: str = ""
    allowed_actions: list[str] = field(default_factory=list)
    """Operator signals the order accepts right now: approve, cancel, update_address."""


@dataclass
class ShippingInput:
    order_id: str
    parent_workflow_id: str
    shipping_attempt: int
    address: Optional[Address]
    policy: OrderPolicy
    deadline_at: str
    """Shipping must be done by then (the parent's forward deadline)."""


@dataclass
class ShippingResult:
    outcome: str  # dispatched | cancelled | dispatch_failed
    address: Optional[Address]
    reason: str = ""


@dataclass
class ShippingStatus:
    order_id: str
    shipping_attempt: int
    current_step: Optional[str]
    steps: list[StepStatus]
    errors: list[ErrorRecord]
    outcome: Optional[str] = None
