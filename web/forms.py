"""The board's HTML forms, turned into the JSON API's request structs (web/schemas.py).

Each form field is converted to the very type its JSON field declares, so both front ends
enforce the same limits and patterns. Unlike a JSON body, which is rejected at its first problem,
a form gets a message next to every field that is wrong.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, TypeVar

import msgspec

from web.errors import reworded
from web.schemas import (
    ALIAS_NAMES,
    AddressBody,
    CancelBody,
    Identifier,
    ItemBody,
    StartOrderBody,
)

S = TypeVar("S", bound=msgspec.Struct)

ADDRESS_PREFIX = "address."
ADDRESS_ALIAS_FIELDS = frozenset(ADDRESS_PREFIX + alias for alias in ALIAS_NAMES)
ITEM_ROWS = 3
"""Item lines the new-order form offers; blank lines are ignored."""

FieldErrors = dict[str, str]


@dataclass
class FormState:
    """What the user typed (to show it again) and the problem of each field, by field name."""

    values: dict[str, str] = field(default_factory=dict)
    errors: FieldErrors = field(default_factory=dict)


def fresh_form() -> FormState:
    """The new-order form with a new order id and payment id filled in."""
    order_id = f"ord-{uuid.uuid4().hex[:8]}"
    return FormState(
        values={
            "order_id": order_id,
            "payment_id": f"pay-{order_id}",
            "items.0.sku": "ABC",
            "items.0.qty": "1",
        }
    )


def _problem(err: msgspec.ValidationError) -> str:
    # msgspec appends the location ("- at `$.qty`"); the form shows the message at the field.
    return reworded(str(err).split(" - at `", 1)[0])


def _convert(raw: str, target: Any, name: str, errors: FieldErrors) -> Any:
    try:
        return msgspec.convert(raw, target, strict=False)
    except msgspec.ValidationError as err:
        errors[name] = _problem(err)
        return None


def _required(form: Mapping[str, str], name: str, target: Any, errors: FieldErrors) -> Any:
    raw = form.get(name, "").strip()
    if not raw:
        errors[name] = "is required"
        return None
    return _convert(raw, target, name, errors)


def struct_from_form(
    struct_type: type[S], form: Mapping[str, str], prefix: str = ""
) -> tuple[Optional[S], FieldErrors]:
    """A flat struct from the form fields `<prefix><field name>`; a blank optional field takes
    its default."""
    values: dict[str, Any] = {}
    errors: FieldErrors = {}
    for struct_field in msgspec.structs.fields(struct_type):
        name = prefix + struct_field.name
        raw = form.get(name, "")
        if raw == "":
            if struct_field.required:
                errors[name] = "is required"
            continue
        values[struct_field.name] = _convert(raw, struct_field.type, name, errors)
    if errors:
        return None, errors
    return msgspec.convert(values, struct_type), {}


def _is_blank(form: Mapping[str, str], prefix: str, struct_type: type[msgspec.Struct]) -> bool:
    return all(
        not form.get(prefix + struct_field.name, "").strip()
        for struct_field in msgspec.structs.fields(struct_type)
    )


def address_from_form(form: Mapping[str, str]) -> tuple[Optional[AddressBody], FieldErrors]:
    """The address fields of a form. A form has the canonical fields only (the aliases are for
    JSON clients), so its street line, which AddressBody cannot require, is `line1`."""
    canonical = {name: value for name, value in form.items() if name not in ADDRESS_ALIAS_FIELDS}
    address, errors = struct_from_form(AddressBody, canonical, ADDRESS_PREFIX)
    if not canonical.get(ADDRESS_PREFIX + "line1"):
        errors[ADDRESS_PREFIX + "line1"] = "is required"
    return (None if errors else address), errors


def cancel_from_form(form: Mapping[str, str]) -> tuple[Optional[CancelBody], FieldErrors]:
    return struct_from_form(CancelBody, form)


@dataclass
class NewOrder:
    order_id: str
    body: StartOrderBody


def new_order_from_form(form: Mapping[str, str]) -> tuple[Optional[NewOrder], FieldErrors]:
    """The new-order form: order id, payment id, up to ITEM_ROWS item lines, and an address
    that may be left blank altogether (the order then waits for one)."""
    errors: FieldErrors = {}
    order_id = _required(form, "order_id", Identifier, errors)
    payment_id = _required(form, "payment_id", Identifier, errors)
    items = []
    for row in range(ITEM_ROWS):
        prefix = f"items.{row}."
        if _is_blank(form, prefix, ItemBody):
            continue
        item, item_errors = struct_from_form(ItemBody, form, prefix)
        errors.update(item_errors)
        items.append(item)
    if not items:
        errors["items.0.sku"] = "is required: an order needs at least one item"
    address = None
    if not _is_blank(form, ADDRESS_PREFIX, AddressBody):
        address, address_errors = address_from_form(form)
        errors.update(address_errors)
    if errors:
        return None, errors
    # Converted, not constructed, so that the body's own limits (such as the item count) apply.
    body = msgspec.convert(
        {"payment_id": payment_id, "items": items, "address": address}, StartOrderBody
    )
    return NewOrder(order_id=order_id, body=body), {}
