"""The business functions' database writes against a real PostgreSQL: idempotency of every
state-changing write, and the migrations.

These tests are about the writes, not about failure simulation, so each replaces random.random
(inside the test only, via monkeypatch) to make flaky_call take its success branch, or its hang
branch where the attempt cut-off is under test. flaky_call itself is untouched."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from orchestration import flaky
from orchestration.metrics import ActivityCounter
from orchestration.order import business
from orchestration.order.activities import OrderActivities
from orchestration.records import BusinessRuleViolation
from orchestration.shipping import business as shipping_business
from orchestration.shipping.activities import ShippingActivities
from orchestration.database import connections_in_use
from orchestration.failure_log import FailedAttemptLog, step_key_of
from orchestration.models import (
    CANCELLED,
    DISPATCH_DONE,
    DISPATCH_STARTED,
    DISPATCH_WITHDRAWN,
    SHIPPED,
    Address,
    ChargePaymentInput,
    Item,
    OrderRef,
    ShippingStepInput,
)
from orchestration.tables import Event, Order, Payment
from tests.conftest import POSTGRES_PORT, free_port, migrate

REPO = Path(__file__).resolve().parent.parent

HOME = Address(line1="1 Main St", city="Springfield", postal_code="12345", country="US")


@pytest.fixture
def flaky_succeeds(monkeypatch):
    monkeypatch.setattr(flaky.random, "random", lambda: 0.9)


def activity_environment(order_id: str) -> ActivityEnvironment:
    """An activity context whose ids are unique to the order, as in a real run."""
    env = ActivityEnvironment()
    # Scheduled now: the attempt checks its step's budget (scheduled time + schedule-to-close).
    env.info = dataclasses.replace(
        env.info, workflow_id=f"order-{order_id}", scheduled_time=datetime.now(timezone.utc)
    )
    return env


async def events_of(order_id: str) -> list[str]:
    rows = await Event.select(Event.type).where(Event.order_id == order_id).order_by(Event.id)
    return [row["type"] for row in rows]


async def received_order(order_id: str) -> None:
    await business.order_received(order_id, f"pay-{order_id}", [Item("ABC", 2)], HOME)


async def test_receiving_twice_keeps_one_order_and_one_event(database, flaky_succeeds, order_id):
    await received_order(order_id)
    await received_order(order_id)
    assert await Order.count().where(Order.id == order_id) == 1
    assert await events_of(order_id) == ["order_received"]
    row = await Order.select().where(Order.id == order_id).first().output(load_json=True)
    assert row["items_json"] == [{"sku": "ABC", "qty": 2}] and row["address_json"]["city"] == HOME.city
    assert row["started_at"] is not None and row["finished_at"] is None
    [event] = await Event.select(Event.payload_json).where(Event.order_id == order_id).output(load_json=True)
    assert event["payload_json"]["items"] == [{"sku": "ABC", "qty": 2}]


async def test_charging_twice_charges_once_and_reports_the_duplicate(database, flaky_succeeds, order_id):
    await received_order(order_id)
    await business.order_validated(order_id)
    first = await business.payment_charged(order_id, f"pay-{order_id}")
    second = await business.payment_charged(order_id, f"pay-{order_id}")
    assert first == {"status": "charged", "amount": 2, "already_processed": False}
    assert second == {"status": "charged", "amount": 2, "already_processed": True}
    assert await Payment.count().where(Payment.order_id == order_id) == 1
    assert (await events_of(order_id)).count("payment_charged") == 1


async def test_a_charge_or_refund_on_record_is_never_sent_to_the_provider_again(
    database, monkeypatch, order_id
):
    """A step re-run (a crash, a lost answer, a local activity replayed) must not move money
    twice: with the payment on record, flaky_call, the provider, is not called at all. Here it
    would raise at once (random.random pinned to its failure branch, in this test only)."""
    monkeypatch.setattr(flaky.random, "random", lambda: 0.9)
    await received_order(order_id)
    await business.payment_charged(order_id, f"pay-{order_id}")
    monkeypatch.setattr(flaky.random, "random", lambda: 0.1)
    again = await business.payment_charged(order_id, f"pay-{order_id}")
    assert again == {"status": "charged", "amount": 2, "already_processed": True}
    monkeypatch.setattr(flaky.random, "random", lambda: 0.9)
    await business.payment_refunded(order_id, f"pay-{order_id}", "cancelled")
    monkeypatch.setattr(flaky.random, "random", lambda: 0.1)
    assert (await business.payment_refunded(order_id, f"pay-{order_id}", "cancelled"))["status"] == "refunded"
    assert (await events_of(order_id)).count("payment_refunded") == 1


async def test_goods_on_record_are_never_sent_to_the_carrier_again(database, monkeypatch, order_id):
    """A shipping attempt run again after its worker died mid-task (or a later attempt) must not
    send the goods twice: with the dispatch on record, flaky_call, the carrier, is not called.
    Here it would raise at once (random.random pinned to its failure branch, in this test only)."""
    monkeypatch.setattr(flaky.random, "random", lambda: 0.9)
    await received_order(order_id)
    await business.order_validated(order_id)
    await business.payment_charged(order_id, f"pay-{order_id}")
    assert not await shipping_business.dispatched_on_record(order_id)
    assert await shipping_business.carrier_dispatched(order_id, 1, HOME) == "Dispatched"
    assert await shipping_business.dispatched_on_record(order_id)
    monkeypatch.setattr(flaky.random, "random", lambda: 0.1)
    assert await shipping_business.carrier_dispatched(order_id, 2, HOME) == "Dispatched"
    assert (await events_of(order_id)).count("carrier_dispatched") == 1


async def test_a_closed_order_is_neither_charged_nor_dispatched(database, monkeypatch, order_id):
    """A worker that stalled past its workflow task timeout wakes and runs its stale copy of the
    workflow on, while the order was taken over and cancelled elsewhere: the fault test's stalls
    found goods dispatched for a cancelled order that way. The steps that move money or goods
    refuse an order already closed, before they call out (flaky_call pinned to its failure
    branch: called, it would raise RuntimeError)."""
    monkeypatch.setattr(flaky.random, "random", lambda: 0.9)
    await received_order(order_id)
    await business.close_order(order_id, CANCELLED, "customer called", f"pay-{order_id}", [Item("ABC", 2)])
    monkeypatch.setattr(flaky.random, "random", lambda: 0.1)
    with pytest.raises(BusinessRuleViolation, match="already cancelled; its payment is not charged"):
        await business.payment_charged(order_id, f"pay-{order_id}")
    with pytest.raises(BusinessRuleViolation, match="already cancelled; its goods are not dispatched"):
        await shipping_business.carrier_dispatched(order_id, 1, HOME)
    assert await Payment.count().where(Payment.order_id == order_id) == 0
    assert "carrier_dispatched" not in await events_of(order_id)


async def test_a_cancel_and_a_dispatch_claim_one_decision_and_the_first_stands(database, monkeypatch, order_id):
    """The carrier is called only under the order's dispatch decision, which a cancel may claim
    first: then no dispatch attempt calls the carrier, a stalled worker's stale one included.
    A dispatch that claimed it first makes a later cancel find it started (flaky_call pinned:
    to success to set the order up, then to failure, so that a call to the carrier raises
    RuntimeError)."""
    monkeypatch.setattr(flaky.random, "random", lambda: 0.9)
    withdrawn, started = f"{order_id}-w", f"{order_id}-s"
    for order in (withdrawn, started):
        await received_order(order)
        await business.order_validated(order)
        await business.payment_charged(order, f"pay-{order}")
    monkeypatch.setattr(flaky.random, "random", lambda: 0.1)

    assert await shipping_business.dispatch_withdrawn(withdrawn, 1) == DISPATCH_WITHDRAWN
    with pytest.raises(BusinessRuleViolation, match="withdrawn by a cancel; its goods are not dispatched"):
        await shipping_business.carrier_dispatched(withdrawn, 1, HOME)
    assert await shipping_business.dispatch_withdrawn(withdrawn, 1) == DISPATCH_WITHDRAWN

    with pytest.raises(RuntimeError, match="Forced failure"):  # claimed, then the carrier call failed
        await shipping_business.carrier_dispatched(started, 1, HOME)
    assert await shipping_business.dispatch_withdrawn(started, 1) == DISPATCH_STARTED
    monkeypatch.setattr(flaky.random, "random", lambda: 0.9)
    assert await shipping_business.carrier_dispatched(started, 2, HOME) == "Dispatched"
    assert await shipping_business.dispatch_withdrawn(started, 2) == DISPATCH_DONE
    assert "carrier_dispatched" not in await events_of(withdrawn)
    assert (await events_of(started)).count("carrier_dispatched") == 1


async def test_a_payment_id_cannot_pay_for_two_orders(database, flaky_succeeds, order_id):
    other = f"{order_id}-other"
    await received_order(order_id)
    await received_order(other)
    await business.payment_charged(order_id, "shared-payment")
    with pytest.raises(BusinessRuleViolation, match="already belongs to order"):
        await business.payment_charged(other, "shared-payment")


async def test_refund_happens_once_and_only_for_a_charge(database, flaky_succeeds, order_id):
    await received_order(order_id)
    assert (await business.payment_refunded(order_id, f"pay-{order_id}", "cancelled"))["status"] == "not_charged"
    await business.payment_charged(order_id, f"pay-{order_id}")
    assert (await business.payment_refunded(order_id, f"pay-{order_id}", "cancelled"))["status"] == "refunded"
    assert (await business.payment_refunded(order_id, f"pay-{order_id}", "cancelled"))["status"] == "refunded"
    payment = await Payment.select().where(Payment.order_id == order_id).first()
    assert payment["status"] == "refunded" and payment["refunded_at"] is not None
    assert (await events_of(order_id)).count("payment_refunded") == 1


async def test_a_closed_order_is_not_reopened_by_a_late_retry(database, flaky_succeeds, order_id):
    await business.close_order(order_id, CANCELLED, "review timed out", f"pay-{order_id}", [Item("ABC", 1)])
    await received_order(order_id)  # a receive attempt that was still in flight
    await business.order_validated(order_id)
    row = await Order.select().where(Order.id == order_id).first()
    assert row["state"] == CANCELLED and row["reason"] == "review timed out"
    assert await events_of(order_id) == ["order_cancelled"]


async def test_a_shipped_order_stays_shipped(database, flaky_succeeds, order_id):
    await received_order(order_id)
    await business.order_validated(order_id)
    await business.payment_charged(order_id, f"pay-{order_id}")
    await shipping_business.package_prepared(order_id, 1)
    await shipping_business.carrier_dispatched(order_id, 1, HOME)
    await business.order_shipped(order_id)
    await business.order_shipped(order_id)
    await business.close_order(order_id, CANCELLED, "too late", f"pay-{order_id}", [])
    row = await Order.select().where(Order.id == order_id).first()
    assert row["state"] == SHIPPED and row["finished_at"] is not None
    assert await events_of(order_id) == [
        "order_received", "order_validated", "payment_charged", "package_prepared",
        "dispatch_started", "carrier_dispatched", "order_shipped",
    ]


async def test_address_versions_are_recorded_once_each(database, flaky_succeeds, order_id):
    office = Address(line1="9 Office Park", city="Shelbyville", postal_code="54321", country="US")
    await received_order(order_id)
    await business.record_address(order_id, office, 1)
    await business.record_address(order_id, office, 1)
    row = await Order.select(Order.address_json).where(Order.id == order_id).first().output(load_json=True)
    assert row["address_json"]["city"] == "Shelbyville"
    assert (await events_of(order_id)).count("address_updated") == 1


async def test_order_without_items_is_rejected_for_good(database, flaky_succeeds, order_id):
    await business.order_received(order_id, f"pay-{order_id}", [], HOME)
    activities = OrderActivities(attempt_timeout=1.0)
    with pytest.raises(ApplicationError) as raised:
        await activity_environment(order_id).run(activities.validate_order, OrderRef(order_id))
    assert raised.value.non_retryable and "No items" in raised.value.message


async def test_a_hung_attempt_is_cut_off_at_its_deadline(database, monkeypatch, order_id):
    """random.random is pinned to flaky_call's hang branch (300 s sleep) for this test only."""
    monkeypatch.setattr(flaky.random, "random", lambda: 0.9)
    await business.order_received(order_id, f"pay-{order_id}", [Item("ABC", 1)], HOME)
    monkeypatch.setattr(flaky.random, "random", lambda: 0.5)
    counter = ActivityCounter()
    activities = OrderActivities(attempt_timeout=0.1, counter=counter)
    started = time.monotonic()
    with pytest.raises(ApplicationError, match="timed out after 0.1s") as raised:
        await activity_environment(order_id).run(activities.charge_payment, ChargePaymentInput(order_id, f"pay-{order_id}"))
    assert time.monotonic() - started < 1.0
    assert raised.value.type == "AttemptTimedOut" and not raised.value.non_retryable
    assert counter.running == 0
    assert await Payment.count().where(Payment.order_id == order_id) == 0
    # The failed attempt's record is written behind the attempt (orchestration/failure_log.py).
    await activities.failure_log.written()
    assert "attempt_failed" in await events_of(order_id)


