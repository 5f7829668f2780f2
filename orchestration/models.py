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

from temporalio.common import SearchAttributeKey

from orchestration.policy import OrderPolicy

# Order states. The first nine are in flight; the last three are terminal.
STARTED = "started"
RECEIVED = "received"
VALIDATED = "validated"
AWAITING_APPROVAL = "awaiting_approval"
AWAITING_ADDRESS = "awaiting_address"
"""Approved, but charged only once it has a shipping address."""
APPROVED = "approved"
"""Review passed (approved, with an address): the payment is charged next."""
CHARGED = "charged"
SHIPPING = "shipping"
DISPATCHED = "dispatched"
SHIPPED = "shipped"
CANCELLED = "cancelled"
FAILED = "failed"
TERMINAL_STATES = frozenset({SHIPPED, CANCELLED, FAILED})
PARKED_STATES = frozenset({AWAITING_APPROVAL, AWAITING_ADDRESS})
"""Waiting for a person (an approval or an address), not for the machine."""

# What a cancelled shipping attempt finds when it withdraws the order's dispatch (see
# orchestration/shipping/business.py dispatch_withdrawn).
DISPATCH_WITHDRAWN = "withdrawn"
"""No dispatch was started: none will be, the cancel stands."""
DISPATCH_STARTED = "started"
"""A dispatch was started (by a run that lost its task, or a stalled worker): the goods may be
leaving, so the cancel is refused and the dispatch seen through."""
DISPATCH_DONE = "dispatched"
"""The goods left: the cancel is refused."""

# What a parked order waits for, as the status' `waiting_for` lists it.
APPROVAL = "approval"
SHIPPING_ADDRESS = "shipping_address"

ORDER_PARKED_ATTRIBUTE = SearchAttributeKey.for_bool("OrderParked")
"""True while the order waits for a person at review (an approval, an address): a Temporal search
attribute, so that visibility counts the orders doing work (admission control) across web
replicas, and the UI finds the orders waiting for someone. Only entering and leaving review
change it: upserting the whole state on every transition took 8 history events and visibility
writes per order, a fifth of the server's CPU."""

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

DEADLINE_EXCEEDED = "deadline exceeded"


def review_ended_reason(missing: list[str]) -> str:
    """Why review ended an order, naming what it still lacked, e.g. "no shipping address before
    review ended"."""
    words = {APPROVAL: "no approval", SHIPPING_ADDRESS: "no shipping address"}
    return " and ".join(words[what] for what in missing) + " before review ended"


@dataclass
class Item:
    sku: str
    qty: int = 1


@dataclass
class Address:
    """A shipping address in its canonical form (the API also accepts common aliases)."""

    line1: str
    city: str
    postal_code: str = ""
    country: str = ""
    name: str = ""
    line2: str = ""
    state: str = ""
    """State, province or region."""




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
    version: int = 0
    """Set by the order when it forwards the address to a shipping attempt (1 = the first
    change); the attempt acknowledges it with `address_applied`."""


@dataclass
class AddressApplied:
    """A shipping attempt took this address version before it called the carrier."""

    shipping_attempt: int
    version: int


@dataclass
class ActionResult:
    """The answer of an operator action (a workflow update): the order right after it."""

    action: str
    message: str
    """What happened, in words, e.g. "approved; the order now waits for its shipping address"."""
    state: str
    waiting_for: list[str]
    allowed_actions: list[str]
    reason: str = ""
    address: Optional[Address] = None


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
    started_at: Optional[str] = None
    """When the workflow started (recorded for the board's overview)."""


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
class LateCharge:
    """A charge recorded after its order was cancelled or failed, not refunded yet."""

    order_id: str
    payment_id: str
    order_state: str


@dataclass
class LateChargeRefundInput:
    charge: LateCharge
    policy: OrderPolicy


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
    started_at: Optional[str] = None


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
    """Operator actions the order accepts right now: approve, cancel, update_address."""
    waiting_for: list[str] = field(default_factory=list)
    """While parked at review: what it still needs, `approval` and/or `shipping_address`."""


@dataclass
class ShippingInput:
    order_id: str
    parent_workflow_id: str
    shipping_attempt: int
    address: Optional[Address]
    policy: OrderPolicy
    deadline_at: str
    """Shipping must be done by then (the parent's forward deadline)."""
    address_version: int = 0


@dataclass
class ShippingResult:
    outcome: str
    """dispatched | cancelled | dispatch_failed (retry: time ran out) | rejected (a business
    rule refused it: retrying cannot help)"""
    address: Optional[Address]
    reason: str = ""
    address_version: int = 0
    """The version of `address`, the one the carrier got when dispatched."""


@dataclass
class ShippingStatus:
    order_id: str
    shipping_attempt: int
    current_step: Optional[str]
    steps: list[StepStatus]
    errors: list[ErrorRecord]
    outcome: Optional[str] = None
