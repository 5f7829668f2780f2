"""The fault test's invariants, checked against PostgreSQL, Temporal and the API's last answers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from orchestration.models import CANCELLED, FAILED, SHIPPED, TERMINAL_STATES
from scripts.drive.api import Api
from scripts.drive.recorded import read_database, workflow_outcomes
from scripts.faults.run import OPERATOR_CANCEL_REASON, OrderRecord
from scripts.faults.system import System

# Facts an order records at most once, whatever retried; package_prepared is once per shipping
# attempt, attempt_failed once per failed attempt, refusals and address versions per signal.
ONCE_PER_ORDER_EVENTS = (
    "order_received",
    "order_validated",
    "payment_charged",
    "carrier_dispatched",
    "order_shipped",
    "payment_refunded",
)
# close_order records order_cancelled or order_failed under one key; shipped excludes both.
TERMINAL_EVENTS = ("order_shipped", "order_cancelled", "order_failed")


@dataclass
class Findings:
    states: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    """"state: reason" of each cancelled or failed order."""
    charges: int = 0
    refunds: int = 0
    late_charge_refunds: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)
    """Invariant -> the orders (with details) that break it; every invariant has an entry."""

    def expect(self, invariant: str) -> None:
        self.problems.setdefault(invariant, [])

    def broken(self, invariant: str, detail: str) -> None:
        self.problems.setdefault(invariant, []).append(detail)


NOT_STARTED = "orders not started"
NOT_TERMINAL = "orders not terminal"
SHIPPED_NOT_CHARGED_ONCE = "shipped without exactly one charge"
LEFT_CHARGED = "cancelled/failed still charged"
SEVERAL_PAYMENTS = "orders with more than one payment"
DUPLICATE_CHARGES = "duplicate charges found"
DUPLICATE_EVENTS = "duplicate events found"
STATE_MISMATCHES = "state mismatches (db vs workflow)"
PAYMENT_MISMATCHES = "payment mismatches (db vs workflow)"
API_MISMATCHES = "api mismatches (api vs workflow)"
UNGRACEFUL_STOPS = "graceful stops not clean"
SERVER_ERRORS = "5xx other than 503 + Retry-After"
LATE = "orders ended past their 15 s"
CANCEL_MISMATCHES = "cancel answers vs outcome"
DISPATCHED_NOT_SHIPPED = "dispatched, yet cancelled/failed"
INVARIANTS = (
    NOT_STARTED, NOT_TERMINAL, SHIPPED_NOT_CHARGED_ONCE, LEFT_CHARGED, SEVERAL_PAYMENTS,
    DUPLICATE_CHARGES, DUPLICATE_EVENTS, STATE_MISMATCHES, PAYMENT_MISMATCHES, API_MISMATCHES,
    CANCEL_MISMATCHES, DISPATCHED_NOT_SHIPPED, UNGRACEFUL_STOPS, SERVER_ERRORS, LATE,
)


async def check_invariants(system: System, records: list[OrderRecord], api: Api) -> Findings:
    findings = Findings()
    for invariant in INVARIANTS:
        findings.expect(invariant)
    order_ids = [record.order_id for record in records]
    outcomes = await workflow_outcomes(system.temporal_address, order_ids)
    database = await read_database(system.database_url, order_ids)

    if not database.unique_key_index:
        findings.broken(DUPLICATE_EVENTS, "events.event_key has no unique index")
    if database.repeated_keys:
        findings.broken(DUPLICATE_EVENTS, f"{database.repeated_keys} event keys recorded more than once")

    for record in records:
        order_id = record.order_id
        if not record.started:
            findings.broken(NOT_STARTED, f"{order_id}: {record.error}")
            continue
        outcome = outcomes[order_id]
        if outcome.state not in TERMINAL_STATES:
            findings.broken(NOT_TERMINAL, f"{order_id}: workflow {outcome.execution_status}, "
                                          f"API said {record.api_state} {record.error}".rstrip())
            continue
        findings.states[outcome.state] += 1
        # A worker killed mid-step is noticed when its workflow task times out (2 s) and the
        # order carries on elsewhere: even an order caught by a kill ends in time.
        if outcome.seconds is not None and outcome.seconds > outcome.deadline_seconds:
            findings.broken(LATE, f"{order_id}: ended after {outcome.seconds:.1f} s ({outcome.state})")
        if outcome.reason:
            findings.reasons[f"{outcome.state}: {outcome.reason}"] += 1
        statuses = database.payments.get(order_id, [])
        findings.charges += len(statuses)
        findings.refunds += statuses.count("refunded")
        if outcome.state == SHIPPED and statuses != ["charged"]:
            findings.broken(SHIPPED_NOT_CHARGED_ONCE, f"{order_id}: payments {statuses}")
        if outcome.state in (CANCELLED, FAILED) and "charged" in statuses:
            findings.broken(LEFT_CHARGED, f"{order_id} ({outcome.state}): payments {statuses}")
        facts = database.event_counts.get(order_id, Counter())
        # Goods that left make the order shipped, whatever else happened.
        if outcome.state in (CANCELLED, FAILED) and facts["carrier_dispatched"]:
            findings.broken(DISPATCHED_NOT_SHIPPED, f"{order_id} ({outcome.state}: {outcome.reason})")
        if len(statuses) > 1:
            findings.broken(SEVERAL_PAYMENTS, f"{order_id}: payments {statuses}")
        if facts["payment_charged"] > 1:
            findings.broken(DUPLICATE_CHARGES, f"{order_id}: {facts['payment_charged']} payment_charged events")
        repeated = {kind: facts[kind] for kind in ONCE_PER_ORDER_EVENTS if facts[kind] > 1}
        if sum(facts[kind] for kind in TERMINAL_EVENTS) > 1:
            repeated.update({kind: facts[kind] for kind in TERMINAL_EVENTS if facts[kind]})
        if facts["package_prepared"] > outcome.shipping_attempts:
            repeated["package_prepared"] = facts["package_prepared"]
        if repeated:
            findings.broken(DUPLICATE_EVENTS, f"{order_id}: {repeated}")
        state_in_db = database.order_states.get(order_id)
        if state_in_db != outcome.state:
            findings.broken(STATE_MISMATCHES, f"{order_id}: db {state_in_db}, workflow {outcome.state}")
        expected_payments = [outcome.payment_status] if outcome.payment_status in ("charged", "refunded") else []
        if order_id in database.late_charge_refunds:
            # Charged after the order closed (a stalled worker's attempt), which the workflow
            # never knew of, and refunded by the sweep.
            findings.late_charge_refunds += 1
            expected_payments = ["refunded"]
        if statuses != expected_payments:
            findings.broken(PAYMENT_MISMATCHES, f"{order_id}: db {statuses}, workflow {outcome.payment_status}")
        if record.api_state != outcome.state:
            findings.broken(API_MISMATCHES, f"{order_id}: api {record.api_state}, workflow {outcome.state}")
        # A cancel answers 200 once it has taken effect (or the order ended first), saying how
        # the order ended; a refusal (409) means it did not take effect (unless it was sent
        # again, and the first one had).
        if record.cancel_status == 200 and record.cancel_state != outcome.state:
            findings.broken(CANCEL_MISMATCHES, f"{order_id}: cancel answered {record.cancel_state}, "
                                               f"workflow {outcome.state}")
        if (record.cancel_status == 409 and not record.cancel_retried
                and outcome.state == CANCELLED and outcome.reason == OPERATOR_CANCEL_REASON):
            findings.broken(CANCEL_MISMATCHES, f"{order_id}: cancel refused, yet the order was cancelled by it")

    for stop in system.faults.graceful_stops:
        if not stop.clean:
            findings.broken(UNGRACEFUL_STOPS, str(stop))
    for error in api.server_errors:
        findings.broken(SERVER_ERRORS, error)
    return findings