async def test_failed_attempts_queued_together_are_all_recorded_once(database, order_id):
    """Records added while nothing awaits go out in one write; a record added twice (the same
    attempt) is stored once; written() returns only once they are all in the table."""
    log = FailedAttemptLog()
    for attempt in range(1, 41):
        log.add(order_id, f"wf-{order_id}", "1", "validate_order", attempt, "boom")
    log.add(order_id, f"wf-{order_id}", "1", "validate_order", 1, "boom")
    await log.written()
    assert (await events_of(order_id)).count("attempt_failed") == 40
    # Records added while a write runs go into the next one, and written() waits for that too.
    log.add(order_id, f"wf-{order_id}", "2", "charge_payment", 1, "boom")
    await asyncio.sleep(0)
    log.add(order_id, f"wf-{order_id}", "2", "charge_payment", 2, "boom")
    await log.written()
    assert (await events_of(order_id)).count("attempt_failed") == 42


async def test_a_step_finds_its_earlier_failures_in_memory_only_when_it_saw_them_all(database, order_id):
    log = FailedAttemptLog()
    for attempt in (1, 2, 2):  # attempt 2 ran twice (its workflow task was lost)
        log.add(order_id, f"wf-{order_id}", "1", "validate_order", attempt, f"boom {attempt}")
    earlier = log.take_earlier_failures(step_key_of(f"wf-{order_id}", "1"), 3)
    assert [(e.step, e.attempt, e.message) for e in earlier] == [
        ("validate_order", 1, "boom 1"), ("validate_order", 2, "boom 2"),
    ]
    assert log.take_earlier_failures(step_key_of(f"wf-{order_id}", "1"), 3) is None  # taken once
    log.add(order_id, f"wf-{order_id}", "2", "validate_order", 2, "boom")  # 1 ran elsewhere
    assert log.take_earlier_failures(step_key_of(f"wf-{order_id}", "2"), 3) is None
    await log.written()


