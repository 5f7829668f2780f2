"""The three tables behind every order. Migrations in piccolo_migrations/ create them."""

from piccolo.columns import JSONB, Integer, Serial, Text, Timestamptz, Varchar
from piccolo.table import Table


class Order(Table, tablename="orders"):
    id = Varchar(length=64, primary_key=True)
    state = Varchar(length=32, index=True)
    payment_id = Varchar(length=64)
    items_json = JSONB()
    address_json = JSONB(null=True, default=None)
    # Why an order was cancelled or failed; empty while it is in flight or shipped.
    reason = Text(default="")
    created_at = Timestamptz(index=True)
    updated_at = Timestamptz()
    # When its workflow started and when it reached shipped, cancelled or failed: the board's
    # overview reads the promise's figures (start to end, within 15 s) from these.
    started_at = Timestamptz(null=True, default=None)
    finished_at = Timestamptz(null=True, default=None, index=True)


class Payment(Table, tablename="payments"):
    # The caller's payment id is the idempotency key: a second charge with it is a no-op.
    payment_id = Varchar(length=64, primary_key=True)
    order_id = Varchar(length=64, index=True)
    status = Varchar(length=16)
    amount = Integer()
    created_at = Timestamptz()
    refunded_at = Timestamptz(null=True, default=None)


class Event(Table, tablename="events"):
    id = Serial(primary_key=True)
    # One key per fact (for example "A1:payment_charged"), so a retried activity cannot record
    # the same fact twice.
    event_key = Varchar(length=200, unique=True)
    order_id = Varchar(length=64, index=True)
    type = Varchar(length=48)
    payload_json = JSONB()
    ts = Timestamptz()