async def test_a_failed_write_of_attempt_records_is_logged_and_the_next_still_goes_out(
    database, order_id, caplog
):
    log = FailedAttemptLog()
    # A record the table refuses (the key is longer than its column) fails the whole write.
    log.add(order_id, "x" * 300, "1", "validate_order", 1, "boom")
    await log.written()
    [warning] = [r for r in caplog.records if getattr(r, "event", None) == "failure_not_recorded"]
    assert warning.records == 1 and order_id in warning.order_ids
    log.add(order_id, f"wf-{order_id}", "1", "validate_order", 1, "boom")
    await log.written()
    assert await events_of(order_id) == ["attempt_failed"]


async def wait_for_connections_returned(seconds: float = 2.0) -> int:
    give_up_at = time.monotonic() + seconds
    while connections_in_use() and time.monotonic() < give_up_at:
        await asyncio.sleep(0.02)
    return connections_in_use()


async def test_a_cut_off_during_the_write_waits_for_it_and_loses_no_connection(
    database, flaky_succeeds, order_id
):
    """flaky_call succeeds at once here, so a one-millisecond cut-off falls inside the payment's
    database write. The outside call did happen, so the attempt waits for its record instead of
    abandoning it: every attempt succeeds, the charge is written once, and no pooled connection
    is lost (a transaction abandoned halfway would keep its connection forever)."""
    cut_off = 0.001
    activities = OrderActivities(attempt_timeout=cut_off)
    # Ten orders, each charged for the first time (a repeat is answered from the record, before
    # any outside call, so it has no write to cut into).
    orders = [f"{order_id}-{n}" for n in range(10)]
    for order in orders:
        await received_order(order)
        await business.order_validated(order)
        started = time.monotonic()
        result = await activity_environment(order).run(
            activities.charge_payment, ChargePaymentInput(order, f"pay-{order}")
        )
        # The write outlasted the cut-off, so the cut-off fired during it and was waited out.
        assert time.monotonic() - started > cut_off
        assert not result.already_processed
    assert await wait_for_connections_returned() == 0
    for order in orders:
        payments = await Payment.select(Payment.status).where(Payment.order_id == order)
        assert payments == [{"status": "charged"}]
        assert (await events_of(order)).count("payment_charged") == 1
    order_id = orders[0]
    # A call that returns its own value after the write gives that value, not the write's.
    prepared = await activity_environment(order_id).run(
        ShippingActivities(attempt_timeout=cut_off).prepare_package, ShippingStepInput(order_id, 1, HOME)
    )
    assert prepared.detail == "Package ready"
    assert "attempt_failed" not in await events_of(order_id)


async def test_migrations_build_an_empty_database_and_rerun_as_a_no_op(postgres):
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{POSTGRES_PORT}/postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    url = f"postgresql://postgres@127.0.0.1:{POSTGRES_PORT}/{name}"
    try:
        first = migrate(url)
        assert "ok!" in first.stdout
        fresh = await asyncpg.connect(url)
        tables = {r["tablename"] for r in await fresh.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        schema_before = await fresh.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
        )
        second = migrate(url)
        schema_after = await fresh.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
        )
        await fresh.close()
        assert {"orders", "payments", "events"} <= tables
        assert "No migrations need to be run" in second.stdout
        assert schema_before == schema_after
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


def run_migrate_script(url: str, *args: str) -> tuple[int, list[dict]]:
    """scripts/migrate.py as the Procfile's web line runs it: its status and its JSON log lines."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "migrate.py"), *args],
        cwd=REPO, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True, timeout=120,
    )
    return result.returncode, [json.loads(line) for line in (result.stdout + result.stderr).splitlines()]


async def test_the_migrate_script_logs_json_lines_and_says_when_the_database_never_answers(postgres):
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{POSTGRES_PORT}/postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        status, lines = run_migrate_script(f"postgresql://postgres@127.0.0.1:{POSTGRES_PORT}/{name}")
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
    assert status == 0, lines
    events = [line.get("event") for line in lines]
    assert events[0] == "migrations_started" and events[-1] == "migrations_applied", events
    assert any(line["message"].endswith("ok! ✔️") for line in lines if line.get("event") == "migration_output")

    status, lines = run_migrate_script(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere", "--wait-seconds", "1")
    assert status == 1
    assert lines[-1]["event"] == "migration_failed" and "did not answer within 1 s" in lines[-1]["message"], lines
